//! The daemon's security service: the persisted [`SecurityState`], the two-phase command
//! verification with the persistence invariant of docs/protocol.md §6, the audit trail, and the
//! admin operations of the head unit (pair, list/revoke devices, recovery, lockout, audit).
//!
//! Every code check counts toward one persisted, vehicle-wide lockout: remote commands through
//! `Verifier::begin` / `PendingCodeCheck::finish`, in-car pairing through
//! `SecurityState::begin_code_check` / `LocalCodeCheck::finish`, each with a persist of the
//! pre-counted failure between the phases (a failed write refuses). Recovery is two admin
//! steps: [`SecurityService::arm_recovery`] (signed authorization, transport-independent) and
//! `confirm_recovery` (new code in the car within `reset_confirm_window_s`).
//!
//! Paired devices seen from the owner's side ([`devices`]): the retained device list on
//! `vehicles/{vin}/devices`, remote revocation by the back end and the `revoke_device` action.
//!
//! Security events for the owner ([`SecurityEvent`]: pairing, revocation, wrong code,
//! recovery armed and confirmed) are reported to the runtime's core once the state change that
//! caused them is persisted ([`SecurityService::attach_events`]); the core commits them as
//! alerts. A failed write reports nothing (nothing happened). No event carries a secret.
//!
//! All methods are blocking (PBKDF2, fsync); the runtime calls them from `spawn_blocking`.
//! One mutex serialises every code check and every state change, so parallel commands cannot
//! multiply guesses and every persisted state is the result of a complete operation.

mod devices;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use telematics_keystore::{KeyError, Sealer, is_sealed};
use telematics_link::LinkHandle;
use telematics_security::{
    Action, AuditOutcome, CommandId, CredentialStatus, Fault, RetryAfter, SecurityState,
    VerifiedCommand, Verifier, validate_device_name,
};
use telematics_store::Store;
use tokio::sync::mpsc;

use crate::admin::{AdminHandler, AuditEvent, DeviceInfo, Request, Response};
use crate::config::Config;
use crate::core::{Lockout, SecurityEvent};
use crate::error::DaemonError;
use crate::failpoint::{self, Crash};

/// KV key of the persisted security state.
pub const STATE_KEY: &str = "security/state";
/// Additional data of the sealed security state (docs/protocol.md, "Sealed security state"):
/// binds the record to its key and vehicle, so a sealed record cannot be moved to another key
/// or another car's store and still open.
pub fn state_aad(vin: &str) -> Vec<u8> {
    format!("telematicsd/v1/{STATE_KEY}/{vin}").into_bytes()
}

/// The stored form of `state`: CBOR, sealed when there is a sealing key.
fn stored_state(
    state: &SecurityState,
    sealer: Option<&Sealer>,
    vin: &str,
) -> Result<Vec<u8>, DaemonError> {
    let bytes = state
        .to_cbor()
        .map_err(|e| DaemonError::Security(format!("encode state: {e}")))?;
    match sealer {
        Some(s) => Ok(s.seal(&state_aad(vin), &bytes)?),
        None => Ok(bytes),
    }
}

/// KV prefix of the audit ring.
pub const AUDIT_PREFIX: &str = "audit/";
/// Audit events kept (oldest dropped first).
pub const AUDIT_CAPACITY: u64 = 512;
/// Refusals that anyone can provoke at no cost (before the AEAD opened, and replays of
/// captured commands) are audited as one count per kind and window of this many seconds.
pub const AGGREGATE_WINDOW_S: u64 = 60;
/// At most one session info per device within this many seconds (unsolicited after a refusal
/// or requested): a flood of replays or requests cannot multiply outgoing messages.
pub const SESSION_INFO_MIN_INTERVAL_S: u64 = 5;
/// Audit kind of an aggregated refusal count (`detail`: `source=<s> fault=<code> count=<n>
/// since=<unix s>`): the refusals of that kind in the window *after* the first one, which has
/// its own record.
pub const AUDIT_AGGREGATE_KIND: &str = "refused.aggregate";

/// Unix time in seconds (the security layer compares with the sender's wall clock; the admin
/// protocol's times are in the same clock).
pub use devices::DevicesMessage;
pub use telematics_admin::unix_now_s;

/// Why the daemon refused a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A protocol fault (docs/protocol.md fault table).
    Fault(Fault),
    /// The security state could not be made durable: nothing is executed (fail closed) and the
    /// daemon stops with `store.write_failed`.
    StatePersist,
}

impl Refusal {
    /// Refusals after which the sender gets an authenticated session info to resynchronise
    /// its counter or clock.
    fn offers_session_info(&self) -> bool {
        matches!(
            self,
            Refusal::Fault(Fault::Replay | Fault::Expired | Fault::NotYetValid | Fault::LockedOut)
        )
    }

    /// The stable reason code published in the result.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Fault(f) => f.code(),
            Refusal::StatePersist => "state_persist",
        }
    }

    /// Refusals audited as a count per window instead of one record each: everything before
    /// the AEAD opened (forgeable by anyone, so one record per packet would let a flood wipe
    /// the audit ring and wear the flash) and replays of captured commands.
    pub fn audited_in_aggregate(&self) -> bool {
        matches!(
            self,
            Refusal::Fault(
                Fault::TooLarge
                    | Fault::Decode
                    | Fault::WrongVin
                    | Fault::UnknownKey
                    | Fault::RevokedKey
                    | Fault::Aead
                    | Fault::Replay
            )
        )
    }
}

/// The result of verifying one received command envelope.
#[derive(Debug)]
pub enum Verification {
    /// Every check passed; hand it to the executor.
    Verified(VerifiedCommand),
    /// Refused. `command_id` is known only when the AEAD opened (an unauthenticated id is
    /// never echoed), so refusals before that publish no result.
    Rejected {
        /// Why.
        refusal: Refusal,
        /// The command id, when authenticated.
        command_id: Option<CommandId>,
        /// For `locked_out` (and a `wrong_code` that started a wait): when a code check is
        /// allowed again; the result carries it as `retry_after_s` (a number) or, until
        /// recovery, as the detail `until_recovery`.
        retry_after: Option<RetryAfter>,
        /// An authenticated session info for the sender (after `replay`, `expired`,
        /// `not_yet_valid` and `locked_out`; rate limited per device), to publish on
        /// `vehicles/{vin}/session`.
        session_info: Option<Vec<u8>>,
    },
    /// Verified and carried out by the security service itself (`revoke_device`): its result
    /// is already in the outbox; nothing for the executor.
    Done,
}

/// Where an aggregated refusal came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A command envelope on `vehicles/{vin}/commands`.
    Command,
    /// A session request on `vehicles/{vin}/session/request`.
    SessionRequest,
    /// A device-list request on `vehicles/{vin}/devices/request`.
    DevicesRequest,
    /// A device revocation on `vehicles/{vin}/devices/revoke`.
    Revocation,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Command => "command",
            Source::SessionRequest => "session_request",
            Source::DevicesRequest => "devices_request",
            Source::Revocation => "revocation",
        }
    }

    /// Audit kind of an individually recorded refusal from this source.
    fn audit_kind(self) -> &'static str {
        match self {
            Source::Command => "command.rejected",
            Source::SessionRequest => "session_request.rejected",
            Source::DevicesRequest => "devices_request.rejected",
            Source::Revocation => "revocation.rejected",
        }
    }
}

/// Counts of refusals audited in aggregate, for the current window.
#[derive(Debug, Default)]
struct Aggregate {
    /// Start of the window (Unix s, aligned to [`AGGREGATE_WINDOW_S`]).
    window: Option<u64>,
    /// (source, fault code) -> count.
    counts: BTreeMap<(Source, &'static str), u64>,
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
    aggregate: Aggregate,
    /// Key id -> when its last session info was built (Unix s); only paired key ids.
    session_sent: HashMap<Vec<u8>, u64>,
    /// Device publication bookkeeping (dirty list, request and reply rate limits).
    devices: devices::Publication,
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
    /// Seals the state at rest (`None`: clear, development only).
    sealer: Option<Arc<Sealer>>,
    /// Lock-free copy of the persisted lockout (`0` none, `u64::MAX` until recovery, else the
    /// Unix second the wait ends), so the core loop never waits on the mutex held through
    /// PBKDF2.
    locked_until: AtomicU64,
    /// The MQTT link's outbox, attached by the runtime ([`SecurityService::attach_link`]):
    /// where the device list, revocation outcomes and their alerts and results go.
    link: OnceLock<LinkHandle>,
    /// Where security events go (the runtime's core), attached by the runtime
    /// ([`SecurityService::attach_events`]).
    events: OnceLock<mpsc::UnboundedSender<SecurityEvent>>,
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
    ///
    /// With a `sealer` the state is stored sealed (AES-256-GCM, [`state_aad`]): a sealed state
    /// that does not open refuses to start (`keys.unseal_failed`), a sealed state without a
    /// sealer too, and a clear state is refused unless `[keys] migrate_clear_state` allows
    /// resealing it in one store write (migration).
    pub fn open(
        store: Store,
        cfg: &Config,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<Self, DaemonError> {
        let pcfg = protocol_config(cfg);
        pcfg.validate()
            .map_err(|e| DaemonError::Security(format!("security: {e}")))?;
        let verifier = Verifier::new(pcfg.clone(), &cfg.vehicle.vin)
            .map_err(|e| DaemonError::Security(format!("security: {e}")))?;
        let backend_public_key = read_backend_key(&cfg.security.backend_public_key)?;
        let vin = &cfg.vehicle.vin;
        let state = match store.get(STATE_KEY)? {
            None => SecurityState::default(),
            Some(bytes) => {
                let sealed = is_sealed(&bytes);
                let clear = match (&sealer, sealed) {
                    (Some(s), true) => s.unseal(&state_aad(vin), &bytes)?,
                    (None, true) => {
                        return Err(KeyError::Unseal(format!(
                            "the security state in {} is sealed and no sealing key is \
                             configured ([keys] seal_key or backend = \"pkcs11\")",
                            store.path().display()
                        ))
                        .into());
                    }
                    (Some(_), false) if !cfg.keys.migrate_clear_state => {
                        return Err(KeyError::Unseal(format!(
                            "the security state in {} is in clear while a sealing key is \
                             configured: refused (a clear record can be planted); to seal a state \
                             written before sealing, start once with [keys] \
                             migrate_clear_state = true, then remove it",
                            store.path().display()
                        ))
                        .into());
                    }
                    (_, false) => bytes,
                };
                let state = SecurityState::from_cbor(&clear).map_err(|e| {
                    DaemonError::StateCorrupted(format!(
                        "security state in {} does not decode ({e}); refusing to start \
                         (restore the state file or re-provision through recovery)",
                        store.path().display()
                    ))
                })?;
                if !sealed && let Some(s) = &sealer {
                    store.put(STATE_KEY, &stored_state(&state, Some(s), vin)?)?;
                    tracing::info!(
                        kind = ?s.kind(),
                        "security state sealed at rest (migrated from the clear format)"
                    );
                }
                state
            }
        };
        let audit_seq = store
            .keys_with_prefix(AUDIT_PREFIX)?
            .iter()
            .filter_map(|k| u64::from_str_radix(&k[AUDIT_PREFIX.len()..], 16).ok())
            .max()
            .map_or(0, |m| m + 1);
        let locked_until = AtomicU64::new(lockout_snapshot(&state));
        Ok(SecurityService {
            inner: Mutex::new(Inner {
                state,
                audit_seq,
                aggregate: Aggregate::default(),
                session_sent: HashMap::new(),
                devices: devices::Publication::default(),
            }),
            store,
            verifier,
            cfg: pcfg,
            backend_public_key,
            sealer,
            vin: cfg.vehicle.vin.clone(),
            rng: SystemRandom::new(),
            started: Instant::now(),
            locked_until,
            link: OnceLock::new(),
            events: OnceLock::new(),
        })
    }

    /// Attaches the receiver of security events (the runtime feeds them to the core, which
    /// commits them as alerts). Called once by the runtime; events before it are not kept.
    /// The channel is unbounded but its rate is not: each event follows a persisted state
    /// change (a pairing, a revocation, a code check), never a cheap refusal.
    pub fn attach_events(&self, tx: mpsc::UnboundedSender<SecurityEvent>) {
        if self.events.set(tx).is_err() {
            tracing::warn!("security service: events attached twice; keeping the first");
        }
    }

    /// Reports `event` (its decision is persisted).
    fn event(&self, event: SecurityEvent) {
        match self.events.get() {
            Some(tx) => {
                if tx.send(event).is_err() {
                    tracing::warn!("security event not reported: the core has stopped");
                }
            }
            None => tracing::debug!(?event, "security event with no core attached"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written persisted state (every
        // write is one redb transaction), so recovering the guard is safe.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &SecurityState) -> Result<(), DaemonError> {
        if failpoint::write_fails(failpoint::Write::SecurityState) {
            return Err(DaemonError::StoreFailed("injected: security state".into()));
        }
        let bytes = stored_state(state, self.sealer.as_deref(), &self.vin)?;
        self.store.put(STATE_KEY, &bytes)?;
        self.locked_until
            .store(lockout_snapshot(state), Ordering::Release);
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
    /// Blocking: persists the state between the phases and runs PBKDF2. Refusals that cost
    /// nothing to provoke ([`Refusal::audited_in_aggregate`]) write nothing: they are counted
    /// and audited once per kind and [`AGGREGATE_WINDOW_S`].
    pub fn verify(&self, bytes: &[u8], now: u64) -> Verification {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let pending = match self.verifier.begin(&mut inner.state, bytes, now) {
            Ok(p) => p,
            Err(rej) => {
                let persist_failed = rej.must_persist && self.persist(&inner.state).is_err();
                let refusal = if persist_failed {
                    Refusal::StatePersist
                } else {
                    Refusal::Fault(rej.fault)
                };
                if refusal.audited_in_aggregate() {
                    self.count_refusal(inner, now, Source::Command, refusal.code(), || {
                        describe(&rej.audit)
                    });
                } else {
                    self.audit(inner, now, "command.rejected", describe(&rej.audit));
                }
                let session_info = match (&rej.audit.key_id, rej.audit.command_id) {
                    (Some(kid), Some(id)) if refusal.offers_session_info() => {
                        self.session_info_for(inner, &kid.0, &id.0, now)
                    }
                    _ => None,
                };
                return Verification::Rejected {
                    refusal,
                    command_id: rej.audit.command_id,
                    retry_after: rej.retry_after,
                    session_info,
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
                refusal: Refusal::StatePersist,
                command_id: Some(command_id),
                retry_after: None,
                session_info: None,
            };
        }
        crate::failpoint::hit(Crash::VerifyAfterBeginPersist);
        let finished = pending.finish(&mut inner.state, now);
        let persisted = self.persist(&inner.state);
        crate::failpoint::hit(Crash::VerifyAfterFinishPersist);
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
                        refusal: Refusal::StatePersist,
                        command_id: Some(command_id),
                        retry_after: None,
                        session_info: None,
                    };
                }
                // Its "last command" time changed: the list goes out with the next flush.
                inner.devices.dirty = true;
                if let Action::RevokeDevice { key_id } = cmd.action() {
                    let target = key_id.0.clone();
                    return self.revoke_by_command(inner, &cmd, &target, now);
                }
                Verification::Verified(cmd)
            }
            Err(fault) => {
                let retry_after = match fault {
                    Fault::WrongCode => inner.state.retry_after(now),
                    _ => None,
                };
                if fault == Fault::WrongCode {
                    // The pre-counted failure was persisted before the code check.
                    self.event(SecurityEvent::WrongCode {
                        failures: inner.state.lockout.consecutive_failures,
                        device: finished.audit.key_id.as_ref().map(|k| k.0.clone()),
                    });
                }
                Verification::Rejected {
                    refusal: Refusal::Fault(fault),
                    command_id: Some(command_id),
                    retry_after,
                    session_info: None,
                }
            }
        }
    }

    /// Answers a session-info request received on `vehicles/{vin}/session/request` at `now`
    /// (Unix s): the authenticated session info of the named device with the request's
    /// challenge echoed, or `None` (malformed request, unknown or revoked key id, or the
    /// device already got one within [`SESSION_INFO_MIN_INTERVAL_S`]). Refusals are audited
    /// in aggregate; nothing is written per request.
    pub fn session_request(&self, bytes: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let req = match telematics_security::SessionRequest::from_cbor(bytes) {
            Ok(r) => r,
            Err(f) => {
                self.count_refusal(inner, now, Source::SessionRequest, f.code(), || {
                    format!("fault={}", f.code())
                });
                return None;
            }
        };
        match inner.state.credential(&req.key_id) {
            None => {
                let detail = || format!("device={} fault=unknown_key", hex::encode(&req.key_id));
                self.count_refusal(
                    inner,
                    now,
                    Source::SessionRequest,
                    Fault::UnknownKey.code(),
                    detail,
                );
                return None;
            }
            Some(c) if !c.is_active() => {
                let detail = || format!("device={} fault=revoked_key", hex::encode(&req.key_id));
                self.count_refusal(
                    inner,
                    now,
                    Source::SessionRequest,
                    Fault::RevokedKey.code(),
                    detail,
                );
                return None;
            }
            Some(_) => {}
        }
        let info = self.session_info_for(inner, &req.key_id, &req.challenge, now);
        if info.is_none() {
            let detail = || format!("device={} fault=rate_limited", hex::encode(&req.key_id));
            self.count_refusal(inner, now, Source::SessionRequest, "rate_limited", detail);
        }
        info
    }

    /// Builds the session info of `key_id` unless one was built within the minimum interval.
    fn session_info_for(
        &self,
        inner: &mut Inner,
        key_id: &[u8],
        echo: &[u8],
        now: u64,
    ) -> Option<Vec<u8>> {
        if let Some(last) = inner.session_sent.get(key_id)
            && now < last.saturating_add(SESSION_INFO_MIN_INTERVAL_S)
        {
            return None;
        }
        match telematics_security::build_session_info(&inner.state, &self.vin, key_id, echo, now) {
            Ok(b) => {
                inner.session_sent.insert(key_id.to_vec(), now);
                Some(b)
            }
            Err(e) => {
                tracing::debug!(code = e.code(), "no session info for this key id");
                None
            }
        }
    }

    /// Audits one refusal of the aggregated kinds: the first of its `(source, fault)` in a
    /// window gets its own record (`<source>.rejected`, `detail()`), later ones are counted
    /// and written as one `refused.aggregate` record when the window ends. Closes an ended
    /// window first.
    fn count_refusal(
        &self,
        inner: &mut Inner,
        now: u64,
        source: Source,
        fault: &'static str,
        detail: impl FnOnce() -> String,
    ) {
        self.close_window(inner, now, false);
        inner
            .aggregate
            .window
            .get_or_insert(now - now % AGGREGATE_WINDOW_S);
        match inner.aggregate.counts.get_mut(&(source, fault)) {
            Some(n) => *n += 1,
            None => {
                inner.aggregate.counts.insert((source, fault), 0);
                self.audit(inner, now, source.audit_kind(), detail());
            }
        }
    }

    /// Writes the aggregated refusal counts of a window that has ended by `now` (or of the
    /// current one with `force`, at shutdown): one audit record and one log line per kind.
    fn close_window(&self, inner: &mut Inner, now: u64, force: bool) {
        let Some(start) = inner.aggregate.window else {
            return;
        };
        if !force && now < start + AGGREGATE_WINDOW_S {
            return;
        }
        let counts = std::mem::take(&mut inner.aggregate.counts);
        inner.aggregate.window = None;
        for ((source, fault), count) in counts.into_iter().filter(|(_, n)| *n > 0) {
            let source = source.as_str();
            tracing::warn!(
                code = "security.refusals",
                source,
                fault,
                count,
                since = start,
                "further refused messages in the window (the first was audited on its own)"
            );
            self.audit(
                inner,
                now,
                AUDIT_AGGREGATE_KIND,
                format!("source={source} fault={fault} count={count} since={start}"),
            );
        }
    }

    /// Audits the aggregated refusal counts of a window that has ended (call about once a
    /// second); `force` also closes the current window (shutdown). Blocking (store writes).
    pub fn flush_refusals(&self, now: u64, force: bool) {
        let mut g = self.lock();
        self.close_window(&mut g, now, force);
        self.publish_devices_if_dirty(&mut g, now);
    }

    /// `true` while remote code checks are blocked (back-off or hard lock). Lock-free: reads
    /// the snapshot of the last persisted state, never waits for a code check in progress.
    pub fn locked_out(&self, now: u64) -> bool {
        self.lockout(now).is_locked()
    }

    /// The lockout at `now` (Unix s) as last persisted; lock-free like
    /// [`locked_out`](Self::locked_out).
    pub fn lockout(&self, now: u64) -> Lockout {
        match self.locked_until.load(Ordering::Acquire) {
            u64::MAX => Lockout::UntilRecovery,
            until if until != 0 && now < until => Lockout::Until(until),
            _ => Lockout::None,
        }
    }

    /// Records a non-command audit event (e.g. an executed command's outcome).
    pub fn record(&self, kind: &str, detail: String) {
        let mut g = self.lock();
        self.audit(&mut g, unix_now_s(), kind, detail);
    }

    /// Pairs a device in the car at `now` (Unix s). The first pairing sets the security code
    /// (nothing to check yet). Every later pairing checks the code in two phases with the same
    /// persisted lockout as remote commands (docs/protocol.md §6, §7): refused `locked_out`
    /// without a code check during a wait or a hard lock; otherwise the failure is pre-counted
    /// and **persisted before PBKDF2** (a failed write refuses), PBKDF2 runs, and a correct
    /// code rolls the failure back in the same write that adds the device.
    fn pair(&self, name: &str, code: &str, now: u64) -> Result<Response, AdminRefusal> {
        validate_device_name(name).map_err(AdminRefusal::Security)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        if !inner.state.is_paired() {
            let mut candidate = inner.state.clone();
            let exported = candidate
                .set_initial_code(&self.cfg, code, &self.rng, now)
                .and_then(|proof| candidate.add_device(proof, &self.vin, name, &self.rng, now))
                .map_err(|e| {
                    let detail = format!("device={name:?} fault={}", e.code());
                    self.audit(inner, now, "pair.refused", detail);
                    AdminRefusal::Security(e)
                })?;
            self.persist(&candidate).map_err(AdminRefusal::Persist)?;
            inner.state = candidate;
            return Ok(self.paired(inner, now, "pair.first", name, &exported));
        }
        let check = match inner.state.begin_code_check(&self.cfg, now) {
            Ok(c) => c,
            Err(e) => {
                let detail = format!("device={name:?} fault={}{}", e.code(), retry_suffix(&e));
                self.audit(inner, now, "pair.refused", detail);
                return Err(AdminRefusal::Security(e));
            }
        };
        // Persistence invariant: the pre-counted failure is on disk before the code check.
        if let Err(e) = self.persist(&inner.state) {
            tracing::error!(error = %e, "cannot persist security state; refusing the pairing");
            let detail = format!("device={name:?} fault=state_persist");
            self.audit(inner, now, "pair.refused", detail);
            return Err(AdminRefusal::Persist(e));
        }
        crate::failpoint::hit(Crash::PairAfterBeginPersist);
        let mut checked = inner.state.clone();
        let proof = match check.finish(&mut checked, code) {
            Ok(p) => p,
            Err(e) => {
                // Wrong code (or state_changed): the failure stays counted as persisted.
                let failures = inner.state.lockout.consecutive_failures;
                let detail = format!("device={name:?} fault={} failures={failures}", e.code());
                self.audit(inner, now, "pair.refused", detail);
                if matches!(e, telematics_security::Error::WrongCode) {
                    self.event(SecurityEvent::WrongCode {
                        failures,
                        device: None,
                    });
                }
                return Err(AdminRefusal::WrongCode {
                    error: e,
                    failures,
                    retry_after: inner.state.retry_after(now),
                });
            }
        };
        let mut candidate = checked.clone();
        match candidate.add_device(proof, &self.vin, name, &self.rng, now) {
            Ok(exported) => {
                self.persist(&candidate).map_err(AdminRefusal::Persist)?;
                inner.state = candidate;
                Ok(self.paired(inner, now, "pair.device", name, &exported))
            }
            Err(e) => {
                // The code was right: keep the roll-back even though no device was added.
                if self.persist(&checked).is_ok() {
                    inner.state = checked;
                }
                let detail = format!("device={name:?} fault={}", e.code());
                self.audit(inner, now, "pair.refused", detail);
                Err(AdminRefusal::Security(e))
            }
        }
    }

    fn paired(
        &self,
        inner: &mut Inner,
        now: u64,
        kind: &str,
        name: &str,
        exported: &telematics_security::ExportedCredential,
    ) -> Response {
        let device_id = hex::encode(&exported.key_id.0);
        self.audit(
            inner,
            now,
            kind,
            format!("device={device_id} name={name:?}"),
        );
        self.event(SecurityEvent::DevicePaired {
            device: exported.key_id.0.clone(),
        });
        self.publish_devices(inner, now);
        Response::Paired {
            device_id,
            credential: exported.to_text(),
        }
    }

    fn revoke(&self, device_id: &str, now: u64) -> Result<Response, AdminRefusal> {
        let Ok(kid) = hex::decode(device_id) else {
            return Ok(Response::error(
                "admin.bad_request",
                "device id must be hex",
            ));
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut candidate = inner.state.clone();
        let was_active = candidate.credential(&kid).is_some_and(|c| c.is_active());
        candidate
            .revoke_device(&kid, now)
            .map_err(AdminRefusal::Security)?;
        self.persist(&candidate).map_err(AdminRefusal::Persist)?;
        inner.state = candidate;
        self.audit(
            inner,
            now,
            "device.revoked",
            format!("device={device_id} by=admin"),
        );
        if was_active {
            self.announce_revocation(inner, &kid, now);
        }
        Ok(Response::Done)
    }

    /// Recovery step 1: verifies a back-end-signed reset authorization (docs/protocol.md §9)
    /// at `now`, consumes its nonce and persists the armed reset; returns the time (Unix s)
    /// until which the owner can confirm a new code in the car. Transport-independent: the
    /// admin socket calls it today; an authorization arriving on `vehicles/{VIN}/reset` can be
    /// passed here unchanged. Nothing else changes (a hard lock stays in force).
    pub fn arm_recovery(&self, authorization: &[u8], now: u64) -> Result<u64, AdminRefusal> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut candidate = inner.state.clone();
        if let Err(fault) = telematics_security::arm_reset(
            &mut candidate,
            &self.cfg,
            &self.vin,
            &self.backend_public_key,
            authorization,
            now,
        ) {
            let detail = format!("arm fault={}", fault.code());
            self.audit(inner, now, "recovery.refused", detail);
            return Err(AdminRefusal::Security(fault.into()));
        }
        self.persist(&candidate).map_err(AdminRefusal::Persist)?;
        let confirm_by = candidate
            .pending_reset
            .as_ref()
            .map_or(now, |p| p.confirm_by);
        inner.state = candidate;
        self.audit(
            inner,
            now,
            "recovery.armed",
            format!("confirm_by={confirm_by}"),
        );
        self.event(SecurityEvent::RecoveryArmed {
            confirm_by_s: confirm_by,
        });
        Ok(confirm_by)
    }

    /// Recovery step 2, in the car (physical presence) at `now`: sets the new code within the
    /// confirmation window of an armed reset, clears the lockout and voids every device.
    /// Refused `security.no_pending_reset` when nothing is armed or the window passed (the
    /// expired reset is disarmed), `security.weak_code` for a bad new code (stays armed).
    fn confirm_recovery(&self, new_code: &str, now: u64) -> Result<Response, AdminRefusal> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut candidate = inner.state.clone();
        if let Err(e) =
            telematics_security::confirm_reset(&mut candidate, &self.cfg, new_code, &self.rng, now)
        {
            // An expired reset was disarmed: remember that (best effort, it is void anyway).
            if candidate != inner.state && self.persist(&candidate).is_ok() {
                inner.state = candidate;
            }
            let detail = format!("confirm fault={}", e.code());
            self.audit(inner, now, "recovery.refused", detail);
            return Err(AdminRefusal::Security(e));
        }
        self.persist(&candidate).map_err(AdminRefusal::Persist)?;
        inner.state = candidate;
        self.audit(
            inner,
            now,
            "recovery.completed",
            "new code set; lockout cleared; all devices voided".into(),
        );
        self.event(SecurityEvent::RecoveryConfirmed);
        self.publish_devices(inner, now);
        Ok(Response::Done)
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

/// The lockout as one number: `0` none, `u64::MAX` until recovery, else the end of the wait.
fn lockout_snapshot(state: &SecurityState) -> u64 {
    let l = &state.lockout;
    if l.hard_locked {
        u64::MAX
    } else {
        l.locked_until.unwrap_or(0)
    }
}

/// A back-off as audit text: `retry_after_s=<n>` or `until_recovery`.
fn retry_detail(r: RetryAfter) -> String {
    match r {
        RetryAfter::Seconds(s) => format!("retry_after_s={s}"),
        RetryAfter::UntilRecovery => "until_recovery".to_string(),
    }
}

/// Why an admin security operation was refused; [`AdminRefusal::into_response`] gives the
/// admin error (`security.<code>` or the store's code) with the retry-after where one applies.
#[derive(Debug)]
pub enum AdminRefusal {
    /// Refused by the security rules (locked out, weak code, bad authorization, ...).
    Security(telematics_security::Error),
    /// The in-car code check failed (`wrong_code`, or `state_changed`); counted.
    WrongCode {
        /// The security-crate error.
        error: telematics_security::Error,
        /// Consecutive wrong codes now recorded.
        failures: u32,
        /// The wait now in force, if the failure started one.
        retry_after: Option<RetryAfter>,
    },
    /// The security state could not be persisted (fail closed: nothing took effect).
    Persist(DaemonError),
}

impl AdminRefusal {
    /// The admin error response.
    pub fn into_response(self) -> Response {
        match self {
            AdminRefusal::Security(e) => {
                let retry = match &e {
                    telematics_security::Error::LockedOut(r) => Some(*r),
                    _ => None,
                };
                Response::refused(
                    &format!("security.{}", e.code()),
                    e.to_string(),
                    retry_secs(retry),
                )
            }
            AdminRefusal::WrongCode {
                error,
                failures,
                retry_after,
            } => {
                let mut msg = format!("{error} ({failures} consecutive wrong codes");
                if let Some(r) = retry_after {
                    msg.push_str(&format!("; {r}"));
                }
                msg.push(')');
                Response::refused(
                    &format!("security.{}", error.code()),
                    msg,
                    retry_secs(retry_after),
                )
            }
            AdminRefusal::Persist(e) => Response::error(e.code(), e.to_string()),
        }
    }
}

/// The admin `retry_after_s` of a wait: seconds, `u64::MAX` = until recovery.
fn retry_secs(r: Option<RetryAfter>) -> Option<u64> {
    r.map(|r| match r {
        RetryAfter::Seconds(s) => s,
        RetryAfter::UntilRecovery => u64::MAX,
    })
}

/// ` retry_after_s=<n>` / ` until_recovery` for a lockout refusal, else empty.
fn retry_suffix(e: &telematics_security::Error) -> String {
    match e {
        telematics_security::Error::LockedOut(r) => format!(" {}", retry_detail(*r)),
        _ => String::new(),
    }
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

impl SecurityService {
    /// Handles one admin request at `now` (Unix s); [`AdminHandler::handle`] passes the clock.
    pub fn handle_at(&self, req: Request, now: u64) -> Response {
        let result = match req {
            Request::Status => {
                let g = self.lock();
                let st = &g.state;
                let recovery = match &st.pending_reset {
                    Some(p) if p.confirm_by >= now => format!("armed confirm_by={}", p.confirm_by),
                    _ => "none".into(),
                };
                Ok(Response::Status {
                    version: env!("CARGO_PKG_VERSION").into(),
                    vin: self.vin.clone(),
                    uptime_s: self.started.elapsed().as_secs(),
                    components: vec![
                        (
                            "security".into(),
                            if st.is_paired() {
                                "paired".into()
                            } else {
                                "not paired".into()
                            },
                        ),
                        ("recovery".into(), recovery),
                    ],
                })
            }
            Request::Pair { device_name, code } => self.pair(&device_name, &code.0, now),
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
                Ok(Response::Devices { devices })
            }
            Request::RevokeDevice { device_id } => self.revoke(&device_id, now),
            Request::ArmRecovery { authorization } => self
                .arm_recovery(&authorization, now)
                .map(|confirm_by| Response::RecoveryArmed { confirm_by }),
            Request::ConfirmRecovery { new_code } => self.confirm_recovery(&new_code.0, now),
            Request::Lockout => {
                let g = self.lock();
                let l = &g.state.lockout;
                Ok(Response::Lockout {
                    failures: l.consecutive_failures,
                    locked_until: if l.hard_locked {
                        Some(u64::MAX)
                    } else {
                        l.locked_until.filter(|t| *t > now)
                    },
                })
            }
            Request::Audit { limit } => Ok(self.audit_list(limit.min(AUDIT_CAPACITY as u32))),
            // Gathered by the daemon (link, outbox, buses); see `daemon.rs`.
            Request::Diagnostics => Ok(Response::error(
                "admin.unsupported",
                "diagnostics are served by the running daemon",
            )),
        };
        result.unwrap_or_else(AdminRefusal::into_response)
    }
}

impl SecurityService {
    /// Pairing, lockout and recovery at `now` for `doctor`.
    pub fn diagnostics(&self, now: u64) -> crate::diagnostics::SecurityFacts {
        let g = self.lock();
        let st = &g.state;
        crate::diagnostics::SecurityFacts {
            paired: st.is_paired(),
            failures: st.lockout.consecutive_failures,
            locked_until: st.lockout.locked_until.filter(|t| *t > now),
            hard_locked: st.lockout.hard_locked,
            recovery_confirm_by: st.pending_reset.as_ref().map(|p| p.confirm_by),
        }
    }
}

impl AdminHandler for SecurityService {
    fn handle(&self, req: Request) -> Response {
        self.handle_at(req, unix_now_s())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Secret;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const VIN: &str = "1M8GDM9AXKP042788";
    const CODE: &str = "2468";
    const T0: u64 = 1_800_000_000;

    struct Car {
        _dir: tempfile::TempDir,
        cfg: Config,
        backend: Ed25519KeyPair,
    }

    impl Car {
        fn new() -> Car {
            let dir = tempfile::tempdir().expect("tempdir");
            let backend = Ed25519KeyPair::from_seed_unchecked(&[42; 32]).expect("key");
            let pk = dir.path().join("backend.pub");
            std::fs::write(&pk, hex::encode(backend.public_key().as_ref())).expect("pk");
            let toml = format!(
                "[vehicle]\nvin = \"{VIN}\"\n[can]\nsource = \"sim\"\n[security]\n\
                 pbkdf2_iterations = 100000\nmin_pbkdf2_iterations = 100000\nlockout_threshold = 3\n\
                 lockout_hard_limit = 5\n\
                 lockout_base_s = 30\nreset_confirm_window_s = 60\nbackend_public_key = {pk:?}\n\
                 [state]\ndirectory = {:?}\n",
                dir.path()
            );
            let cfg = Config::from_toml_with_env(&toml, Vec::new()).expect("cfg");
            Car {
                _dir: dir,
                cfg,
                backend,
            }
        }

        /// Opens the service on the car's store (again after a drop = a restart).
        fn open(&self) -> SecurityService {
            let store = Store::open(self.cfg.outbox_path()).expect("store");
            SecurityService::open(store, &self.cfg, None).expect("open")
        }

        /// Opens the service with its security events collected.
        fn open_with_events(&self) -> (SecurityService, mpsc::UnboundedReceiver<SecurityEvent>) {
            let s = self.open();
            let (tx, rx) = mpsc::unbounded_channel();
            s.attach_events(tx);
            (s, rx)
        }

        /// A back-end-signed revocation of `kid`, handled by `s` at `now`; returns its bytes.
        fn revoke_remotely(&self, s: &SecurityService, kid: &[u8], now: u64) -> Vec<u8> {
            let rev = telematics_security::client::sign_revocation(
                &self.backend,
                VIN,
                kid,
                T0,
                T0 + 600,
                &SystemRandom::new(),
            )
            .expect("sign");
            let topic = telematics_link::topics::devices_revoke(VIN);
            assert_eq!(
                s.devices_message(&topic, &rev, now),
                DevicesMessage::Handled
            );
            rev
        }

        fn auth(&self, at: u64) -> Vec<u8> {
            telematics_security::client::sign_reset(
                &self.backend,
                VIN,
                at,
                at + 3600,
                &SystemRandom::new(),
            )
            .expect("sign")
        }
    }

    fn pair(s: &SecurityService, code: &str, now: u64) -> Response {
        s.handle_at(
            Request::Pair {
                device_name: "phone".into(),
                code: Secret(code.into()),
            },
            now,
        )
    }

    fn error_of(r: &Response) -> (&str, Option<u64>) {
        match r {
            Response::Error {
                code,
                retry_after_s,
                ..
            } => (code.as_str(), *retry_after_s),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn lockout(s: &SecurityService, now: u64) -> (u32, Option<u64>) {
        match s.handle_at(Request::Lockout, now) {
            Response::Lockout {
                failures,
                locked_until,
            } => (failures, locked_until),
            other => panic!("{other:?}"),
        }
    }

    fn audit_kinds(s: &SecurityService) -> Vec<(String, String)> {
        match s.handle_at(Request::Audit { limit: 100 }, T0) {
            Response::Audit { events } => events.into_iter().map(|e| (e.kind, e.detail)).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn eleven_wrong_pairing_codes_are_counted_throttled_and_survive_a_restart() {
        let car = Car::new();
        let s = car.open();
        assert!(matches!(pair(&s, CODE, T0), Response::Paired { .. }));
        let mut refusals = Vec::new();
        for i in 0..11 {
            refusals.push(error_of(&pair(&s, "9999", T0 + i)).0.to_owned());
        }
        // Threshold 3: three code checks, then the 30 s wait refuses without a check.
        assert_eq!(&refusals[..3], ["security.wrong_code"; 3]);
        assert!(
            refusals[3..].iter().all(|c| c == "security.locked_out"),
            "{refusals:?}"
        );
        assert_eq!(lockout(&s, T0 + 11), (3, Some(T0 + 2 + 30)));
        assert!(
            s.locked_out(T0 + 11),
            "the runtime's lockout alert reads this"
        );
        // Even the right code is refused during the wait, with the retry-after.
        let r = pair(&s, CODE, T0 + 12);
        assert_eq!(error_of(&r), ("security.locked_out", Some(20)));
        let audit = audit_kinds(&s);
        let wrong: Vec<_> = audit
            .iter()
            .filter(|(k, d)| k == "pair.refused" && d.contains("fault=wrong_code"))
            .collect();
        assert_eq!(wrong.len(), 3, "{audit:?}");
        assert!(
            audit
                .iter()
                .all(|(_, d)| !d.contains("9999") && !d.contains(CODE))
        );
        drop(s);
        // Restart: the count and the wait come back from the store.
        let s = car.open();
        assert_eq!(lockout(&s, T0 + 13), (3, Some(T0 + 32)));
        assert_eq!(error_of(&pair(&s, CODE, T0 + 13)).0, "security.locked_out");
        // After the wait the right code pairs and clears the count.
        assert!(matches!(pair(&s, CODE, T0 + 40), Response::Paired { .. }));
        assert_eq!(lockout(&s, T0 + 40), (0, None));
    }

    #[test]
    fn remote_and_in_car_failures_share_the_lockout() {
        let car = Car::new();
        let s = car.open();
        let Response::Paired { credential, .. } = pair(&s, CODE, T0) else {
            panic!("first pairing")
        };
        let cred = telematics_security::ExportedCredential::from_text(&credential).expect("cred");
        // Two wrong codes over MQTT ...
        for counter in 1..=2 {
            let req = telematics_security::client::CommandRequest {
                command_id: CommandId([counter as u8; 16]),
                action: telematics_security::Action::Unlock,
                counter,
                issued_at: T0,
                expires_at: T0 + 30,
                code: "9999".into(),
            };
            let bytes =
                telematics_security::client::build_command(&cred, &req, &SystemRandom::new())
                    .expect("command");
            assert!(matches!(
                s.verify(&bytes, T0),
                Verification::Rejected {
                    refusal: Refusal::Fault(Fault::WrongCode),
                    ..
                }
            ));
        }
        // ... and the third, in the car, starts the wait: one vehicle-wide counter.
        let r = pair(&s, "9999", T0 + 1);
        assert_eq!(error_of(&r), ("security.wrong_code", Some(30)));
        assert_eq!(lockout(&s, T0 + 1), (3, Some(T0 + 31)));
    }

    #[test]
    fn hard_limit_reached_in_the_car_holds_until_recovery() {
        let car = Car::new();
        let s = car.open();
        assert!(matches!(pair(&s, CODE, T0), Response::Paired { .. }));
        let mut now = T0;
        // Hard limit 5: waits after 3 and 4, locked until recovery at 5.
        for f in 1..=5u32 {
            let r = pair(&s, "9999", now);
            let (code, retry) = error_of(&r);
            assert_eq!(code, "security.wrong_code", "attempt {f}");
            match f {
                1 | 2 => assert_eq!(retry, None),
                3 => assert_eq!(retry, Some(30)),
                4 => assert_eq!(retry, Some(60)),
                _ => assert_eq!(retry, Some(u64::MAX)),
            }
            now += retry.filter(|r| *r != u64::MAX).unwrap_or(0);
        }
        assert_eq!(lockout(&s, now), (5, Some(u64::MAX)));
        drop(s);
        let s = car.open();
        let much_later = now + 365 * 86_400;
        assert_eq!(
            error_of(&pair(&s, CODE, much_later)),
            ("security.locked_out", Some(u64::MAX))
        );
        assert_eq!(lockout(&s, much_later).0, 5, "refusals are not code checks");
        // Arming alone does not lift the hard lock; confirming in the car does.
        let r = s.handle_at(
            Request::ArmRecovery {
                authorization: car.auth(much_later),
            },
            much_later,
        );
        assert_eq!(
            r,
            Response::RecoveryArmed {
                confirm_by: much_later + 60
            }
        );
        assert_eq!(
            error_of(&pair(&s, CODE, much_later + 1)).0,
            "security.locked_out"
        );
        let r = s.handle_at(
            Request::ConfirmRecovery {
                new_code: Secret("1357".into()),
            },
            much_later + 2,
        );
        assert_eq!(r, Response::Done);
        assert_eq!(lockout(&s, much_later + 2), (0, None));
        assert!(matches!(
            pair(&s, "1357", much_later + 3),
            Response::Paired { .. }
        ));
    }

    #[test]
    fn confirmation_window_expires() {
        let car = Car::new();
        let s = car.open();
        assert!(matches!(pair(&s, CODE, T0), Response::Paired { .. }));
        // Confirming with nothing armed.
        let r = s.handle_at(
            Request::ConfirmRecovery {
                new_code: Secret("1357".into()),
            },
            T0,
        );
        assert_eq!(error_of(&r).0, "security.no_pending_reset");
        let r = s.handle_at(
            Request::ArmRecovery {
                authorization: car.auth(T0),
            },
            T0,
        );
        assert_eq!(
            r,
            Response::RecoveryArmed {
                confirm_by: T0 + 60
            }
        );
        // Armed state is persisted (a restart keeps it) and shown in the status.
        drop(s);
        let s = car.open();
        match s.handle_at(Request::Status, T0 + 1) {
            Response::Status { components, .. } => assert!(
                components.contains(&("recovery".into(), format!("armed confirm_by={}", T0 + 60))),
                "{components:?}"
            ),
            other => panic!("{other:?}"),
        }
        // A weak code is refused and the reset stays armed.
        let weak = s.handle_at(
            Request::ConfirmRecovery {
                new_code: Secret("1234".into()),
            },
            T0 + 2,
        );
        assert_eq!(error_of(&weak).0, "security.weak_code");
        // One second past the window: refused, and the old code still pairs.
        let late = s.handle_at(
            Request::ConfirmRecovery {
                new_code: Secret("1357".into()),
            },
            T0 + 61,
        );
        assert_eq!(error_of(&late).0, "security.no_pending_reset");
        assert!(matches!(pair(&s, CODE, T0 + 62), Response::Paired { .. }));
        let audit = audit_kinds(&s);
        assert!(
            audit.iter().any(|(k, _)| k == "recovery.armed"),
            "{audit:?}"
        );
        assert!(
            audit
                .iter()
                .any(|(k, d)| k == "recovery.refused" && d == "confirm fault=no_pending_reset"),
            "{audit:?}"
        );
    }

    fn credential(r: Response) -> telematics_security::ExportedCredential {
        let Response::Paired { credential, .. } = r else {
            panic!("pairing: {r:?}")
        };
        telematics_security::ExportedCredential::from_text(&credential).expect("cred")
    }

    fn command(
        cred: &telematics_security::ExportedCredential,
        counter: u64,
        action: Action,
        code: &str,
    ) -> Vec<u8> {
        let req = telematics_security::client::CommandRequest {
            command_id: CommandId([counter as u8; 16]),
            action,
            counter,
            issued_at: T0,
            expires_at: T0 + 30,
            code: code.into(),
        };
        telematics_security::client::build_command(cred, &req, &SystemRandom::new())
            .expect("command")
    }

    fn revoked_ids(s: &SecurityService) -> Vec<String> {
        match s.handle_at(Request::ListDevices, T0) {
            Response::Devices { devices } => devices
                .into_iter()
                .filter(|d| d.revoked)
                .map(|d| d.device_id)
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_remote_revocation_is_durable_at_once_audited_and_single_use() {
        let car = Car::new();
        let s = car.open();
        let phone = credential(pair(&s, CODE, T0));
        let kid = phone.key_id.0.clone();
        let rev = car.revoke_remotely(&s, &kid, T0 + 1);
        let topic = telematics_link::topics::devices_revoke(VIN);
        drop(s);
        // Durable: a restart finds it revoked, and its commands are refused `revoked_key`.
        let s = car.open();
        assert_eq!(revoked_ids(&s), vec![hex::encode(&kid)]);
        assert!(matches!(
            s.verify(&command(&phone, 1, Action::Unlock, CODE), T0 + 2),
            Verification::Rejected {
                refusal: Refusal::Fault(Fault::RevokedKey),
                command_id: None,
                ..
            }
        ));
        // Replayed: refused and audited, nothing changes.
        assert_eq!(
            s.devices_message(&topic, &rev, T0 + 3),
            DevicesMessage::Handled
        );
        s.flush_refusals(T0 + 3, true);
        let audit = audit_kinds(&s);
        assert!(
            audit
                .iter()
                .any(|(k, d)| k == "device.revoked" && d.contains("by=backend")),
            "{audit:?}"
        );
        assert!(
            audit
                .iter()
                .any(|(k, d)| k == "revocation.rejected" && d.contains("fault=nonce_reused")),
            "{audit:?}"
        );
        assert_eq!(
            s.devices_message(&telematics_link::topics::commands(VIN), &rev, T0),
            DevicesMessage::NotDevices
        );
    }

    #[test]
    fn revoke_device_needs_the_code_and_revokes_only_its_target() {
        let car = Car::new();
        let s = car.open();
        let a = credential(pair(&s, CODE, T0));
        let b = credential(pair(&s, CODE, T0));
        let target = || Action::RevokeDevice {
            key_id: b.key_id.clone(),
        };
        assert!(matches!(
            s.verify(&command(&a, 1, target(), "9753"), T0),
            Verification::Rejected {
                refusal: Refusal::Fault(Fault::WrongCode),
                ..
            }
        ));
        assert!(revoked_ids(&s).is_empty());
        assert!(matches!(
            s.verify(&command(&a, 2, target(), CODE), T0),
            Verification::Done
        ));
        assert_eq!(revoked_ids(&s), vec![hex::encode(&b.key_id.0)]);
        // B is refused from now on; A keeps working.
        assert!(matches!(
            s.verify(&command(&b, 1, Action::Lock, CODE), T0),
            Verification::Rejected {
                refusal: Refusal::Fault(Fault::RevokedKey),
                ..
            }
        ));
        assert!(matches!(
            s.verify(&command(&a, 3, Action::Lock, CODE), T0),
            Verification::Verified(_)
        ));
        // Again: the target is no longer active.
        assert!(matches!(
            s.verify(&command(&a, 4, target(), CODE), T0),
            Verification::Done
        ));
        let audit = audit_kinds(&s);
        assert!(
            audit
                .iter()
                .any(|(k, d)| k == "device.revoke_refused" && d.contains("fault=revoked_key")),
            "{audit:?}"
        );
    }

    #[test]
    fn every_security_decision_reports_its_event_once_persisted_and_none_carries_a_secret() {
        let car = Car::new();
        let (s, mut rx) = car.open_with_events();
        let a = credential(pair(&s, CODE, T0));
        let b = credential(pair(&s, CODE, T0));
        // A wrong code in the car, then one over MQTT: one vehicle-wide count.
        assert_eq!(error_of(&pair(&s, "9999", T0 + 1)).0, "security.wrong_code");
        assert!(matches!(
            s.verify(&command(&a, 1, Action::Unlock, "9753"), T0 + 2),
            Verification::Rejected {
                refusal: Refusal::Fault(Fault::WrongCode),
                ..
            }
        ));
        // B revoked by A's command, C paired then revoked by the back end, A in the car.
        let by_a = Action::RevokeDevice {
            key_id: b.key_id.clone(),
        };
        assert!(matches!(
            s.verify(&command(&a, 2, by_a, CODE), T0 + 3),
            Verification::Done
        ));
        let c = credential(pair(&s, CODE, T0 + 4));
        car.revoke_remotely(&s, &c.key_id.0, T0 + 5);
        let admin_revoke = Request::RevokeDevice {
            device_id: hex::encode(&a.key_id.0),
        };
        assert_eq!(s.handle_at(admin_revoke, T0 + 6), Response::Done);
        // Recovery armed with the back end's authorization, confirmed in the car.
        let armed = s.handle_at(
            Request::ArmRecovery {
                authorization: car.auth(T0 + 7),
            },
            T0 + 7,
        );
        assert_eq!(
            armed,
            Response::RecoveryArmed {
                confirm_by: T0 + 67
            }
        );
        let confirm = Request::ConfirmRecovery {
            new_code: Secret("1357".into()),
        };
        assert_eq!(s.handle_at(confirm, T0 + 8), Response::Done);
        // A refusal changes nothing and reports nothing (nothing armed any more).
        let again = Request::ConfirmRecovery {
            new_code: Secret("1357".into()),
        };
        assert_eq!(
            error_of(&s.handle_at(again, T0 + 9)).0,
            "security.no_pending_reset"
        );

        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        let id = |c: &telematics_security::ExportedCredential| c.key_id.0.clone();
        assert_eq!(
            events,
            vec![
                SecurityEvent::DevicePaired { device: id(&a) },
                SecurityEvent::DevicePaired { device: id(&b) },
                SecurityEvent::WrongCode {
                    failures: 1,
                    device: None
                },
                SecurityEvent::WrongCode {
                    failures: 2,
                    device: Some(id(&a))
                },
                SecurityEvent::DeviceRevoked { device: id(&b) },
                SecurityEvent::DevicePaired { device: id(&c) },
                SecurityEvent::DeviceRevoked { device: id(&c) },
                SecurityEvent::DeviceRevoked { device: id(&a) },
                SecurityEvent::RecoveryArmed {
                    confirm_by_s: T0 + 67
                },
                SecurityEvent::RecoveryConfirmed,
            ]
        );
        // What reaches the owner: key ids, never a code or a device secret.
        for e in &events {
            let bytes = e.alert(VIN, T0 * 1000).encode().expect("alert");
            for secret in [&a.secret[..], &b.secret[..], &c.secret[..]] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret));
            }
            for code in [CODE, "9999", "9753", "1357"] {
                assert!(!bytes.windows(4).any(|w| w == code.as_bytes()), "{e:?}");
            }
        }
    }

    #[test]
    fn a_refused_operation_reports_no_event() {
        let car = Car::new();
        let (s, mut rx) = car.open_with_events();
        assert!(matches!(pair(&s, CODE, T0), Response::Paired { .. }));
        assert!(rx.try_recv().is_ok(), "the first pairing");
        // A malformed authorization arms nothing.
        let bad = Request::ArmRecovery {
            authorization: vec![0xA0],
        };
        assert!(matches!(s.handle_at(bad, T0), Response::Error { .. }));
        // An unknown device id revokes nothing.
        let unknown = Request::RevokeDevice {
            device_id: "00".repeat(8),
        };
        assert!(matches!(s.handle_at(unknown, T0), Response::Error { .. }));
        assert!(rx.try_recv().is_err(), "no event for a refusal");
    }

    #[test]
    fn bad_device_name_is_refused_before_any_code_check() {
        let car = Car::new();
        let s = car.open();
        assert!(matches!(pair(&s, CODE, T0), Response::Paired { .. }));
        let r = s.handle_at(
            Request::Pair {
                device_name: String::new(),
                code: Secret("9999".into()),
            },
            T0,
        );
        assert_eq!(error_of(&r).0, "security.invalid");
        assert_eq!(lockout(&s, T0).0, 0);
    }
}
