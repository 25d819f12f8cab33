//! The crate's error enum and the stable verification [`Fault`] codes.

use thiserror::Error;

/// Why a received command (or reset authorization) was refused. Each variant has a stable
/// string code ([`Fault::code`]) and a stable number ([`Fault::number`]); both are part of the
/// wire/audit contract (docs/protocol.md, "Fault table") and never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// The message is larger than the configured size limit.
    TooLarge,
    /// The bytes are not a well-formed, canonical tagged COSE_Encrypt0 of this protocol.
    Decode,
    /// The message is addressed to another vehicle.
    WrongVin,
    /// No credential with this key id is paired.
    UnknownKey,
    /// The credential was revoked.
    RevokedKey,
    /// AEAD authentication failed (wrong key, tampered bytes, wrong AAD).
    Aead,
    /// The authenticated plaintext is not a valid command map.
    BadPayload,
    /// `expires_at` is in the past (beyond clock-skew tolerance).
    Expired,
    /// `issued_at` is in the future (beyond clock-skew tolerance).
    NotYetValid,
    /// `expires_at - issued_at` exceeds the maximum TTL (or is negative).
    TtlTooLong,
    /// The counter is not strictly greater than the last accepted counter of this device.
    Replay,
    /// Too many wrong codes: wait for `retry_after` (or locked until recovery).
    LockedOut,
    /// The security code is wrong.
    WrongCode,
    /// No security code is set (the vehicle is not paired).
    NotPaired,
    /// The security state changed between `begin` and `finish` (fail closed).
    StateChanged,
    /// Reset authorization: signature did not verify against the pinned back-end key.
    BadSignature,
    /// Reset authorization: nonce already used.
    NonceReused,
    /// Recovery confirmation without an armed, unexpired reset authorization.
    NoPendingReset,
}

impl Fault {
    /// All faults, in numeric order.
    pub const ALL: [Fault; 18] = [
        Fault::TooLarge,
        Fault::Decode,
        Fault::WrongVin,
        Fault::UnknownKey,
        Fault::RevokedKey,
        Fault::Aead,
        Fault::BadPayload,
        Fault::Expired,
        Fault::NotYetValid,
        Fault::TtlTooLong,
        Fault::Replay,
        Fault::LockedOut,
        Fault::WrongCode,
        Fault::NotPaired,
        Fault::StateChanged,
        Fault::BadSignature,
        Fault::NonceReused,
        Fault::NoPendingReset,
    ];

    /// Stable machine-readable string code.
    pub fn code(&self) -> &'static str {
        match self {
            Fault::TooLarge => "too_large",
            Fault::Decode => "decode",
            Fault::WrongVin => "wrong_vin",
            Fault::UnknownKey => "unknown_key",
            Fault::RevokedKey => "revoked_key",
            Fault::Aead => "aead",
            Fault::BadPayload => "bad_payload",
            Fault::Expired => "expired",
            Fault::NotYetValid => "not_yet_valid",
            Fault::TtlTooLong => "ttl_too_long",
            Fault::Replay => "replay",
            Fault::LockedOut => "locked_out",
            Fault::WrongCode => "wrong_code",
            Fault::NotPaired => "not_paired",
            Fault::StateChanged => "state_changed",
            Fault::BadSignature => "bad_signature",
            Fault::NonceReused => "nonce_reused",
            Fault::NoPendingReset => "no_pending_reset",
        }
    }

    /// Stable numeric code (0 is reserved for "ok").
    pub fn number(&self) -> u16 {
        match self {
            Fault::TooLarge => 1,
            Fault::Decode => 2,
            Fault::WrongVin => 3,
            Fault::UnknownKey => 4,
            Fault::RevokedKey => 5,
            Fault::Aead => 6,
            Fault::BadPayload => 7,
            Fault::Expired => 8,
            Fault::NotYetValid => 9,
            Fault::TtlTooLong => 10,
            Fault::Replay => 11,
            Fault::LockedOut => 12,
            Fault::WrongCode => 13,
            Fault::NotPaired => 14,
            Fault::StateChanged => 15,
            Fault::BadSignature => 16,
            Fault::NonceReused => 17,
            Fault::NoPendingReset => 18,
        }
    }
}

impl std::error::Error for Fault {}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Errors of the security crate (local operations: pairing, persistence, client side).
#[derive(Debug, Error)]
pub enum Error {
    /// The proposed security code breaks a code rule; the message names the rule.
    #[error("{0}")]
    WeakCode(crate::state::CodeRule),
    /// The PBKDF2 iteration count is below the enforced minimum.
    #[error("pbkdf2 iterations {0} below minimum {1}")]
    TooFewIterations(u32, u32),
    /// An operation needs a security code but none is set.
    #[error("no security code is set")]
    NotPaired,
    /// A security code is already set (use recovery to change it).
    #[error("a security code is already set")]
    AlreadyPaired,
    /// The security code given for a local operation is wrong.
    #[error("wrong security code")]
    WrongCode,
    /// The key id is not paired.
    #[error("unknown key id")]
    UnknownKey,
    /// The random number generator failed.
    #[error("random number generator failure")]
    Rng,
    /// CBOR/COSE encoding or decoding failed.
    #[error("encoding error: {0}")]
    Encoding(String),
    /// A received message was refused with a fault code.
    #[error("refused: {0}")]
    Fault(Fault),
    /// A parameter is invalid (e.g. TTL, VIN, name).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// An in-car code check refused by the lockout (no code check ran).
    #[error("too many wrong security codes: {0}")]
    LockedOut(crate::state::RetryAfter),
}

impl Error {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::WeakCode(_) => "weak_code",
            Error::TooFewIterations(..) => "too_few_iterations",
            Error::NotPaired => "not_paired",
            Error::AlreadyPaired => "already_paired",
            Error::WrongCode => "wrong_code",
            Error::UnknownKey => "unknown_key",
            Error::Rng => "rng",
            Error::Encoding(_) => "encoding",
            Error::Fault(f) => f.code(),
            Error::Invalid(_) => "invalid",
            Error::LockedOut(_) => "locked_out",
        }
    }
}

impl From<Fault> for Error {
    fn from(f: Fault) -> Self {
        Error::Fault(f)
    }
}
