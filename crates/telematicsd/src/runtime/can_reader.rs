//! The CAN reader task of one bus: connects (and reconnects with back-off) through its
//! [`CanConnector`], reads frames in batches (every frame queued per wakeup), forwards them
//! tagged with the bus to the core over a bounded channel shared by all buses (drops counted)
//! and publishes the bus's current sink for actuation frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use telematics_can::CanFrame;
use telematics_canio::{CanIoError, CanSink, CanSource};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Health;
use crate::vehicle::BusId;

/// Most frames read per wakeup of a reader.
pub const READ_BATCH: usize = 64;

/// A frame as the reader hands it to the core: the bus it was received on and the frame.
pub type BusFrame = (BusId, CanFrame);

/// Capacity of the frame channel between the CAN readers and the core; beyond it frames are
/// dropped and counted (bounded memory under a bus flood). It also bounds how long a frame
/// can wait: 1024 frames are 128 ms of a saturated 1 Mbit/s bus, well under the shortest
/// maximum ages, so a flood does not turn every signal stale by queueing alone (each signal's
/// age is its frame's own timestamp).
pub const FRAME_QUEUE: usize = 1024;

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

/// One bus for [`can_reader`].
pub struct BusReader {
    /// The bus (index in the configuration).
    pub bus: BusId,
    /// Its name (logs).
    pub name: String,
    /// Opens its endpoints.
    pub connector: CanConnector,
    /// Where its connected sink is published.
    pub sink: watch::Sender<Option<Arc<dyn CanSink>>>,
}

/// Runs until `shutdown`: the bus's frames into `frames`, its connected sink into `sink`.
pub async fn can_reader(
    reader: BusReader,
    frames: mpsc::Sender<BusFrame>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let BusReader {
        bus,
        name,
        connector,
        sink,
    } = reader;
    let received = health.bus_counter(bus);
    let mut batch = Vec::with_capacity(READ_BATCH);
    let mut backoff = Duration::from_millis(200);
    loop {
        let ports = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connector() => r,
        };
        let mut ports = match ports {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(bus = %name, code = e.code(), error = %e, retry_ms = backoff.as_millis() as u64, "CAN connect failed");
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
        tracing::info!(bus = %name, "CAN connected");
        let _ = sink.send(Some(ports.sink.clone()));
        loop {
            batch.clear();
            let r = tokio::select! {
                () = shutdown.cancelled() => return,
                r = ports.source.recv_batch(&mut batch, READ_BATCH) => r,
            };
            match r {
                Ok(true) => {
                    let n = batch.len() as u64;
                    health.frames.fetch_add(n, Ordering::Relaxed);
                    if let Some(c) = received {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                    for f in batch.drain(..) {
                        if frames.try_send((bus, f)).is_err() {
                            health.frames_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(false) => {
                    tracing::info!(bus = %name, "CAN source ended (replay finished); the bus is now silent");
                    shutdown.cancelled().await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(bus = %name, code = e.code(), error = %e, "CAN receive failed; reconnecting");
                    let _ = sink.send(None);
                    break;
                }
            }
        }
    }
}
