//! In-process CAN bus for tests and the demo: every node sees every other node's frames.
//!
//! Built on a bounded `tokio::sync::broadcast` channel: memory is bounded by the capacity. A
//! receiver that falls behind loses the oldest frames; the loss is counted per node and in the
//! bus totals (like a real CAN controller overrunning its receive FIFO).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::{CanFrame, CanIoError, CanSink, CanSource, unix_us};

#[derive(Debug, Clone)]
struct Envelope {
    from: u64,
    frame: CanFrame,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
}

/// Totals for the whole bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BusStats {
    /// Frames put on the bus.
    pub sent: u64,
    /// Frames lost by lagging receivers (summed over nodes).
    pub dropped: u64,
}

/// The bus. Cheap to clone; create nodes with [`CanBus::node`].
#[derive(Debug, Clone)]
pub struct CanBus {
    tx: broadcast::Sender<Arc<Envelope>>,
    counters: Arc<Counters>,
    next_node: Arc<AtomicU64>,
}

impl CanBus {
    /// A bus whose receivers buffer at most `capacity` frames each (minimum 1).
    pub fn new(capacity: usize) -> CanBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        CanBus {
            tx,
            counters: Arc::new(Counters::default()),
            next_node: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Attach a node: it receives frames sent by every *other* node from now on.
    pub fn node(&self) -> BusNode {
        let id = self.next_node.fetch_add(1, Ordering::Relaxed);
        BusNode {
            sender: BusSender {
                id,
                tx: self.tx.clone(),
                counters: self.counters.clone(),
            },
            rx: self.tx.subscribe(),
            dropped: 0,
        }
    }

    /// Totals.
    pub fn stats(&self) -> BusStats {
        BusStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The sending half of a node (cloneable, shareable).
#[derive(Debug, Clone)]
pub struct BusSender {
    id: u64,
    tx: broadcast::Sender<Arc<Envelope>>,
    counters: Arc<Counters>,
}

impl BusSender {
    /// Put a frame on the bus (never blocks; a frame nobody listens to is simply gone, as on a
    /// real bus). Frames without a timestamp get the send time.
    pub fn send_frame(&self, frame: &CanFrame) -> Result<(), CanIoError> {
        validate(frame)?;
        let mut frame = frame.clone();
        if frame.timestamp_us.is_none() {
            frame.timestamp_us = Some(unix_us(std::time::SystemTime::now()));
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Arc::new(Envelope {
            from: self.id,
            frame,
        }));
        Ok(())
    }
}

/// Checks that a frame can be put on a CAN (FD) bus (id range, payload length, no FD RTR).
pub(crate) fn validate(f: &CanFrame) -> Result<(), CanIoError> {
    let max_id = if f.extended { 0x1FFF_FFFF } else { 0x7FF };
    if f.id > max_id {
        return Err(CanIoError::InvalidFrame(format!(
            "id {:#x} out of range",
            f.id
        )));
    }
    let max_len = if f.fd { 64 } else { 8 };
    if f.data.len() > max_len
        || (f.fd && !telematics_can::frame::FD_LENGTHS.contains(&f.data.len()))
    {
        return Err(CanIoError::InvalidFrame(format!(
            "payload length {}",
            f.data.len()
        )));
    }
    if f.remote && f.fd {
        return Err(CanIoError::InvalidFrame(
            "CAN FD has no remote frames".into(),
        ));
    }
    Ok(())
}

/// A node on the bus: receives others' frames, sends its own.
#[derive(Debug)]
pub struct BusNode {
    sender: BusSender,
    rx: broadcast::Receiver<Arc<Envelope>>,
    dropped: u64,
}

impl BusNode {
    /// A cloneable sender for this node (frames it sends are not echoed back to this node).
    pub fn sender(&self) -> BusSender {
        self.sender.clone()
    }

    /// Frames this node lost because it lagged behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Receive the next frame from another node; `Ok(None)` when the bus is gone.
    pub async fn recv_frame(&mut self) -> Result<Option<CanFrame>, CanIoError> {
        loop {
            match self.rx.recv().await {
                Ok(env) if env.from == self.sender.id => continue,
                Ok(env) => return Ok(Some(env.frame.clone())),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped += n;
                    self.sender.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(node = self.sender.id, lost = n, "CAN bus receiver lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// Non-blocking receive: `None` when nothing is queued.
    pub fn try_recv_frame(&mut self) -> Option<CanFrame> {
        loop {
            match self.rx.try_recv() {
                Ok(env) if env.from == self.sender.id => continue,
                Ok(env) => return Some(env.frame.clone()),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.dropped += n;
                    self.sender.counters.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => return None,
            }
        }
    }
}

impl CanSource for BusNode {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<CanFrame>, CanIoError>> {
        self.recv_frame().boxed()
    }
}

impl CanSink for BusSender {
    fn send<'a>(&'a self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        let r = self.send_frame(frame);
        async move { r }.boxed()
    }
}

impl CanSink for BusNode {
    fn send<'a>(&'a self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        self.sender.send(frame)
    }
}
