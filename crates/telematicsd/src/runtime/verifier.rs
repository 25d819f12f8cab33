//! The verification worker: verifies received commands and answers session requests on the
//! blocking pool (PBKDF2 and the security-state fsyncs never run on the core task), one
//! message at a time in arrival order (one code check in flight), and closes the
//! aggregated-refusal audit window every [`REFUSAL_FLUSH_MS`].

use std::sync::Arc;
use std::time::Duration;

use telematics_link::{Incoming, topics};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::security::{DevicesMessage, Refusal, SecurityService, Verification, unix_now_s};

/// Most received messages verified in one blocking call (amortises the hand-off to the
/// blocking pool under a flood of cheap refusals).
pub const VERIFY_BATCH: usize = 64;
/// How often the verification worker closes the aggregated-refusal audit window.
pub const REFUSAL_FLUSH_MS: u64 = 1_000;

/// What the verification worker hands the core.
#[derive(Debug)]
pub enum SecurityOutput {
    /// The outcome of one command received on `vehicles/{vin}/commands`.
    Command(Verification),
    /// A session info answering a request on `vehicles/{vin}/session/request`, to publish on
    /// `vehicles/{vin}/session`.
    SessionInfo(Vec<u8>),
}

/// Runs until `shutdown` or until `incoming` closes; up to [`VERIFY_BATCH`] messages per
/// hand-off to the blocking pool.
pub async fn verify_worker(
    mut incoming: mpsc::Receiver<Incoming>,
    security: Arc<SecurityService>,
    out: mpsc::Sender<SecurityOutput>,
    certificates: mpsc::Sender<Vec<u8>>,
    vin: String,
    shutdown: CancellationToken,
) {
    let commands = topics::commands(&vin);
    let session_request = topics::session_request(&vin);
    let identity_certificate = topics::identity_certificate(&vin);
    let mut flush = tokio::time::interval(Duration::from_millis(REFUSAL_FLUSH_MS));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            m = incoming.recv() => match m { Some(m) => m, None => return },
            _ = flush.tick() => {
                let sec = security.clone();
                let _ = tokio::task::spawn_blocking(move || sec.flush_refusals(unix_now_s(), false)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < VERIFY_BATCH {
            match incoming.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // Renewed certificates go to the identity task (no security state involved).
        batch.retain_mut(|m| {
            if m.topic != identity_certificate {
                return true;
            }
            if certificates
                .try_send(std::mem::take(&mut m.payload))
                .is_err()
            {
                tracing::warn!(
                    code = "identity.busy",
                    "certificate message dropped: the identity task is busy"
                );
            }
            false
        });
        if batch.is_empty() {
            continue;
        }
        let sec = security.clone();
        let tx = out.clone();
        let (commands, session_request) = (commands.clone(), session_request.clone());
        let handled = tokio::task::spawn_blocking(move || {
            for msg in batch {
                let output = if msg.topic == commands {
                    SecurityOutput::Command(sec.verify(&msg.payload, unix_now_s()))
                } else if msg.topic == session_request {
                    match sec.session_request(&msg.payload, unix_now_s()) {
                        Some(info) => SecurityOutput::SessionInfo(info),
                        None => continue,
                    }
                } else {
                    match sec.devices_message(&msg.topic, &msg.payload, unix_now_s()) {
                        DevicesMessage::Handled => continue,
                        // A verified revocation not made durable: the core stops the daemon
                        // (`store.write_failed`), exactly as for a command's security state.
                        DevicesMessage::StatePersistFailed => {
                            SecurityOutput::Command(Verification::Rejected {
                                refusal: Refusal::StatePersist,
                                command_id: None,
                                retry_after: None,
                                session_info: None,
                            })
                        }
                        DevicesMessage::NotDevices => {
                            tracing::warn!(topic = %msg.topic, "message on an unexpected topic ignored");
                            continue;
                        }
                    }
                };
                if tx.blocking_send(output).is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        match handled {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(code = "runtime.task_failed", error = %e, "verification task failed")
            }
        }
    }
}
