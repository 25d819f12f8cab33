//! The vehicle's mTLS identity over its lifetime: the validity of the certificate in force
//! (days left, expiry alert), and its in-band renewal (new key, CSR to the back end, the signed
//! certificate checked, proven with a second connection, committed atomically).
//!
//! Decisions are sans-IO ([`expiry`], [`renewal`], [`check`]: `now` passed in, effects
//! returned); [`store`] owns the files (generations and the commit record), [`keys`] the key
//! backend over the key store (token or files), [`csr`] the PKCS#10 request, [`driver`] is the thin tokio shell that runs them against the MQTT link.
//! See ARCHITECTURE.md "Certificate lifecycle" and docs/topics.md (`identity/*` topics).

pub mod check;
pub mod csr;
pub mod driver;
pub mod expiry;
pub mod keys;
pub mod renewal;
pub mod store;

/// Alert kind raised (at start and daily) while the certificate has `cert_warn_days` or fewer
/// left; `value` = days left (negative once expired).
pub const ALERT_CERT_EXPIRING: &str = "certificate_expiring";
/// Alert kind raised once a renewed certificate is committed; `value` = its serial (hex).
pub const ALERT_CERT_RENEWED: &str = "certificate_renewed";

/// Why a renewal step refused a certificate (or could not go on). Each has a stable
/// [`Refusal::code`], published in the renewal outcome and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a PEM X.509 certificate the daemon can read.
    Malformed,
    /// Does not chain to a pinned CA.
    Untrusted,
    /// Its `notAfter` is past.
    Expired,
    /// Its `notBefore` is in the future.
    NotYetValid,
    /// Certifies another public key than the one generated for this renewal.
    KeyMismatch,
    /// Its subject CN is not this vehicle's VIN.
    VinMismatch,
    /// Checked, but the broker did not accept a connection with it.
    ProbeFailed,
    /// No renewal is in progress: nothing to certify.
    Unexpected,
}

impl Refusal {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Malformed => "identity.malformed",
            Refusal::Untrusted => "identity.untrusted",
            Refusal::Expired => "identity.expired",
            Refusal::NotYetValid => "identity.not_yet_valid",
            Refusal::KeyMismatch => "identity.key_mismatch",
            Refusal::VinMismatch => "identity.vin_mismatch",
            Refusal::ProbeFailed => "identity.probe_failed",
            Refusal::Unexpected => "identity.unexpected",
        }
    }
}
