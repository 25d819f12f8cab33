//! Persistent security state: pairing record (salt + PBKDF2 verifier), device credentials,
//! lockout counters, recovery state. The daemon persists [`SecurityState`] (CBOR via
//! [`SecurityState::to_cbor`]) durably after every call that says so.

use std::num::NonZeroU32;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::KeyId;
use crate::error::Error;

/// Default PBKDF2 iteration count.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;
/// Minimum PBKDF2 iteration count accepted by [`Config::validate`] in production.
pub const MIN_PBKDF2_ITERATIONS: u32 = 600_000;
/// Length of the per-vehicle PBKDF2 salt.
pub const SALT_LEN: usize = 16;
/// Length of a device secret.
pub const SECRET_LEN: usize = 32;
/// Length of a key id.
pub const KEY_ID_LEN: usize = 8;

/// Tunables of the verifier; loaded from the daemon config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// PBKDF2-HMAC-SHA256 iterations for new verifiers.
    pub pbkdf2_iterations: u32,
    /// Minimum iterations enforced (tests may lower it; production keeps 600 000).
    pub min_pbkdf2_iterations: u32,
    /// Maximum accepted envelope size in bytes.
    pub max_message_size: usize,
    /// Maximum `expires_at - issued_at`, seconds.
    pub max_ttl_secs: u64,
    /// Clock-skew tolerance applied to `issued_at` and `expires_at`, seconds.
    pub clock_skew_secs: u64,
    /// Consecutive wrong codes that start the back-off.
    pub lockout_threshold: u32,
    /// Consecutive wrong codes that lock until recovery.
    pub hard_limit: u32,
    /// First back-off wait, seconds; doubles with every further failure.
    pub base_wait_secs: u64,
    /// How long an armed reset stays pending waiting for in-car confirmation, seconds.
    pub reset_confirm_window_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pbkdf2_iterations: DEFAULT_PBKDF2_ITERATIONS,
            min_pbkdf2_iterations: MIN_PBKDF2_ITERATIONS,
            max_message_size: 4096,
            max_ttl_secs: 300,
            clock_skew_secs: 60,
            lockout_threshold: 3,
            hard_limit: 10,
            base_wait_secs: 30,
            reset_confirm_window_secs: 900,
        }
    }
}

impl Config {
    /// Check internal consistency (iterations >= minimum, threshold <= hard limit, ...).
    pub fn validate(&self) -> Result<(), Error> {
        if self.pbkdf2_iterations < self.min_pbkdf2_iterations || self.pbkdf2_iterations == 0 {
            return Err(Error::TooFewIterations(
                self.pbkdf2_iterations,
                self.min_pbkdf2_iterations,
            ));
        }
        if self.lockout_threshold == 0 || self.hard_limit < self.lockout_threshold {
            return Err(Error::Invalid("lockout_threshold must be 1..=hard_limit"));
        }
        if self.max_ttl_secs == 0 || self.max_message_size < 64 {
            return Err(Error::Invalid("max_ttl_secs/max_message_size too small"));
        }
        Ok(())
    }

    /// The wait imposed after `failures` consecutive wrong codes (`None`: no wait).
    /// Schedule: failures in `threshold..hard_limit` wait `base * 2^(failures - threshold)`.
    pub fn lockout_wait(&self, failures: u32) -> Option<RetryAfter> {
        if failures >= self.hard_limit {
            Some(RetryAfter::UntilRecovery)
        } else if failures >= self.lockout_threshold {
            let shift = (failures - self.lockout_threshold).min(32);
            Some(RetryAfter::Seconds(
                self.base_wait_secs.saturating_mul(1u64 << shift),
            ))
        } else {
            None
        }
    }
}

/// How long a locked-out client must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryAfter {
    /// Retry after this many seconds.
    Seconds(u64),
    /// Locked until a recovery (code reset) completes.
    UntilRecovery,
}

/// One security-code rule (docs/protocol.md §2). [`validate_code`] names the first rule a
/// code breaks; its `Display` is the message every front end shows (admin socket,
/// telematicsctl), so they all say the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeRule {
    /// 4 to 8 characters.
    Length,
    /// ASCII digits `0`–`9` only.
    DigitsOnly,
    /// Not all the same digit (`1111`).
    NotAllSame,
    /// Not a strictly ascending run of consecutive digits (`1234`), no wrap-around.
    NotAscending,
    /// Not a strictly descending run of consecutive digits (`98765`), no wrap-around.
    NotDescending,
}

impl CodeRule {
    /// Every rule, in the order [`validate_code`] checks them.
    pub const ALL: [CodeRule; 5] = [
        CodeRule::Length,
        CodeRule::DigitsOnly,
        CodeRule::NotAllSame,
        CodeRule::NotAscending,
        CodeRule::NotDescending,
    ];

    /// The rule's message, e.g. "the security code must not be all the same digit".
    pub fn message(&self) -> &'static str {
        match self {
            CodeRule::Length => "the security code must be 4 to 8 digits long",
            CodeRule::DigitsOnly => "the security code must contain only the digits 0-9",
            CodeRule::NotAllSame => "the security code must not be all the same digit",
            CodeRule::NotAscending => {
                "the security code must not be an ascending run of consecutive digits"
            }
            CodeRule::NotDescending => {
                "the security code must not be a descending run of consecutive digits"
            }
        }
    }
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryAfter::Seconds(s) => write!(f, "retry after {s} s"),
            RetryAfter::UntilRecovery => f.write_str("locked until recovery"),
        }
    }
}

impl std::fmt::Display for CodeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Check the security-code rules: 4–8 ASCII digits, not all the same digit, not a simple
/// ascending or descending run (e.g. `1234`, `98765`, wrapping not allowed). The error is
/// [`Error::WeakCode`] naming the first rule broken.
pub fn validate_code(code: &str) -> Result<(), Error> {
    let b = code.as_bytes();
    let rule = if !(4..=8).contains(&b.len()) {
        Some(CodeRule::Length)
    } else if !b.iter().all(u8::is_ascii_digit) {
        Some(CodeRule::DigitsOnly)
    } else if b.windows(2).all(|w| w[0] == w[1]) {
        Some(CodeRule::NotAllSame)
    } else if b.windows(2).all(|w| w[1] == w[0].wrapping_add(1)) {
        Some(CodeRule::NotAscending)
    } else if b.windows(2).all(|w| w[0] == w[1].wrapping_add(1)) {
        Some(CodeRule::NotDescending)
    } else {
        None
    };
    rule.map_or(Ok(()), |r| Err(Error::WeakCode(r)))
}

/// Check a device name: 1 to 64 bytes.
pub fn validate_device_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::Invalid("device name must be 1..=64 bytes"));
    }
    Ok(())
}

/// Salt + PBKDF2-HMAC-SHA256 verifier of the security code. The code itself is never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRecord {
    /// 16 random bytes.
    pub salt: [u8; SALT_LEN],
    /// PBKDF2 output (32 bytes).
    pub verifier: [u8; 32],
    /// Iteration count used for this verifier.
    pub iterations: u32,
    /// When the code was set, Unix seconds.
    pub set_at: u64,
}

impl std::fmt::Debug for PairingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingRecord")
            .field("salt", &"<redacted>")
            .field("verifier", &"<redacted>")
            .field("iterations", &self.iterations)
            .field("set_at", &self.set_at)
            .finish()
    }
}

impl PairingRecord {
    /// Create a verifier for `code` with a fresh random salt.
    pub fn new(
        code: &str,
        iterations: u32,
        rng: &dyn SecureRandom,
        now: u64,
    ) -> Result<Self, Error> {
        validate_code(code)?;
        let iters = NonZeroU32::new(iterations).ok_or(Error::TooFewIterations(0, 1))?;
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt).map_err(|_| Error::Rng)?;
        let mut verifier = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iters,
            &salt,
            code.as_bytes(),
            &mut verifier,
        );
        Ok(PairingRecord {
            salt,
            verifier,
            iterations,
            set_at: now,
        })
    }

    /// Constant-time PBKDF2 verification of `code` (ring::pbkdf2::verify).
    pub fn verify(&self, code: &str) -> bool {
        let Some(iters) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iters,
            &self.salt,
            code.as_bytes(),
            &self.verifier,
        )
        .is_ok()
    }
}

/// Status of a device credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialStatus {
    /// Usable.
    Active,
    /// Revoked by the owner at the given time.
    Revoked {
        /// Unix seconds.
        at: u64,
    },
    /// Revoked by a completed recovery (code reset) at the given time; re-pair to use again.
    VoidedByRecovery {
        /// Unix seconds.
        at: u64,
    },
}

/// A paired device: key id, 32-byte secret, name, status and the last accepted counter.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredential {
    /// Key id (8 random bytes), sent as COSE `kid`.
    pub key_id: KeyId,
    /// Device secret (HKDF input keying material).
    pub secret: [u8; SECRET_LEN],
    /// Human-readable name given at pairing.
    pub name: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Active or revoked.
    pub status: CredentialStatus,
    /// Highest counter accepted from this device (0 = none yet).
    pub last_counter: u64,
    /// When a command of this device last passed verification (Unix seconds); `None` before
    /// the first. Absent in states persisted by older versions.
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("status", &self.status)
            .field("last_counter", &self.last_counter)
            .field("last_used_at", &self.last_used_at)
            .finish()
    }
}

impl DeviceCredential {
    /// Whether the credential can send commands.
    pub fn is_active(&self) -> bool {
        self.status == CredentialStatus::Active
    }
}

/// Public view of a credential for listing (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// Key id.
    pub key_id: KeyId,
    /// Device name.
    pub name: String,
    /// Creation time.
    pub created_at: u64,
    /// Status.
    pub status: CredentialStatus,
    /// Last accepted counter.
    pub last_counter: u64,
    /// When a command of this device last passed verification (Unix seconds).
    pub last_used_at: Option<u64>,
}

/// Consecutive-failure lockout state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    /// Consecutive wrong codes (including a pre-counted, not yet finished check).
    pub consecutive_failures: u32,
    /// No code check is allowed before this time (Unix seconds).
    pub locked_until: Option<u64>,
    /// Locked until recovery (hard limit reached).
    pub hard_locked: bool,
    /// Monotonic number of pre-counted checks; ties a `PendingCodeCheck` to this state.
    pub check_seq: u64,
}

impl LockoutState {
    /// Records one more wrong code *before* the code is checked (docs/protocol.md §6):
    /// consecutive failures + 1, the wait or hard lock of the schedule, and a new check
    /// sequence number, which is returned. Shared by every code check (remote and in the car).
    pub(crate) fn precount_failure(&mut self, cfg: &Config, now: u64) -> u64 {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match cfg.lockout_wait(self.consecutive_failures) {
            Some(RetryAfter::UntilRecovery) => self.hard_locked = true,
            Some(RetryAfter::Seconds(w)) => self.locked_until = Some(now.saturating_add(w)),
            None => {}
        }
        self.check_seq = self.check_seq.wrapping_add(1);
        self.check_seq
    }

    /// Rolls a pre-counted failure back after a correct code: count 0, no wait, no hard lock.
    pub(crate) fn clear_failures(&mut self) {
        self.consecutive_failures = 0;
        self.locked_until = None;
        self.hard_locked = false;
    }
}

/// Proof that the security code was checked in the car (returned by
/// [`LocalCodeCheck::finish`], [`SecurityState::check_code`] or
/// [`SecurityState::set_initial_code`]); [`SecurityState::add_device`] requires it, so no
/// device can be paired past the lockout. Constructible only in this crate, not `Clone`: one
/// check pairs one device. It is tied to the pairing record it was checked against.
pub struct CodeVerified {
    record: PairingRecord,
}

impl std::fmt::Debug for CodeVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeVerified").finish_non_exhaustive()
    }
}

/// Phase 1 of an in-car code check passed: the attempt is **already counted as a failure** in
/// the state. Persist the state durably, then call [`finish`](Self::finish) with the code.
/// Dropping it leaves the attempt counted (fail closed), exactly like the remote
/// [`PendingCodeCheck`](crate::PendingCodeCheck).
#[must_use = "persist the state, then call finish()"]
pub struct LocalCodeCheck {
    seq: u64,
    record: PairingRecord,
}

impl std::fmt::Debug for LocalCodeCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCodeCheck")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl LocalCodeCheck {
    /// Phase 2 (after the state from [`SecurityState::begin_code_check`] was persisted):
    /// PBKDF2-verify `code` (constant time). On success the pre-counted failure is rolled back
    /// and a [`CodeVerified`] proof is returned; persist again. On `wrong_code` the state is
    /// left as phase 1 stored it (the failure stays counted). If another check began or the
    /// code was reset in between: `state_changed` (fail closed, the failure stays counted).
    pub fn finish(self, state: &mut SecurityState, code: &str) -> Result<CodeVerified, Error> {
        if state.lockout.check_seq != self.seq || state.pairing.as_ref() != Some(&self.record) {
            return Err(Error::Fault(crate::Fault::StateChanged));
        }
        if !self.record.verify(code) {
            return Err(Error::WrongCode);
        }
        state.lockout.clear_failures();
        Ok(CodeVerified {
            record: self.record,
        })
    }
}

/// An armed (verified, not yet confirmed) reset authorization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReset {
    /// Nonce of the authorization.
    pub nonce: Vec<u8>,
    /// When it was armed.
    pub armed_at: u64,
    /// Confirmation is accepted until this time.
    pub confirm_by: u64,
}

/// The whole persisted security state of one vehicle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    /// Salt + verifier; `None` until the owner sets a code in the car.
    pub pairing: Option<PairingRecord>,
    /// Paired devices (active and revoked; revoked entries keep their key id reserved).
    pub credentials: Vec<DeviceCredential>,
    /// Lockout counters.
    pub lockout: LockoutState,
    /// Armed reset authorization, if any.
    pub pending_reset: Option<PendingReset>,
    /// Used reset nonces with their expiry (pruned after expiry + skew).
    pub used_nonces: Vec<(Vec<u8>, u64)>,
    /// Incremented by every completed recovery.
    pub epoch: u32,
}

/// A credential exported for the owner's phone (shown as QR code / written to a file).
#[derive(Clone, PartialEq, Eq)]
pub struct ExportedCredential {
    /// VIN the credential belongs to.
    pub vin: String,
    /// Key id.
    pub key_id: KeyId,
    /// Device secret.
    pub secret: [u8; SECRET_LEN],
    /// Device name.
    pub name: String,
}

impl std::fmt::Debug for ExportedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedCredential")
            .field("vin", &self.vin)
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .finish()
    }
}

/// Prefix of the exported credential text form.
pub const EXPORT_PREFIX: &str = "TMDC1:";

impl ExportedCredential {
    /// CBOR map `{1: vin, 2: kid, 3: secret, 4: name}`.
    pub fn to_cbor(&self) -> Vec<u8> {
        use ciborium::Value;
        let v = Value::Map(vec![
            (Value::Integer(1.into()), Value::Text(self.vin.clone())),
            (
                Value::Integer(2.into()),
                Value::Bytes(self.key_id.0.clone()),
            ),
            (Value::Integer(3.into()), Value::Bytes(self.secret.to_vec())),
            (Value::Integer(4.into()), Value::Text(self.name.clone())),
        ]);
        crate::cbor::to_vec(&v)
    }

    /// `TMDC1:` + unpadded base64url of [`Self::to_cbor`], suitable for a QR code.
    pub fn to_text(&self) -> String {
        use base64::Engine;
        format!(
            "{EXPORT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.to_cbor())
        )
    }

    /// Parse the text form.
    pub fn from_text(s: &str) -> Result<Self, Error> {
        use base64::Engine;
        let body = s
            .trim()
            .strip_prefix(EXPORT_PREFIX)
            .ok_or(Error::Invalid("missing TMDC1: prefix"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| Error::Encoding(e.to_string()))?;
        Self::from_cbor(&bytes)
    }

    /// Parse the CBOR form.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let m =
            crate::cbor::IntMap::parse(bytes).map_err(|_| Error::Encoding("credential".into()))?;
        let bad = || Error::Encoding("credential fields".into());
        let secret: [u8; SECRET_LEN] = m.bytes(3).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        Ok(ExportedCredential {
            vin: m.text(1).ok_or_else(bad)?.to_owned(),
            key_id: KeyId(m.bytes(2).ok_or_else(bad)?.to_vec()),
            secret,
            name: m.text(4).ok_or_else(bad)?.to_owned(),
        })
    }
}

impl SecurityState {
    /// Serialize for durable storage (CBOR).
    pub fn to_cbor(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(self, &mut out).map_err(|e| Error::Encoding(e.to_string()))?;
        Ok(out)
    }

    /// Load from durable storage.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        ciborium::de::from_reader(bytes).map_err(|e| Error::Encoding(e.to_string()))
    }

    /// Whether a security code is set.
    pub fn is_paired(&self) -> bool {
        self.pairing.is_some()
    }

    /// First-time setup in the car: set the security code. Fails if a code is already set
    /// (changing it goes through recovery). There is nothing to check yet, so the returned
    /// proof lets the first device be paired with the code just set.
    pub fn set_initial_code(
        &mut self,
        cfg: &Config,
        code: &str,
        rng: &dyn SecureRandom,
        now: u64,
    ) -> Result<CodeVerified, Error> {
        cfg.validate()?;
        if self.pairing.is_some() {
            return Err(Error::AlreadyPaired);
        }
        let record = PairingRecord::new(code, cfg.pbkdf2_iterations, rng, now)?;
        self.pairing = Some(record.clone());
        let seq = self.lockout.check_seq;
        self.lockout = LockoutState {
            check_seq: seq,
            ..LockoutState::default()
        };
        Ok(CodeVerified { record })
    }

    /// Phase 1 of an in-car code check (pairing a device, any admin operation that takes the
    /// code), the same lockout as remote commands (docs/protocol.md §6, §7): refuses
    /// `not_paired` without a code and `locked_out` (with the retry-after) during a wait or a
    /// hard lock, without any code check; otherwise **pre-counts the failure** (schedule,
    /// wait, hard lock) and returns the pending check. Persist the state, then call
    /// [`LocalCodeCheck::finish`].
    pub fn begin_code_check(&mut self, cfg: &Config, now: u64) -> Result<LocalCodeCheck, Error> {
        let record = self.pairing.clone().ok_or(Error::NotPaired)?;
        if let Some(wait) = self.retry_after(now) {
            return Err(Error::LockedOut(wait));
        }
        let seq = self.lockout.precount_failure(cfg, now);
        Ok(LocalCodeCheck { seq, record })
    }

    /// Both phases of an in-car code check at once, counted like
    /// [`begin_code_check`](Self::begin_code_check) but **without a persist in between**:
    /// for callers without durable state (tests, tools). A daemon must use the two phases.
    pub fn check_code(
        &mut self,
        cfg: &Config,
        code: &str,
        now: u64,
    ) -> Result<CodeVerified, Error> {
        self.begin_code_check(cfg, now)?.finish(self, code)
    }

    /// Pair a new device after the owner's code was checked in the car (`proof`): creates a
    /// credential and returns its export. Persist the state afterwards. Fails with
    /// `state_changed` if the code was reset since the check.
    pub fn add_device(
        &mut self,
        proof: CodeVerified,
        vin: &str,
        name: &str,
        rng: &dyn SecureRandom,
        now: u64,
    ) -> Result<ExportedCredential, Error> {
        validate_device_name(name)?;
        if self.pairing.as_ref() != Some(&proof.record) {
            return Err(Error::Fault(crate::Fault::StateChanged));
        }
        let mut kid = [0u8; KEY_ID_LEN];
        // Retry on the (astronomically unlikely) collision with an existing key id; a broken
        // RNG repeating itself fails instead of looping.
        let mut attempts = 0;
        loop {
            rng.fill(&mut kid).map_err(|_| Error::Rng)?;
            if self.credential(&kid).is_none() {
                break;
            }
            attempts += 1;
            if attempts >= 8 {
                return Err(Error::Rng);
            }
        }
        let mut secret = [0u8; SECRET_LEN];
        rng.fill(&mut secret).map_err(|_| Error::Rng)?;
        let cred = DeviceCredential {
            key_id: KeyId(kid.to_vec()),
            secret,
            name: name.to_owned(),
            created_at: now,
            status: CredentialStatus::Active,
            last_counter: 0,
            last_used_at: None,
        };
        self.credentials.push(cred);
        Ok(ExportedCredential {
            vin: vin.to_owned(),
            key_id: KeyId(kid.to_vec()),
            secret,
            name: name.to_owned(),
        })
    }

    /// List paired devices without secrets.
    pub fn list_devices(&self) -> Vec<CredentialInfo> {
        self.credentials
            .iter()
            .map(|c| CredentialInfo {
                key_id: c.key_id.clone(),
                name: c.name.clone(),
                created_at: c.created_at,
                status: c.status,
                last_counter: c.last_counter,
                last_used_at: c.last_used_at,
            })
            .collect()
    }

    /// Revoke a device; its key id stays reserved and is refused with `revoked_key`.
    pub fn revoke_device(&mut self, key_id: &[u8], now: u64) -> Result<(), Error> {
        let c = self
            .credentials
            .iter_mut()
            .find(|c| c.key_id.0 == key_id)
            .ok_or(Error::UnknownKey)?;
        if c.is_active() {
            c.status = CredentialStatus::Revoked { at: now };
        }
        Ok(())
    }

    /// Look up a credential by key id.
    pub fn credential(&self, key_id: &[u8]) -> Option<&DeviceCredential> {
        self.credentials.iter().find(|c| c.key_id.0 == key_id)
    }

    pub(crate) fn credential_mut(&mut self, key_id: &[u8]) -> Option<&mut DeviceCredential> {
        self.credentials.iter_mut().find(|c| c.key_id.0 == key_id)
    }

    /// When a code check is allowed again (`None`: now).
    pub fn retry_after(&self, now: u64) -> Option<RetryAfter> {
        if self.lockout.hard_locked {
            return Some(RetryAfter::UntilRecovery);
        }
        match self.lockout.locked_until {
            Some(t) if t > now => Some(RetryAfter::Seconds(t - now)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;

    const CODE: &str = "2580";
    const NOW: u64 = 1_800_000_000;

    fn cfg() -> Config {
        Config {
            pbkdf2_iterations: 1000,
            min_pbkdf2_iterations: 1000,
            ..Config::default()
        }
    }

    fn paired() -> SecurityState {
        let mut st = SecurityState::default();
        let _first = st
            .set_initial_code(&cfg(), CODE, &SystemRandom::new(), NOW - 10)
            .unwrap();
        st
    }

    #[test]
    fn local_check_precounts_before_pbkdf2_and_rolls_back_on_success() {
        let mut st = paired();
        let check = st.begin_code_check(&cfg(), NOW).unwrap();
        // What the daemon persists between the phases already counts the attempt.
        assert_eq!(st.lockout.consecutive_failures, 1);
        let persisted = SecurityState::from_cbor(&st.to_cbor().unwrap()).unwrap();
        assert_eq!(persisted.lockout.consecutive_failures, 1);
        check.finish(&mut st, CODE).unwrap();
        assert_eq!(
            st.lockout,
            LockoutState {
                check_seq: st.lockout.check_seq,
                ..LockoutState::default()
            }
        );
    }

    #[test]
    fn dropped_local_check_stays_counted() {
        let mut st = paired();
        let check = st.begin_code_check(&cfg(), NOW).unwrap();
        drop(check);
        assert_eq!(st.lockout.consecutive_failures, 1);
    }

    #[test]
    fn local_wrong_codes_follow_the_remote_schedule_up_to_the_hard_limit() {
        let c = cfg();
        let mut st = paired();
        let mut now = NOW;
        for f in 1..=c.hard_limit {
            let e = st.check_code(&c, "9999", now).unwrap_err();
            assert_eq!(e.code(), "wrong_code", "attempt {f}");
            assert_eq!(st.lockout.consecutive_failures, f);
            assert_eq!(st.retry_after(now), c.lockout_wait(f));
            // During a wait even the right code is refused, without a check and uncounted.
            if let Some(RetryAfter::Seconds(w)) = c.lockout_wait(f) {
                let e = st.check_code(&c, CODE, now + w - 1).unwrap_err();
                assert!(
                    matches!(e, Error::LockedOut(RetryAfter::Seconds(1))),
                    "{e:?}"
                );
                assert_eq!(e.code(), "locked_out");
                assert_eq!(st.lockout.consecutive_failures, f, "not counted");
                now += w;
            }
        }
        assert!(st.lockout.hard_locked);
        // Hard limit: the right code, much later, is still refused until recovery.
        let e = st.check_code(&c, CODE, now + 10_000_000).unwrap_err();
        assert!(
            matches!(e, Error::LockedOut(RetryAfter::UntilRecovery)),
            "{e:?}"
        );
        assert_eq!(st.lockout.consecutive_failures, c.hard_limit);
    }

    #[test]
    fn local_and_remote_share_one_counter() {
        // 2 wrong in the car + the threshold is 3: the next failure anywhere starts the wait.
        let c = cfg();
        let mut st = paired();
        st.check_code(&c, "9999", NOW).unwrap_err();
        st.check_code(&c, "9999", NOW).unwrap_err();
        let seq = st.lockout.precount_failure(&c, NOW);
        assert_eq!(seq, st.lockout.check_seq);
        assert_eq!(
            st.retry_after(NOW),
            Some(RetryAfter::Seconds(c.base_wait_secs))
        );
    }

    #[test]
    fn interleaved_check_or_code_reset_fails_closed() {
        let c = cfg();
        let mut st = paired();
        let first = st.begin_code_check(&c, NOW).unwrap();
        // Another check (e.g. a remote command) began in between.
        let _second = st.lockout.precount_failure(&c, NOW);
        assert_eq!(
            first.finish(&mut st, CODE).unwrap_err().code(),
            "state_changed"
        );
        assert_eq!(st.lockout.consecutive_failures, 2, "both stay counted");
        // A proof from before a code reset pairs nothing.
        let mut st = paired();
        let proof = st.check_code(&c, CODE, NOW).unwrap();
        st.pairing = Some(PairingRecord::new("4826", 1000, &SystemRandom::new(), NOW).unwrap());
        assert_eq!(
            st.add_device(proof, "WBA3A5C51CF256985", "p", &SystemRandom::new(), NOW)
                .unwrap_err()
                .code(),
            "state_changed"
        );
        assert!(st.credentials.is_empty());
    }

    #[test]
    fn not_paired_has_nothing_to_check() {
        let mut st = SecurityState::default();
        assert_eq!(
            st.begin_code_check(&cfg(), NOW).unwrap_err().code(),
            "not_paired"
        );
        assert_eq!(st.lockout, LockoutState::default());
    }
}
