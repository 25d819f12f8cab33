//! The actuator task: sends the actuation frames the core released (their decision is
//! durable), off the core task, in order, each to the bus it names ([`BusSinks`]: bus name →
//! the sink of that bus while it is connected), repeated as the vehicle profile says, and
//! reports each frame's first write back to the core (`VehicleCore::handle_frame_sent`).

use std::collections::HashMap;
use std::time::Duration;

use telematics_can::CanFrame;
use telematics_exec::Actuate;
use tokio::sync::mpsc;

use super::can_reader::SinkSlot;
use crate::core::FrameId;
use crate::failpoint::{self, Crash};

/// One frame to send.
#[derive(Debug)]
pub struct Actuation {
    /// Its id in the core.
    pub id: FrameId,
    /// The bus it goes to (a name of `[can]`'s buses, as the profile's action says).
    pub bus: String,
    /// The encoded frame.
    pub frame: CanFrame,
    /// What it asks for (logs).
    pub actuate: Actuate,
    /// Its alive counter (logs).
    pub counter: u8,
    /// Times to send it.
    pub count: u32,
    /// Pause between two sends.
    pub interval_ms: u64,
}

/// The outcome of a frame's first write, for the core.
pub type Sent = (FrameId, Result<(), String>);

/// The sink of every bus, by name (each follows its reader's connection).
#[derive(Clone, Default)]
pub struct BusSinks {
    slots: HashMap<String, SinkSlot>,
}

impl std::fmt::Debug for BusSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.slots.keys()).finish()
    }
}

impl BusSinks {
    /// Adds bus `name` with its slot.
    pub fn insert(&mut self, name: &str, slot: SinkSlot) {
        self.slots.insert(name.to_string(), slot);
    }

    /// The connected sink of bus `name`: `Err` says why there is none (no such bus, not
    /// connected).
    pub fn get(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<dyn telematics_canio::CanSink>, &'static str> {
        let slot = self.slots.get(name).ok_or("no such bus")?;
        slot.borrow().clone().ok_or("not connected")
    }
}

/// Sends until `rx` closes. A frame that cannot be sent (unknown bus, not connected, send
/// error, 1 s timeout) is reported `Err`; its command fails `send_failed`. The report follows
/// the frame's first write at once (the core holds what it decided after the frame until
/// then); the profile's repetitions follow it.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Actuation>,
    sinks: BusSinks,
    sent: mpsc::UnboundedSender<Sent>,
) {
    while let Some(a) = rx.recv().await {
        let first = write(&a, &sinks, 0).await;
        let ok = first.is_ok();
        if ok {
            failpoint::hit(Crash::ExecAfterActuationSent);
        }
        if sent.send((a.id, first)).is_err() {
            return;
        }
        if ok {
            for n in 1..a.count {
                tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
                if write(&a, &sinks, n).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Write `n` (0 = the first) of frame `a` to its bus.
async fn write(a: &Actuation, sinks: &BusSinks, n: u32) -> Result<(), String> {
    let s = sinks.get(&a.bus).map_err(|why| {
        tracing::error!(bus = %a.bus, actuate = ?a.actuate, why, n, "actuation not sent");
        format!("bus {}: {why}", a.bus)
    })?;
    match tokio::time::timeout(Duration::from_secs(1), s.send(&a.frame)).await {
        Ok(Ok(())) => {
            tracing::info!(bus = %a.bus, actuate = ?a.actuate, counter = a.counter, n, "actuation sent");
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(bus = %a.bus, code = e.code(), error = %e, n, "actuation send failed");
            Err(format!("{}: {e}", e.code()))
        }
        Err(_) => {
            tracing::error!(bus = %a.bus, n, "actuation send timed out");
            Err("send timed out (1 s)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use telematics_canio::CanSink;
    use tokio::sync::watch;

    use crate::runtime::DiscardSink;

    /// Each frame goes to the bus it names, and only there; an unknown or unconnected bus
    /// sends nothing and is reported as not written.
    #[tokio::test]
    async fn frames_go_to_the_named_bus() {
        let body = Arc::new(DiscardSink::default());
        let chassis = Arc::new(DiscardSink::default());
        let (_b, body_rx) = watch::channel(Some(body.clone() as Arc<dyn CanSink>));
        let (_c, chassis_rx) = watch::channel(Some(chassis.clone() as Arc<dyn CanSink>));
        let (_d, down_rx) = watch::channel::<Option<Arc<dyn CanSink>>>(None);
        let mut sinks = BusSinks::default();
        sinks.insert("body", body_rx);
        sinks.insert("chassis", chassis_rx);
        sinks.insert("down", down_rx);
        assert_eq!(sinks.get("down").err(), Some("not connected"));
        assert_eq!(sinks.get("nope").err(), Some("no such bus"));
        let (tx, rx) = mpsc::unbounded_channel();
        let frame = CanFrame::new(telematics_can::CanId::standard(0x200), &[1]);
        for (i, bus) in ["chassis", "chassis", "body", "nope", "down"]
            .iter()
            .enumerate()
        {
            tx.send(Actuation {
                id: FrameId(i as u64),
                bus: (*bus).into(),
                frame: frame.clone(),
                actuate: Actuate::Lock,
                counter: 1,
                count: 1,
                interval_ms: 0,
            })
            .expect("send");
        }
        drop(tx);
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
        run(rx, sinks, sent_tx).await;
        assert_eq!(chassis.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(body.dropped.load(Ordering::Relaxed), 1);
        let mut reports = Vec::new();
        while let Ok((id, r)) = sent_rx.try_recv() {
            reports.push((id.0, r.is_ok()));
        }
        assert_eq!(
            reports,
            vec![(0, true), (1, true), (2, true), (3, false), (4, false)]
        );
    }

    /// The core hears of a frame right after its first write, not after the repetitions:
    /// a frame repeated 3 times 300 ms apart is reported before the second write.
    #[tokio::test]
    async fn the_report_follows_the_first_write_and_the_repeats_follow_it() {
        let body = Arc::new(DiscardSink::default());
        let (_b, body_rx) = watch::channel(Some(body.clone() as Arc<dyn CanSink>));
        let mut sinks = BusSinks::default();
        sinks.insert("body", body_rx);
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Actuation {
            id: FrameId(7),
            bus: "body".into(),
            frame: CanFrame::new(telematics_can::CanId::standard(0x200), &[1]),
            actuate: Actuate::Lock,
            counter: 1,
            count: 3,
            interval_ms: 300,
        })
        .expect("send");
        drop(tx);
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, sinks, sent_tx));
        let (id, r) = sent_rx.recv().await.expect("report");
        assert_eq!((id.0, r.is_ok()), (7, true));
        assert_eq!(
            body.dropped.load(Ordering::Relaxed),
            1,
            "reported after the first write"
        );
        task.await.expect("actuator");
        assert_eq!(body.dropped.load(Ordering::Relaxed), 3, "then repeated");
    }
}
