//! The CAN reader task of one bus: connects (and reconnects with back-off) through its
//! [`CanConnector`], reads frames in batches (every frame queued per wakeup), forwards them
//! tagged with the bus to the core over a bounded channel shared by all buses (drops counted)
//! and publishes the bus's current sink for actuation frames. Frames with an id the vehicle
//! does not read on this bus are counted as received and go no further (the user-space twin
//! of SocketCAN's kernel filter, for the TCP bus and replays).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use telematics_can::{CanFrame, CanId};
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
    /// The ids the vehicle reads on this bus; other frames are not handed to the core.
    /// `None`: every frame is.
    pub accept: Option<HashSet<CanId>>,
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
        accept,
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
                        if accept.as_ref().is_some_and(|a| !a.contains(&f.can_id())) {
                            continue;
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use telematics_canio::CanBus;

    /// Frames of ids the vehicle does not read on the bus are counted as received and never
    /// reach the core; the rest arrive tagged with their bus, in order.
    #[tokio::test]
    async fn frames_the_vehicle_does_not_read_stop_at_the_reader() {
        let bus = CanBus::new(64);
        let car = bus.node();
        let node = std::sync::Mutex::new(Some(bus.node()));
        let node = Arc::new(node);
        let connector: CanConnector = Arc::new(move || {
            let node = node.lock().ok().and_then(|mut n| n.take());
            Box::pin(async move {
                let node = node.ok_or(CanIoError::Closed)?;
                let sink = Arc::new(node.sender());
                Ok(CanPorts {
                    source: Box::new(node),
                    sink,
                })
            })
        });
        let health = Arc::new(Health::with_buses(&["body".into(), "chassis".into()]));
        let (tx, mut rx) = mpsc::channel(16);
        let (sink, mut slot) = watch::channel(None);
        let stop = CancellationToken::new();
        let mapped = CanId::standard(0x101);
        let task = tokio::spawn(can_reader(
            BusReader {
                bus: BusId(1),
                name: "chassis".into(),
                connector,
                sink,
                accept: Some([mapped].into_iter().collect()),
            },
            tx,
            health.clone(),
            stop.clone(),
        ));
        slot.wait_for(Option::is_some).await.expect("connected");
        for id in [0x101u16, 0x300, 0x101, 0x7FF] {
            car.sender()
                .send_frame(&CanFrame::new(CanId::standard(id), &[1]))
                .expect("send");
        }
        let mut got = Vec::new();
        while got.len() < 2 {
            let (b, f) = rx.recv().await.expect("frame");
            got.push((b, f.can_id()));
        }
        assert_eq!(got, [(BusId(1), mapped), (BusId(1), mapped)]);
        while health.frames.load(Ordering::Relaxed) < 4 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "unread ids were not handed on");
        let received = health
            .bus_counter(BusId(1))
            .map(|c| c.load(Ordering::Relaxed));
        assert_eq!(received, Some(4));
        assert_eq!(
            health
                .bus_counter(BusId(0))
                .map(|c| c.load(Ordering::Relaxed)),
            Some(0)
        );
        stop.cancel();
        task.await.expect("reader stops");
    }
}
