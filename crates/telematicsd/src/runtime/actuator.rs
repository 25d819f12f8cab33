//! The actuator task: sends the actuation frames the core released (their decision is
//! durable) to the connected CAN sink, off the core task, in order.

use std::time::Duration;

use telematics_can::CanFrame;
use telematics_can::demo::BodyCommand;
use tokio::sync::mpsc;

use super::can_reader::SinkSlot;
use crate::failpoint::{self, Crash};

/// One frame to send.
#[derive(Debug)]
pub struct Actuation {
    /// The encoded frame.
    pub frame: CanFrame,
    /// What it asks for (logs).
    pub command: BodyCommand,
    /// Its rolling counter (logs).
    pub counter: u8,
}

/// Sends until `rx` closes. A frame that cannot be sent (not connected, send error, 1 s
/// timeout) is logged; its command then times out (`failed(timeout)`).
pub async fn run(mut rx: mpsc::UnboundedReceiver<Actuation>, sink: SinkSlot) {
    while let Some(a) = rx.recv().await {
        let Some(s) = sink.borrow().clone() else {
            tracing::error!(
                command = ?a.command,
                "CAN not connected; actuation not sent (the command will time out)"
            );
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(1), s.send(&a.frame)).await {
            Ok(Ok(())) => {
                tracing::info!(command = ?a.command, counter = a.counter, "actuation sent");
                failpoint::hit(Crash::ExecAfterActuationSent);
            }
            Ok(Err(e)) => tracing::error!(code = e.code(), error = %e, "actuation send failed"),
            Err(_) => tracing::error!("actuation send timed out"),
        }
    }
}
