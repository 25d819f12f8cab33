//! The actuator task: sends the actuation frames the core released (their decision is
//! durable) to the connected CAN sink, off the core task, in order, repeated as the vehicle
//! profile says, and reports each frame's first write back to the core
//! (`VehicleCore::handle_frame_sent`).

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

/// Sends until `rx` closes. A frame that cannot be sent (not connected, send error, 1 s
/// timeout) is reported `Err`; its command fails `send_failed`.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Actuation>,
    sink: SinkSlot,
    sent: mpsc::UnboundedSender<Sent>,
) {
    while let Some(a) = rx.recv().await {
        let result = send(&a, &sink).await;
        if result.is_ok() {
            failpoint::hit(Crash::ExecAfterActuationSent);
        }
        if sent.send((a.id, result)).is_err() {
            return;
        }
    }
}

async fn send(a: &Actuation, sink: &SinkSlot) -> Result<(), String> {
    let mut first = Err("not sent".to_string());
    for n in 0..a.count.max(1) {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
        }
        let Some(s) = sink.borrow().clone() else {
            tracing::error!(actuate = ?a.actuate, "CAN not connected; actuation not sent");
            if n == 0 {
                return Err("CAN not connected".into());
            }
            break;
        };
        let r = match tokio::time::timeout(Duration::from_secs(1), s.send(&a.frame)).await {
            Ok(Ok(())) => {
                tracing::info!(actuate = ?a.actuate, counter = a.counter, n, "actuation sent");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(code = e.code(), error = %e, "actuation send failed");
                Err(format!("{}: {e}", e.code()))
            }
            Err(_) => {
                tracing::error!("actuation send timed out");
                Err("send timed out (1 s)".into())
            }
        };
        if n == 0 {
            first = r;
            if first.is_err() {
                break;
            }
        }
    }
    first
}
