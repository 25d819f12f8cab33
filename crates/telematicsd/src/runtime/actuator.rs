//! The actuator task: sends the actuation frames the core released (their decision is
//! durable), off the core task, in order, each to the bus it names ([`BusSinks`]: bus name →
//! the sink of that bus while it is connected).

use std::collections::HashMap;
use std::time::Duration;

use telematics_can::CanFrame;
use telematics_can::demo::BodyCommand;
use tokio::sync::mpsc;

use super::can_reader::SinkSlot;
use crate::failpoint::{self, Crash};

/// One frame to send.
#[derive(Debug)]
pub struct Actuation {
    /// The bus it goes to (a name of `[can]`'s buses).
    pub bus: String,
    /// The encoded frame.
    pub frame: CanFrame,
    /// What it asks for (logs).
    pub command: BodyCommand,
    /// Its rolling counter (logs).
    pub counter: u8,
}

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
/// error, 1 s timeout) is logged; its command then times out (`failed(timeout)`).
pub async fn run(mut rx: mpsc::UnboundedReceiver<Actuation>, sinks: BusSinks) {
    while let Some(a) = rx.recv().await {
        let s = match sinks.get(&a.bus) {
            Ok(s) => s,
            Err(why) => {
                tracing::error!(
                    bus = %a.bus,
                    command = ?a.command,
                    why,
                    "actuation not sent (the command will time out)"
                );
                continue;
            }
        };
        match tokio::time::timeout(Duration::from_secs(1), s.send(&a.frame)).await {
            Ok(Ok(())) => {
                tracing::info!(bus = %a.bus, command = ?a.command, counter = a.counter, "actuation sent");
                failpoint::hit(Crash::ExecAfterActuationSent);
            }
            Ok(Err(e)) => {
                tracing::error!(bus = %a.bus, code = e.code(), error = %e, "actuation send failed")
            }
            Err(_) => tracing::error!(bus = %a.bus, "actuation send timed out"),
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
    /// sends nothing.
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
        for bus in ["chassis", "chassis", "body", "nope", "down"] {
            tx.send(Actuation {
                bus: bus.into(),
                frame: frame.clone(),
                command: BodyCommand::Lock,
                counter: 1,
            })
            .expect("send");
        }
        drop(tx);
        run(rx, sinks).await;
        assert_eq!(chassis.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(body.dropped.load(Ordering::Relaxed), 1);
    }
}
