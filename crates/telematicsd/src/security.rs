//! The daemon's security service: the persisted [`SecurityState`], the two-phase command
//! verification with the persistence invariant of docs/protocol.md §6, the audit trail, and the
//! admin operations of the head unit (pair, list/revoke devices, recovery, lockout, audit).
//!
//! All methods are blocking (PBKDF2, fsync); the runtime calls them from `spawn_blocking`.
//! One mutex serialises every code check and every state change, so parallel commands cannot
//! multiply guesses and every persisted state is the result of a complete operation.

use std::sync::Mutex;
use std::time::Instant;

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use telematics_security::{
    AuditOutcome, CommandId, CredentialStatus, Fault, RetryAfter, SecurityState, VerifiedCommand,
    Verifier,
};
use telematics_store::Store;

use crate::admin::{AdminHandler, AuditEvent, DeviceInfo, Request, Response};
use crate::config::Config;
use crate::error::DaemonError;

/// KV key of the persisted security state.
pub const STATE_KEY: &str = "security/state";
/// KV prefix of the audit ring.
pub const AUDIT_PREFIX: &str = "audit/";
/// Audit events kept (oldest dropped first).
pub const AUDIT_CAPACITY: u64 = 512;

/// Unix time in seconds (the security layer compares with the sender's wall clock).
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The result of verifying one received command envelope.
#[derive(Debug)]
pub enum Verification {
    /// Every check passed; hand it to the executor.
    Verified(VerifiedCommand),
    /// Refused. `command_id` is known only when the AEAD opened (an unauthenticated id is
    /// never echoed), so refusals before that publish no result.
    Rejected {
        /// Stable fault code (docs/protocol.md fault table), or `state_persist` when the
        /// state could not be written (fail closed: nothing is executed).
        reason: &'static str,
        /// The command id, when authenticated.
        command_id: Option<CommandId>,
        /// Detail for the result: `retry_after_s=<n>` / `until_recovery` for `locked_out`.
        detail: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct StoredAudit {
    at: u64,
    kind: String,
    detail: String,
}

struct Inner {
    state: SecurityState,
    audit_seq: u64,
}

/// The security service shared by the command path and the admin socket.
pub struct SecurityService {
    inner: Mutex<Inner>,
    store: Store,
    verifier: Verifier,
    cfg: telematics_security::Config,
    backend_public_key: [u8; 32],
    vin: String,
    rng: SystemRandom,
    started: Instant,
}

impl std::fmt::Debug for SecurityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityService")
            .field("vin", &self.vin)
            .finish_non_exhaustive()
    }
}

/// Maps the daemon's `[security]` section onto the protocol crate's configuration.
pub fn protocol_config(cfg: &Config) -> telematics_security::Config {
    let s = &cfg.security;
    telematics_security::Config {
        pbkdf2_iterations: s.pbkdf2_iterations,
        min_pbkdf2_iterations: s.min_pbkdf2_iterations,
        max_ttl_secs: s.max_ttl_s,
        clock_skew_secs: s.clock_skew_s,
        lockout_threshold: s.lockout_threshold,
        hard_limit: s.lockout_hard_limit,
        base_wait_secs: s.lockout_base_s,
        reset_confirm_window_secs: s.reset_confirm_window_s,
        ..telematics_security::Config::default()
    }
}

/// Reads the back-end's Ed25519 public key: 64 hex characters (whitespace ignored).
pub fn read_backend_key(path: &std::path::Path) -> Result<[u8; 32], DaemonError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        DaemonError::Security(format!(
            "security.backend_public_key: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let hex_text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = hex::decode(&hex_text).map_err(|_| {
        DaemonError::Security(format!(
            "security.backend_public_key: {} is not hex",
            path.display()
        ))
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        DaemonError::Security(format!(
            "security.backend_public_key: {} must hold 32 bytes (64 hex characters), got {}",
            path.display(),
            bytes.len()
        ))
    })
}

impl SecurityService {
    /// Loads the security state from `store` (absent = not paired yet; commands are refused
    /// `not_paired` until the owner pairs in the car). A state that does not decode refuses to
    /// start: nothing falls back to an empty, unpaired state.
    pub fn open(store: Store, cfg: &Config) -> Result<Self, DaemonError> {
        let pcfg = protocol_config(cfg);
        pcfg.validate()
            .map_err(|e| DaemonError::Security(format!("security: {e}")))?;
        let verifier = Verifier::new(pcfg.clone(), &cfg.vehicle.vin)
            .map_err(|e| DaemonError::Security(format!("security: {e}")))?;
        let backend_public_key = read_backend_key(&cfg.security.backend_public_key)?;
        let state = match store.get(STATE_KEY)? {
            None => SecurityState::default(),
            Some(bytes) => SecurityState::from_cbor(&bytes).map_err(|e| {
                DaemonError::StateCorrupted(format!(
                    "security state in {} does not decode ({e}); refusing to start \
                     (restore the state file or re-provision through recovery)",
                    store.path().display()
                ))
            })?,
        };
        let audit_seq = store
            .keys_with_prefix(AUDIT_PREFIX)?
            .iter()
            .filter_map(|k| u64::from_str_radix(&k[AUDIT_PREFIX.len()..], 16).ok())
            .max()
            .map_or(0, |m| m + 1);
        Ok(SecurityService {
            inner: Mutex::new(Inner { state, audit_seq }),
            store,
            verifier,
            cfg: pcfg,
            backend_public_key,
            vin: cfg.vehicle.vin.clone(),
            rng: SystemRandom::new(),
            started: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written persisted state (every
        // write is one redb transaction), so recovering the guard is safe.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &SecurityState) -> Result<(), DaemonError> {
        let bytes = state
            .to_cbor()
            .map_err(|e| DaemonError::Security(format!("encode state: {e}")))?;
        self.store.put(STATE_KEY, &bytes)?;
        Ok(())
    }

    fn audit(&self, inner: &mut Inner, at: u64, kind: &str, detail: String) {
        tracing::info!(target: "audit", kind, detail = %detail, "audit");
        let seq = inner.audit_seq;
        inner.audit_seq += 1;
        let rec = StoredAudit {
            at,
            kind: kind.to_string(),
            detail,
        };
        let mut buf = Vec::new();
        if ciborium::into_writer(&rec, &mut buf).is_ok() {
            if let Err(e) = self.store.put(&format!("{AUDIT_PREFIX}{seq:016x}"), &buf) {
                tracing::error!(error = %e, "audit event not persisted");
            }
            if seq >= AUDIT_CAPACITY {
                let old = seq - AUDIT_CAPACITY;
                let _ = self.store.delete(&format!("{AUDIT_PREFIX}{old:016x}"));
            }
        }
    }

    /// Verifies one command envelope received on `vehicles/{vin}/commands` at `now` (Unix s).
    /// Blocking: persists the state between the phases and runs PBKDF2.
    pub fn verify(&self, bytes: &[u8], now: u64) -> Verification {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let pending = match self.verifier.begin(&mut inner.state, bytes, now) {
            Ok(p) => p,
            Err(rej) => {
                let persist_failed = rej.must_persist && self.persist(&inner.state).is_err();
                let detail = rej.retry_after.map(retry_detail);
                self.audit(inner, now, "command.rejected", describe(&rej.audit));
                return Verification::Rejected {
                    reason: if persist_failed {
                        "state_persist"
                    } else {
                        rej.fault.code()
                    },
                    command_id: rej.audit.command_id,
                    detail,
                };
            }
        };
        let command_id = pending.command_id();
        // Persistence invariant: the pre-counted failure is on disk before the code check.
        if let Err(e) = self.persist(&inner.state) {
            tracing::error!(error = %e, "cannot persist security state; refusing the command");
            self.audit(
                inner,
                now,
                "command.rejected",
                format!("state_persist command={}", hex::encode(command_id.0)),
            );
            return Verification::Rejected {
                reason: "state_persist",
                command_id: Some(command_id),
                detail: None,
            };
        }
        crate::failpoint::hit("verify.after_begin_persist");
        let finished = pending.finish(&mut inner.state, now);
        let persisted = self.persist(&inner.state);
        crate::failpoint::hit("verify.after_finish_persist");
        let kind = match finished.audit.outcome {
            AuditOutcome::Accepted => "command.verified",
            AuditOutcome::Rejected => "command.rejected",
        };
        self.audit(inner, now, kind, describe(&finished.audit));
        match finished.result {
            Ok(cmd) => {
                if let Err(e) = persisted {
                    // The counter/lockout reset is not durable; executing would let a crash
                    // replay this command's counter. Refuse (fail closed).
                    tracing::error!(error = %e, "cannot persist security state after a correct code");
                    return Verification::Rejected {
                        reason: "state_persist",
                        command_id: Some(command_id),
                        detail: None,
                    };
                }
                Verification::Verified(cmd)
            }
            Err(fault) => {
                let detail = match fault {
                    Fault::WrongCode => inner.state.retry_after(now).map(retry_detail),
                    _ => None,
                };
                Verification::Rejected {
                    reason: fault.code(),
                    command_id: Some(command_id),
                    detail,
                }
            }
        }
    }

    /// `true` while remote code checks are blocked (back-off or hard lock).
    pub fn locked_out(&self, now: u64) -> bool {
        self.lock().state.retry_after(now).is_some()
    }

    /// Records a non-command audit event (e.g. an executed command's outcome).
    pub fn record(&self, kind: &str, detail: String) {
        let mut g = self.lock();
        self.audit(&mut g, unix_now_s(), kind, detail);
    }

    fn pair(&self, name: &str, code: &str) -> Response {
        let now = unix_now_s();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let first = !inner.state.is_paired();
        let mut candidate = inner.state.clone();
        if first && let Err(e) = candidate.set_initial_code(&self.cfg, code, &self.rng, now) {
            return security_error(&e);
        }
        let exported = match candidate.add_device(&self.vin, code, name, &self.rng, now) {
            Ok(x) => x,
            Err(e) => {
                self.audit(
                    inner,
                    now,
                    "pair.refused",
                    format!("device={name:?} {}", e.code()),
                );
                return security_error(&e);
            }
        };
        if let Err(e) = self.persist(&candidate) {
            return Response::error(e.code(), e.to_string());
        }
        inner.state = candidate;
        let device_id = hex::encode(&exported.key_id.0);
        self.audit(
            inner,
            now,
            if first { "pair.first" } else { "pair.device" },
            format!("device={device_id} name={name:?}"),
        );
        Response::Paired {
            device_id,
            credential: exported.to_text(),
        }
    }

    fn revoke(&self, device_id: &str) -> Response {
        let now = unix_now_s();
        let Ok(kid) = hex::decode(device_id) else {
            return Response::error("admin.bad_request", "device id must be hex");
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut candidate = inner.state.clone();
        if let Err(e) = candidate.revoke_device(&kid, now) {
            return security_error(&e);
        }
        if let Err(e) = self.persist(&candidate) {
            return Response::error(e.code(), e.to_string());
        }
        inner.state = candidate;
        self.audit(inner, now, "device.revoked", format!("device={device_id}"));
        Response::Done
    }

    fn recover(&self, authorization: &[u8], new_code: &str) -> Response {
        let now = unix_now_s();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut candidate = inner.state.clone();
        // Arming consumes the nonce: persist even when the in-car confirmation then fails
        // (e.g. a weak new code), so an authorization can never be used twice.
        if let Err(fault) = telematics_security::arm_reset(
            &mut candidate,
            &self.cfg,
            &self.vin,
            &self.backend_public_key,
            authorization,
            now,
        ) {
            self.audit(inner, now, "recovery.refused", fault.code().to_string());
            return Response::error(&format!("security.{}", fault.code()), fault.to_string());
        }
        let armed = candidate.clone();
        match telematics_security::confirm_reset(
            &mut candidate,
            &self.cfg,
            new_code,
            &self.rng,
            now,
        ) {
            Ok(()) => {
                if let Err(e) = self.persist(&candidate) {
                    return Response::error(e.code(), e.to_string());
                }
                inner.state = candidate;
                self.audit(
                    inner,
                    now,
                    "recovery.completed",
                    "new code set; lockout cleared; all devices voided".into(),
                );
                Response::Done
            }
            Err(e) => {
                if self.persist(&armed).is_ok() {
                    inner.state = armed;
                }
                self.audit(inner, now, "recovery.refused", e.code().to_string());
                security_error(&e)
            }
        }
    }

    fn audit_list(&self, limit: u32) -> Response {
        let keys = match self.store.keys_with_prefix(AUDIT_PREFIX) {
            Ok(k) => k,
            Err(e) => return Response::error(e.code(), e.to_string()),
        };
        let start = keys.len().saturating_sub(limit as usize);
        let mut events = Vec::new();
        for k in &keys[start..] {
            if let Ok(Some(b)) = self.store.get(k)
                && let Ok(a) = ciborium::from_reader::<StoredAudit, _>(b.as_slice())
            {
                events.push(AuditEvent {
                    at: a.at,
                    kind: a.kind,
                    detail: a.detail,
                });
            }
        }
        Response::Audit { events }
    }
}

/// The result detail of a back-off: `retry_after_s=<n>` or `until_recovery`.
fn retry_detail(r: RetryAfter) -> String {
    match r {
        RetryAfter::Seconds(s) => format!("retry_after_s={s}"),
        RetryAfter::UntilRecovery => "until_recovery".to_string(),
    }
}

fn security_error(e: &telematics_security::Error) -> Response {
    Response::error(&format!("security.{}", e.code()), e.to_string())
}

fn describe(a: &telematics_security::AuditEvent) -> String {
    let mut s = String::new();
    if let Some(k) = &a.key_id {
        s.push_str(&format!("device={} ", hex::encode(&k.0)));
    }
    if let Some(c) = &a.command_id {
        s.push_str(&format!("command={} ", hex::encode(c.0)));
    }
    if let Some(act) = a.action {
        s.push_str(&format!("action={act} "));
    }
    match a.fault_code {
        Some(f) => s.push_str(&format!("fault={f}")),
        None => s.push_str("ok"),
    }
    s
}

impl AdminHandler for SecurityService {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => {
                let g = self.lock();
                Response::Status {
                    version: env!("CARGO_PKG_VERSION").into(),
                    vin: self.vin.clone(),
                    uptime_s: self.started.elapsed().as_secs(),
                    components: vec![(
                        "security".into(),
                        if g.state.is_paired() {
                            "paired".into()
                        } else {
                            "not paired".into()
                        },
                    )],
                }
            }
            Request::Pair { device_name, code } => self.pair(&device_name, &code.0),
            Request::ListDevices => {
                let g = self.lock();
                let devices = g
                    .state
                    .list_devices()
                    .into_iter()
                    .map(|d| DeviceInfo {
                        device_id: hex::encode(&d.key_id.0),
                        name: d.name,
                        paired_at: d.created_at,
                        revoked: !matches!(d.status, CredentialStatus::Active),
                    })
                    .collect();
                Response::Devices { devices }
            }
            Request::RevokeDevice { device_id } => self.revoke(&device_id),
            Request::ConfirmRecovery {
                authorization,
                new_code,
            } => self.recover(&authorization, &new_code.0),
            Request::Lockout => {
                let g = self.lock();
                let l = &g.state.lockout;
                Response::Lockout {
                    failures: l.consecutive_failures,
                    locked_until: if l.hard_locked {
                        Some(u64::MAX)
                    } else {
                        l.locked_until.filter(|t| *t > unix_now_s())
                    },
                }
            }
            Request::Audit { limit } => self.audit_list(limit.min(AUDIT_CAPACITY as u32)),
        }
    }
}
