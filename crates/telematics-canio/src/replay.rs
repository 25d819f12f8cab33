//! Replay a can-utils `candump -L` log as a [`CanSource`], in real time (honouring the gaps
//! between frames, scaled by a speed factor) or as fast as possible. Garbage lines are skipped
//! and counted (see [`ReplaySource::garbage_count`]).

use std::io::Cursor;

use futures::FutureExt;
use futures::future::BoxFuture;
use telematics_can::{CandumpReader, GarbageLine};
use tokio::time::{Duration, Instant};

use crate::{CanFrame, CanIoError, CanSource};

/// Pacing of a replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayMode {
    /// Deliver frames immediately.
    AsFastAsPossible,
    /// Honour log timestamps; `speed` 2.0 plays twice as fast.
    RealTime {
        /// Speed factor (> 0).
        speed: f64,
    },
}

/// A candump log replayed as a frame source.
pub struct ReplaySource {
    reader: CandumpReader<Cursor<Vec<u8>>>,
    mode: ReplayMode,
    origin: Option<(Instant, u64)>,
    iface: Option<String>,
    delivered: u64,
}

impl std::fmt::Debug for ReplaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaySource")
            .field("mode", &self.mode)
            .field("delivered", &self.delivered)
            .field("garbage", &self.reader.garbage_count())
            .finish()
    }
}

impl ReplaySource {
    /// Replay log text.
    pub fn from_text(
        text: impl Into<String>,
        mode: ReplayMode,
    ) -> Result<ReplaySource, CanIoError> {
        if let ReplayMode::RealTime { speed } = mode
            && !(speed.is_finite() && speed > 0.0)
        {
            return Err(CanIoError::InvalidSpeed(speed.to_string()));
        }
        let bytes: String = text.into();
        Ok(ReplaySource {
            reader: CandumpReader::new(Cursor::new(bytes.into_bytes())),
            mode,
            origin: None,
            iface: None,
            delivered: 0,
        })
    }

    /// Replay a log file (read fully into memory).
    pub async fn open(
        path: impl AsRef<std::path::Path>,
        mode: ReplayMode,
    ) -> Result<ReplaySource, CanIoError> {
        let bytes = tokio::fs::read(path.as_ref()).await?;
        // invalid UTF-8 lines are counted as garbage by the reader
        ReplaySource::from_text(String::from_utf8_lossy(&bytes).into_owned(), mode)
    }

    /// Only deliver frames logged on this interface (others are skipped, not counted as garbage).
    pub fn with_iface(mut self, iface: &str) -> Self {
        self.iface = Some(iface.to_string());
        self
    }

    /// Garbage lines skipped so far.
    pub fn garbage_count(&self) -> u64 {
        self.reader.garbage_count()
    }

    /// The first garbage lines with their line numbers.
    pub fn garbage(&self) -> &[GarbageLine] {
        self.reader.garbage()
    }

    /// Frames delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Next frame, paced according to the mode; `None` at the end of the log.
    pub async fn next_frame(&mut self) -> Option<CanFrame> {
        loop {
            let lf = self.reader.next()?;
            if self.iface.as_deref().is_some_and(|i| i != lf.iface) {
                continue;
            }
            if let ReplayMode::RealTime { speed } = self.mode {
                let (start, first) = *self.origin.get_or_insert((Instant::now(), lf.timestamp_us));
                // timestamps going backwards replay immediately
                let gap_us = lf.timestamp_us.saturating_sub(first) as f64 / speed;
                let target =
                    start + Duration::from_micros(gap_us.min(u64::MAX as f64 / 2.0) as u64);
                tokio::time::sleep_until(target).await;
            }
            self.delivered += 1;
            return Some(lf.frame);
        }
    }
}

impl CanSource for ReplaySource {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<CanFrame>, CanIoError>> {
        async move { Ok(self.next_frame().await) }.boxed()
    }
}
