//! Paired devices seen from the owner's side (docs/topics.md "Paired devices",
//! docs/protocol.md §10): the vehicle publishes its device list (no secret) retained on
//! `vehicles/{vin}/devices` whenever it changes (pairing, revocation, recovery; a new "last
//! command" time within a second, with the refusal flush) and on request
//! (`vehicles/{vin}/devices/request`, at most one per [`LIST_REQUEST_MIN_INTERVAL_S`]). A device
//! is revoked remotely by a back-end-signed revocation on `vehicles/{vin}/devices/revoke`
//! ([`SecurityService::devices_message`]) or by another paired device's `revoke_device`
//! command; either takes effect at once, is **persisted before anything is published**, audited,
//! reported as a [`SecurityEvent::DeviceRevoked`] (the core commits the `security_device_revoked`
//! alert) and followed by the new list.
//!
//! Authentic revocations (signature verified) get an outcome on
//! `vehicles/{vin}/devices/revocations`; messages that anyone could forge (too large, not a
//! COSE_Sign1, bad payload or signature) and replays (`nonce_reused`) are audited in aggregate
//! like forged commands, and a replayed nonce is answered at most once per
//! [`LIST_REQUEST_MIN_INTERVAL_S`].

use std::collections::HashMap;

use telematics_link::{LinkHandle, topics};
use telematics_security::{
    CredentialStatus, Fault, RevocationRefused, VerifiedCommand, apply_revocation, revoke_active,
};
use telematics_store::{OutboxMessage, Priority};
use telematics_telemetry::{
    CommandResult, DeviceEntry, DeviceList, DeviceStatus, ResultState, RevocationOutcome,
};

use super::{Inner, SecurityService, Source, Verification};
use crate::core::SecurityEvent;

/// At most one device list per this many seconds in answer to requests (a flood of requests
/// cannot multiply outgoing messages); changes are always published.
pub const LIST_REQUEST_MIN_INTERVAL_S: u64 = 5;
/// Replayed-nonce replies remembered at most (oldest forgotten first).
const REPLY_MEMORY: usize = 64;

/// Device publication bookkeeping, inside the service's mutex.
#[derive(Debug, Default)]
pub(super) struct Publication {
    /// A device's "last command" time changed since the list was last published.
    pub(super) dirty: bool,
    /// When a list was last published in answer to a request (Unix s).
    requested_at: Option<u64>,
    /// Nonce -> when a refusal for it was last answered (Unix s).
    replied: HashMap<Vec<u8>, u64>,
}

/// The published form of a credential's status.
/// What [`SecurityService::devices_message`] did with a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevicesMessage {
    /// Not a device topic.
    NotDevices,
    /// Handled (answered, refused and audited, or revoked and persisted).
    Handled,
    /// A verified revocation could not be persisted: stop, as for any security-state write.
    StatePersistFailed,
}

fn status(s: CredentialStatus) -> DeviceStatus {
    match s {
        CredentialStatus::Active => DeviceStatus::Active,
        CredentialStatus::Revoked { at } => DeviceStatus::Revoked {
            at: at.saturating_mul(1000),
        },
        CredentialStatus::VoidedByRecovery { at } => DeviceStatus::VoidedByRecovery {
            at: at.saturating_mul(1000),
        },
    }
}

/// Refusals of a revocation that cost nothing to provoke (no valid signature needed) or are
/// replays of a captured one: audited as one count per kind and window.
fn forgeable(f: Fault) -> bool {
    matches!(
        f,
        Fault::TooLarge
            | Fault::Decode
            | Fault::BadPayload
            | Fault::BadSignature
            | Fault::NonceReused
    )
}

impl SecurityService {
    /// Attaches the MQTT link's outbox and publishes the current device list (retained, so a
    /// back end that connects later still finds it). Called once by the runtime.
    pub fn attach_link(&self, link: LinkHandle) {
        if self.link.set(link).is_err() {
            tracing::warn!("security service: link attached twice; keeping the first");
        }
        let now = super::unix_now_s();
        let mut g = self.lock();
        self.publish_devices(&mut g, now);
    }

    /// Handles a message on one of the device topics at `now` (Unix s): a list request on
    /// `vehicles/{vin}/devices/request` (payload ignored) or a signed revocation on
    /// `vehicles/{vin}/devices/revoke`. [`DevicesMessage::NotDevices`] for any other topic;
    /// [`DevicesMessage::StatePersistFailed`] when a verified revocation could not be made
    /// durable: the caller stops the daemon (`store.write_failed`), as for a command.
    pub fn devices_message(&self, topic: &str, bytes: &[u8], now: u64) -> DevicesMessage {
        if topic == topics::devices_request(&self.vin) {
            let mut g = self.lock();
            let inner = &mut *g;
            match inner.devices.requested_at {
                Some(t) if now < t.saturating_add(LIST_REQUEST_MIN_INTERVAL_S) => {
                    self.count_refusal(inner, now, Source::DevicesRequest, "rate_limited", || {
                        "fault=rate_limited".into()
                    });
                }
                _ => {
                    inner.devices.requested_at = Some(now);
                    self.publish_devices(inner, now);
                }
            }
            DevicesMessage::Handled
        } else if topic == topics::devices_revoke(&self.vin) {
            if self.remote_revocation(bytes, now) {
                DevicesMessage::Handled
            } else {
                DevicesMessage::StatePersistFailed
            }
        } else {
            DevicesMessage::NotDevices
        }
    }

    /// A back-end-signed revocation: verify, revoke, **persist**, then audit and publish the
    /// outcome, the alert and the new list. A refusal changes nothing. `false` only when the
    /// revocation could not be persisted (fail closed).
    fn remote_revocation(&self, bytes: &[u8], now: u64) -> bool {
        let mut g = self.lock();
        let inner = &mut *g;
        let mut candidate = inner.state.clone();
        let result = apply_revocation(
            &mut candidate,
            &self.cfg,
            &self.vin,
            &self.backend_public_key,
            bytes,
            now,
        );
        let rev = match result {
            Ok(rev) => rev,
            Err(RevocationRefused { fault, revocation }) => {
                let detail = || match &revocation {
                    Some(r) => format!(
                        "device={} nonce={} fault={}",
                        hex::encode(&r.key_id),
                        hex::encode(&r.nonce),
                        fault.code()
                    ),
                    None => format!("fault={}", fault.code()),
                };
                if forgeable(fault) {
                    self.count_refusal(inner, now, Source::Revocation, fault.code(), detail);
                } else {
                    self.audit(inner, now, Source::Revocation.audit_kind(), detail());
                }
                if let Some(r) = revocation
                    && self.first_reply(inner, &r.nonce, fault, now)
                {
                    self.publish_outcome(now, r.nonce, r.key_id, Some(fault.code()));
                }
                return true;
            }
        };
        if let Err(e) = self.persist(&candidate) {
            tracing::error!(error = %e, "cannot persist the device revocation; refused");
            let detail = format!(
                "device={} nonce={} fault=state_persist",
                hex::encode(&rev.key_id),
                hex::encode(&rev.nonce)
            );
            self.audit(inner, now, Source::Revocation.audit_kind(), detail);
            self.publish_outcome(now, rev.nonce, rev.key_id, Some("state_persist"));
            return false;
        }
        inner.state = candidate;
        let detail = format!(
            "device={} by=backend nonce={}",
            hex::encode(&rev.key_id),
            hex::encode(&rev.nonce)
        );
        self.audit(inner, now, "device.revoked", detail);
        self.publish_outcome(now, rev.nonce, rev.key_id.clone(), None);
        self.announce_revocation(inner, &rev.key_id, now);
        true
    }

    /// `true` when a refusal of `nonce` should be answered: always, except a replayed nonce
    /// answered within [`LIST_REQUEST_MIN_INTERVAL_S`] (bounded memory).
    fn first_reply(&self, inner: &mut Inner, nonce: &[u8], fault: Fault, now: u64) -> bool {
        if fault != Fault::NonceReused {
            return true;
        }
        let replied = &mut inner.devices.replied;
        if let Some(t) = replied.get(nonce)
            && now < t.saturating_add(LIST_REQUEST_MIN_INTERVAL_S)
        {
            return false;
        }
        if replied.len() >= REPLY_MEMORY {
            let oldest = replied
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                replied.remove(&n);
            }
        }
        replied.insert(nonce.to_vec(), now);
        true
    }

    /// The `revoke_device` action of a verified command (security code checked, counter
    /// persisted): revoke `target`, persist, then publish the command's result (`accepted`,
    /// `executed`; or `rejected` with `unknown_key` / `revoked_key`), the alert and the list.
    pub(super) fn revoke_by_command(
        &self,
        inner: &mut Inner,
        cmd: &VerifiedCommand,
        target: &[u8],
        now: u64,
    ) -> Verification {
        let id = cmd.command_id();
        let by = hex::encode(&cmd.key_id().0);
        let mut candidate = inner.state.clone();
        let outcome = revoke_active(&mut candidate, target, now).map_err(|f| f.code());
        if outcome.is_ok()
            && let Err(e) = self.persist(&candidate)
        {
            // Fail closed: nothing revoked; the runtime stops on `store.write_failed`.
            tracing::error!(error = %e, "cannot persist the device revocation; refused");
            let detail = format!(
                "device={} by=device:{by} fault=state_persist",
                hex::encode(target)
            );
            self.audit(inner, now, "device.revoke_refused", detail);
            return Verification::Rejected {
                refusal: super::Refusal::StatePersist,
                command_id: Some(id),
                retry_after: None,
                session_info: None,
            };
        }
        let at = now.saturating_mul(1000);
        let result = |state, reason_code: Option<&str>| CommandResult {
            command_id: id.0,
            state,
            reason_code: reason_code.map(str::to_owned),
            detail: None,
            at,
            retry_after_s: None,
        };
        match outcome {
            Ok(()) => {
                inner.state = candidate;
                let detail = format!("device={} by=device:{by}", hex::encode(target));
                self.audit(inner, now, "device.revoked", detail);
                self.publish_result(&result(ResultState::Accepted, None));
                self.publish_result(&result(ResultState::Executed, None));
                self.announce_revocation(inner, target, now);
            }
            Err(code) => {
                let detail = format!(
                    "device={} by=device:{by} command={} fault={code}",
                    hex::encode(target),
                    hex::encode(id.0)
                );
                self.audit(inner, now, "device.revoke_refused", detail);
                self.publish_result(&result(ResultState::Rejected, Some(code)));
                self.publish_devices(inner, now);
            }
        }
        Verification::Done
    }

    /// After a revocation is durable: the security event for the owner (the core commits it
    /// as the `security_device_revoked` alert), then the new list.
    pub(super) fn announce_revocation(&self, inner: &mut Inner, key_id: &[u8], now: u64) {
        self.event(SecurityEvent::DeviceRevoked {
            device: key_id.to_vec(),
        });
        self.publish_devices(inner, now);
    }

    /// Publishes the current device list (retained) if a "last command" time changed.
    pub(super) fn publish_devices_if_dirty(&self, inner: &mut Inner, now: u64) {
        if inner.devices.dirty {
            self.publish_devices(inner, now);
        }
    }

    /// Publishes the current device list, retained, on `vehicles/{vin}/devices`.
    pub(super) fn publish_devices(&self, inner: &mut Inner, now: u64) {
        if self.link.get().is_none() {
            return;
        }
        inner.devices.dirty = false;
        let list = device_list(&self.vin, &inner.state, now);
        match list.encode() {
            Ok(b) => self.publish(topics::devices(&self.vin), b, Priority::Result, true),
            Err(e) => tracing::error!(error = %e, "device list encode failed"),
        }
    }

    fn publish_outcome(&self, now: u64, nonce: Vec<u8>, key_id: Vec<u8>, refused: Option<&str>) {
        let outcome = RevocationOutcome {
            vin: self.vin.clone(),
            at: now.saturating_mul(1000),
            nonce,
            key_id,
            refused: refused.map(str::to_owned),
        };
        match outcome.encode() {
            Ok(b) => self.publish(
                topics::devices_revocations(&self.vin),
                b,
                Priority::Result,
                false,
            ),
            Err(e) => tracing::error!(error = %e, "revocation outcome encode failed"),
        }
    }

    fn publish_result(&self, res: &CommandResult) {
        match res.encode() {
            Ok(b) => self.publish(topics::results(&self.vin), b, Priority::Result, false),
            Err(e) => tracing::error!(error = %e, "result encode failed"),
        }
    }

    /// Into the outbox (durable, QoS 1). A failed write loses only this message: the state it
    /// reports is already persisted, and the next change or request publishes the list again.
    fn publish(&self, topic: String, payload: Vec<u8>, priority: Priority, retain: bool) {
        let Some(link) = self.link.get() else {
            return;
        };
        let mut msg = OutboxMessage::new(topic, payload, priority);
        msg.retain = retain;
        if let Err(e) = link.publish(&msg) {
            tracing::error!(error = %e, topic = %msg.topic, "outbox write failed; message lost");
        }
    }
}

/// The published device list of `state` at `now` (Unix s): every credential, no secret.
pub fn device_list(vin: &str, state: &telematics_security::SecurityState, now: u64) -> DeviceList {
    DeviceList {
        vin: vin.to_owned(),
        at: now.saturating_mul(1000),
        devices: state
            .list_devices()
            .into_iter()
            .map(|d| DeviceEntry {
                key_id: d.key_id.0,
                name: d.name,
                paired_at: d.created_at.saturating_mul(1000),
                last_command_at: d.last_used_at.map(|t| t.saturating_mul(1000)),
                status: status(d.status),
            })
            .collect(),
    }
}
