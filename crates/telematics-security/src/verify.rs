//! The vehicle-side verification pipeline, two-phase so the lockout failure is persisted
//! before PBKDF2 runs.
//!
//! # Invariant
//! [`Verifier::begin`] runs every cheap check (size, decode, VIN, key, AEAD, time window,
//! counter, lockout) and, when they pass, **already records a failed code attempt and consumes
//! the counter** in the [`SecurityState`]. The caller must persist the state before calling
//! [`PendingCodeCheck::finish`], which runs PBKDF2 and, only on success, rolls the pre-counted
//! failure back. A crash (or power cut) between the two phases therefore leaves the attempt
//! counted as a failure: an attacker cannot reset the lockout by cutting power during the
//! slow verify. `PendingCodeCheck` is `#[must_use]`, cannot be cloned and is tied to the
//! state by a sequence number, so a stale or replayed pending check fails closed
//! (`state_changed`).

use serde::Serialize;

use crate::envelope::{CommandPayload, Envelope, action_name};
use crate::error::{Error, Fault};
use crate::state::{Config, PairingRecord, RetryAfter, SecurityState};
use crate::{CommandId, KeyId, VerifiedCommand};

/// Final outcome recorded in an audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AuditOutcome {
    /// The command was verified and handed to the executor.
    Accepted,
    /// The command was refused; see the fault code.
    Rejected,
}

/// One audit record per attempt. Never contains the code, secrets or plaintext beyond the
/// fields below.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Vehicle time of the decision, Unix seconds.
    pub at: u64,
    /// Key id, when the envelope decoded.
    pub key_id: Option<KeyId>,
    /// Command id, when the AEAD opened.
    pub command_id: Option<CommandId>,
    /// Action wire name, when the AEAD opened.
    pub action: Option<&'static str>,
    /// Accepted or rejected.
    pub outcome: AuditOutcome,
    /// Stable fault code when rejected.
    pub fault_code: Option<&'static str>,
    /// Numeric fault code when rejected.
    pub fault_number: Option<u16>,
}

/// A refusal from [`Verifier::begin`].
#[derive(Debug)]
pub struct Rejection {
    /// The fault.
    pub fault: Fault,
    /// For `locked_out`: how long to wait; `None` for every other fault.
    pub retry_after: Option<RetryAfter>,
    /// The audit record of this attempt.
    pub audit: AuditEvent,
    /// The state was modified (counter consumed): persist it.
    pub must_persist: bool,
}

/// Vehicle-side verifier for one VIN.
#[derive(Clone, Debug)]
pub struct Verifier {
    cfg: Config,
    vin: String,
}

/// The result of [`PendingCodeCheck::finish`].
#[derive(Debug)]
pub struct Finished {
    /// The verified command or the fault (`wrong_code`, `state_changed`, `not_paired`).
    pub result: Result<VerifiedCommand, Fault>,
    /// The audit record of this attempt.
    pub audit: AuditEvent,
}

/// All cheap checks passed and the failure is pre-counted in the state. **Persist the state,
/// then call [`finish`](Self::finish).** Dropping it leaves the attempt counted as failed.
#[must_use = "persist the state, then call finish()"]
pub struct PendingCodeCheck {
    seq: u64,
    record: PairingRecord,
    payload: CommandPayload,
    key_id: KeyId,
}

impl std::fmt::Debug for PendingCodeCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCodeCheck")
            .field("seq", &self.seq)
            .field("key_id", &self.key_id)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

fn audit(
    at: u64,
    key_id: Option<KeyId>,
    payload: Option<&CommandPayload>,
    fault: Option<Fault>,
) -> AuditEvent {
    AuditEvent {
        at,
        key_id,
        command_id: payload.map(|p| p.command_id),
        action: payload.map(|p| action_name(&p.action)),
        outcome: if fault.is_some() {
            AuditOutcome::Rejected
        } else {
            AuditOutcome::Accepted
        },
        fault_code: fault.map(|f| f.code()),
        fault_number: fault.map(|f| f.number()),
    }
}

impl Verifier {
    /// A verifier for `vin` with a validated configuration.
    pub fn new(cfg: Config, vin: &str) -> Result<Self, Error> {
        cfg.validate()?;
        if !crate::envelope::valid_vin(vin) {
            return Err(Error::Invalid("vin"));
        }
        Ok(Verifier {
            cfg,
            vin: vin.to_owned(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The VIN.
    pub fn vin(&self) -> &str {
        &self.vin
    }

    /// Phase 1: every check except the code, in the documented order; on success the
    /// failure is pre-counted and the counter consumed in `state`. Persist `state` before
    /// calling [`PendingCodeCheck::finish`] (also when `Rejection::must_persist`).
    pub fn begin(
        &self,
        state: &mut SecurityState,
        bytes: &[u8],
        now: u64,
    ) -> Result<PendingCodeCheck, Rejection> {
        let reject = |fault, key_id, payload: Option<&CommandPayload>, persist, retry| Rejection {
            fault,
            retry_after: retry,
            audit: audit(now, key_id, payload, Some(fault)),
            must_persist: persist,
        };
        // 1. size
        if bytes.len() > self.cfg.max_message_size {
            return Err(reject(Fault::TooLarge, None, None, false, None));
        }
        // 2. decode
        let env = Envelope::decode(bytes).map_err(|f| reject(f, None, None, false, None))?;
        let kid = KeyId(env.key_id.clone());
        // 3. VIN (protected header)
        if env.vin != self.vin {
            return Err(reject(Fault::WrongVin, Some(kid), None, false, None));
        }
        // 4. key known and active
        let Some(cred) = state.credential(&env.key_id) else {
            return Err(reject(Fault::UnknownKey, Some(kid), None, false, None));
        };
        if !cred.is_active() {
            return Err(reject(Fault::RevokedKey, Some(kid), None, false, None));
        }
        // 5. AEAD
        let pt = env
            .open(&cred.secret)
            .map_err(|f| reject(f, Some(kid.clone()), None, false, None))?;
        let payload = CommandPayload::from_cbor(&pt)
            .map_err(|f| reject(f, Some(kid.clone()), None, false, None))?;
        if payload.vin != self.vin {
            return Err(reject(
                Fault::WrongVin,
                Some(kid),
                Some(&payload),
                false,
                None,
            ));
        }
        // 6. time window
        let skew = self.cfg.clock_skew_secs;
        let time_fault = if payload.expires_at < payload.issued_at
            || payload.expires_at - payload.issued_at > self.cfg.max_ttl_secs
        {
            Some(Fault::TtlTooLong)
        } else if payload.issued_at > now.saturating_add(skew) {
            Some(Fault::NotYetValid)
        } else if payload.expires_at.saturating_add(skew) < now {
            Some(Fault::Expired)
        } else {
            None
        };
        if let Some(f) = time_fault {
            return Err(reject(f, Some(kid), Some(&payload), false, None));
        }
        // 7. counter
        if payload.counter <= cred.last_counter {
            return Err(reject(
                Fault::Replay,
                Some(kid),
                Some(&payload),
                false,
                None,
            ));
        }
        let Some(record) = state.pairing.clone() else {
            return Err(reject(
                Fault::NotPaired,
                Some(kid),
                Some(&payload),
                false,
                None,
            ));
        };
        // Authentic and fresh: consume the counter from here on.
        if let Some(c) = state.credential_mut(&env.key_id) {
            c.last_counter = payload.counter;
        }
        // 8. lockout
        if let Some(wait) = state.retry_after(now) {
            return Err(reject(
                Fault::LockedOut,
                Some(kid),
                Some(&payload),
                true,
                Some(wait),
            ));
        }
        // Pre-count the failure (persisted by the caller before PBKDF2).
        // Same pre-count as the in-car code check (one lockout, one schedule).
        let seq = state.lockout.precount_failure(&self.cfg, now);
        Ok(PendingCodeCheck {
            seq,
            record,
            payload,
            key_id: kid,
        })
    }
}

impl PendingCodeCheck {
    /// Phase 2 (after the state from `begin` was persisted): PBKDF2-verify the code. On success
    /// the pre-counted failure is rolled back (count 0, no wait) and a [`VerifiedCommand`] is
    /// returned; persist the state again. On failure the state is left as `begin` stored it.
    pub fn finish(self, state: &mut SecurityState, now: u64) -> Finished {
        let fault = if state.lockout.check_seq != self.seq
            || state.pairing.as_ref() != Some(&self.record)
        {
            Some(Fault::StateChanged)
        } else if !self.record.verify(&self.payload.code) {
            Some(Fault::WrongCode)
        } else {
            None
        };
        let audit = audit(now, Some(self.key_id.clone()), Some(&self.payload), fault);
        if let Some(f) = fault {
            return Finished {
                result: Err(f),
                audit,
            };
        }
        state.lockout.clear_failures();
        if let Some(c) = state.credential_mut(&self.key_id.0) {
            c.last_used_at = Some(now);
        }
        let p = self.payload;
        Finished {
            result: Ok(VerifiedCommand {
                command_id: p.command_id,
                key_id: self.key_id,
                action: p.action,
                counter: p.counter,
                issued_at: p.issued_at,
                expires_at: p.expires_at,
            }),
            audit,
        }
    }

    /// The command id of the pending command.
    pub fn command_id(&self) -> CommandId {
        self.payload.command_id
    }
}
