//! The CAN reader task: connects (and reconnects with back-off) through the [`CanConnector`],
//! forwards received frames to the core over a bounded channel (drops counted) and publishes
//! the current sink for actuation frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use telematics_can::CanFrame;
use telematics_canio::{CanIoError, CanSink, CanSource};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Health;

/// Capacity of the frame channel between the CAN reader and the core; beyond it frames are
/// dropped and counted (bounded memory under a bus flood).
pub const FRAME_QUEUE: usize = 4096;

/// A connected pair of CAN endpoints.
pub struct CanPorts {
    /// Received frames.
    pub source: Box<dyn CanSource>,
    /// Where actuation frames go.
    pub sink: Arc<dyn CanSink>,
}

/// Opens (or re-opens after an error) the CAN endpoints.
pub type CanConnector =
    Arc<dyn Fn() -> BoxFuture<'static, Result<CanPorts, CanIoError>> + Send + Sync>;

/// The sink actuation frames go to while connected.
pub type SinkSlot = watch::Receiver<Option<Arc<dyn CanSink>>>;

/// A sink that drops frames (candump replay has no body controller); counts them.
#[derive(Debug, Default)]
pub struct DiscardSink {
    /// Frames dropped.
    pub dropped: AtomicU64,
}

impl CanSink for DiscardSink {
    fn send<'a>(&'a self, _frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Runs until `shutdown`: frames into `frames`, the connected sink into `sink`.
pub async fn can_reader(
    connector: CanConnector,
    frames: mpsc::Sender<CanFrame>,
    sink: watch::Sender<Option<Arc<dyn CanSink>>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ports = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connector() => r,
        };
        let mut ports = match ports {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %e, retry_ms = backoff.as_millis() as u64, "CAN connect failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        health.can_connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("CAN connected");
        let _ = sink.send(Some(ports.sink.clone()));
        loop {
            let r = tokio::select! {
                () = shutdown.cancelled() => return,
                r = ports.source.recv() => r,
            };
            match r {
                Ok(Some(f)) => {
                    health.frames.fetch_add(1, Ordering::Relaxed);
                    if frames.try_send(f).is_err() {
                        health.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => {
                    tracing::info!("CAN source ended (replay finished); the bus is now silent");
                    shutdown.cancelled().await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(code = e.code(), error = %e, "CAN receive failed; reconnecting");
                    let _ = sink.send(None);
                    break;
                }
            }
        }
    }
}
