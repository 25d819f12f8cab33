//! Replay a can-utils `candump -L` log as a [`CanSource`], in real time (honouring the gaps
//! between frames, scaled by a speed factor) or as fast as possible. Garbage lines are skipped
//! and counted (see [`ReplaySource::garbage_count`]).
//!
//! Timestamps: a delivered frame carries its *log time* moved to the replay's clock: the first
//! frame is stamped with the wall time it is delivered at, every later one with that plus its
//! log offset from the first (scaled by the speed in real time). So a signal's age is what
//! the log says it is, however late the frame is delivered.

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
    /// (delivery instant, wall time µs, log time µs) of the first frame.
    origin: Option<(Instant, u64, u64)>,
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
            let (start, wall0, first) = *self.origin.get_or_insert_with(|| {
                (
                    Instant::now(),
                    crate::unix_us(std::time::SystemTime::now()),
                    lf.timestamp_us,
                )
            });
            let speed = match self.mode {
                ReplayMode::RealTime { speed } => speed,
                ReplayMode::AsFastAsPossible => 1.0,
            };
            // timestamps going backwards replay immediately (and keep the first frame's time)
            let gap_us = (lf.timestamp_us.saturating_sub(first) as f64 / speed)
                .min(u64::MAX as f64 / 4.0) as u64;
            if let ReplayMode::RealTime { .. } = self.mode {
                tokio::time::sleep_until(start + Duration::from_micros(gap_us)).await;
            }
            self.delivered += 1;
            let mut frame = lf.frame;
            frame.timestamp_us = Some(wall0.saturating_add(gap_us));
            return Some(frame);
        }
    }
}

impl CanSource for ReplaySource {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<CanFrame>, CanIoError>> {
        async move { Ok(self.next_frame().await) }.boxed()
    }

    /// One frame per call: `next_frame` sleeps until the frame's time after taking it from
    /// the log, so it must not be polled once and dropped.
    fn recv_batch<'a>(
        &'a mut self,
        out: &'a mut Vec<CanFrame>,
        _max: usize,
    ) -> BoxFuture<'a, Result<bool, CanIoError>> {
        async move {
            match self.next_frame().await {
                Some(f) => {
                    out.push(f);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        .boxed()
    }
}
