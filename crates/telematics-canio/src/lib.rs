//! CAN I/O shells: SocketCAN (tokio), candump log replay and an in-process bus behind one
//! [`CanSource`] / [`CanSink`] pair of traits.
//!
//! These are thin: all decoding lives in the sans-IO `telematics-can` crate.

pub mod bus;
pub mod replay;
pub mod sim;
pub mod socket;
pub mod tcpbus;

use futures::future::BoxFuture;

pub use bus::{BusNode, BusSender, BusStats, CanBus};
pub use replay::{ReplayMode, ReplaySource};
pub use sim::{run_body_controller, run_body_controller_with};
pub use tcpbus::{HubOptions, HubStats, TcpBusClient, TcpBusHub, TcpBusPort, TcpBusSender};
pub use telematics_can::{CanFrame, CanId};

/// The crate's single error type; each variant has a stable [`code`](CanIoError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanIoError {
    /// Operating-system I/O error (socket, file).
    #[error("CAN I/O error: {0}")]
    Io(String),
    /// The bus or socket is closed.
    #[error("CAN channel closed")]
    Closed,
    /// The frame cannot be represented (bad id, payload too long for the frame type).
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// A replay speed factor that is not a positive finite number.
    #[error("invalid replay speed {0}")]
    InvalidSpeed(String),
}

impl CanIoError {
    /// Stable machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CanIoError::Io(_) => "can_io",
            CanIoError::Closed => "can_closed",
            CanIoError::InvalidFrame(_) => "can_invalid_frame",
            CanIoError::InvalidSpeed(_) => "can_invalid_speed",
        }
    }
}

impl From<std::io::Error> for CanIoError {
    fn from(e: std::io::Error) -> Self {
        CanIoError::Io(e.to_string())
    }
}

/// A source of received CAN frames.
pub trait CanSource: Send {
    /// Wait for the next frame. `Ok(None)` means the source ended (e.g. a replayed log is done).
    /// Every returned frame carries `timestamp_us` (kernel, log or receive time).
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<CanFrame>, CanIoError>>;

    /// Waits for the next frame, then appends it and every frame already queued (up to `max`
    /// in all) to `out`: one wakeup reads a whole burst (on SocketCAN, non-blocking reads
    /// until `EAGAIN`). `Ok(false)` when the source ended with nothing read. An error after
    /// the first frame ends the batch; it is reported by the next call.
    ///
    /// The default polls [`recv`](Self::recv) once more per queued frame, which is right for
    /// sources whose `recv` is cancel-safe; a source whose `recv` is not overrides this.
    fn recv_batch<'a>(
        &'a mut self,
        out: &'a mut Vec<CanFrame>,
        max: usize,
    ) -> BoxFuture<'a, Result<bool, CanIoError>> {
        Box::pin(async move {
            match self.recv().await? {
                Some(f) => out.push(f),
                None => return Ok(false),
            }
            let mut n = 1;
            while n < max {
                match futures::FutureExt::now_or_never(self.recv()) {
                    Some(Ok(Some(f))) => {
                        out.push(f);
                        n += 1;
                    }
                    _ => break,
                }
            }
            Ok(true)
        })
    }
}

/// Something frames can be sent to (the actuator's output, a simulator's reply path).
pub trait CanSink: Send + Sync {
    /// Send one frame.
    fn send<'a>(&'a self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>>;
}

/// Microseconds since the Unix epoch for a `SystemTime` (0 before the epoch).
pub(crate) fn unix_us(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
