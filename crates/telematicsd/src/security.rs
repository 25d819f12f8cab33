//! The daemon's security service: the persisted [`SecurityState`], the two-phase command
//! verification with the persistence invariant of docs/protocol.md §6, the audit trail, and the
//! admin operations of the head unit (pair, list/revoke devices, recovery, lockout, audit).
//!
//! All methods are blocking (PBKDF2, fsync); the runtime calls them from `spawn_blocking`.
//! One mutex serialises every code check and every state change, so parallel commands cannot
//! multiply guesses and every persisted state is the result of a complete operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::failpoint::{self, Crash};

/// KV key of the persisted security state.
pub const STATE_KEY: &str = "security/state";
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

/// Unix time in seconds (the security layer compares with the sender's wall clock).
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
        /// Detail for the result: `retry_after_s=<n>` / `until_recovery` for `locked_out`.
        detail: Option<String>,
        /// An authenticated session info for the sender (after `replay`, `expired`,
        /// `not_yet_valid` and `locked_out`; rate limited per device), to publish on
        /// `vehicles/{vin}/session`.
        session_info: Option<Vec<u8>>,
    },
}

/// Where an aggregated refusal came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A command envelope on `vehicles/{vin}/commands`.
    Command,
    /// A session request on `vehicles/{vin}/session/request`.
    SessionRequest,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Command => "command",
            Source::SessionRequest => "session_request",
        }
    }

    /// Audit kind of an individually recorded refusal from this source.
    fn audit_kind(self) -> &'static str {
        match self {
            Source::Command => "command.rejected",
            Source::SessionRequest => "session_request.rejected",
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
    /// Lock-free copy of the persisted lockout (`0` none, `u64::MAX` until recovery, else the
    /// Unix second the wait ends), so the core loop never waits on the mutex held through
    /// PBKDF2.
    locked_until: AtomicU64,
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
        let locked_until = AtomicU64::new(lockout_snapshot(&state));
        Ok(SecurityService {
            inner: Mutex::new(Inner {
                state,
                audit_seq,
                aggregate: Aggregate::default(),
                session_sent: HashMap::new(),
            }),
            store,
            verifier,
            cfg: pcfg,
            backend_public_key,
            vin: cfg.vehicle.vin.clone(),
            rng: SystemRandom::new(),
            started: Instant::now(),
            locked_until,
        })
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
        let bytes = state
            .to_cbor()
            .map_err(|e| DaemonError::Security(format!("encode state: {e}")))?;
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
                    detail: rej.retry_after.map(retry_detail),
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
                detail: None,
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
                        detail: None,
                        session_info: None,
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
                    refusal: Refusal::Fault(fault),
                    command_id: Some(command_id),
                    detail,
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
    }

    /// `true` while remote code checks are blocked (back-off or hard lock). Lock-free: reads
    /// the snapshot of the last persisted state, never waits for a code check in progress.
    pub fn locked_out(&self, now: u64) -> bool {
        let until = self.locked_until.load(Ordering::Acquire);
        until != 0 && now < until
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

/// The lockout as one number: `0` none, `u64::MAX` until recovery, else the end of the wait.
fn lockout_snapshot(state: &SecurityState) -> u64 {
    let l = &state.lockout;
    if l.hard_locked {
        u64::MAX
    } else {
        l.locked_until.unwrap_or(0)
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
