//! Sans-IO remote command security: pairing, COSE command envelopes, verification, lockout,
//! recovery, audit, and the client side. The normative spec is `docs/protocol.md`.
//!
//! Vehicle side, per received command:
//! 1. [`Verifier::begin`] — cheap checks; pre-counts a code failure; **persist the state**;
//! 2. [`PendingCodeCheck::finish`] — PBKDF2; on success yields the [`VerifiedCommand`];
//!    persist again. Both phases yield an [`AuditEvent`].
//!
//! In the car (admin socket), every code check counts toward the same lockout:
//! [`SecurityState::begin_code_check`] pre-counts, **persist**, [`LocalCodeCheck::finish`]
//! runs PBKDF2 and yields the [`CodeVerified`] proof that [`SecurityState::add_device`] needs.
//! Recovery is two steps: [`arm_reset`] (signed authorization, from the admin socket or later
//! from MQTT) and [`confirm_reset`] (new code in the car, within the confirmation window).
//! A lost device is revoked remotely by a back-end-signed [`DeviceRevocation`]
//! ([`apply_revocation`], at once) or by another paired device's `revoke_device` command.
//!
//! Only this crate can construct a [`VerifiedCommand`].

mod cbor;
pub mod client;
pub mod command;
pub mod envelope;
pub mod error;
pub mod recovery;
pub mod revocation;
pub mod session;
mod signed;
pub mod state;
pub mod verify;

pub use cbor::is_deterministic;
pub use command::{Action, CommandId, KeyId, VerifiedCommand};
pub use envelope::{CommandPayload, Envelope};
pub use error::{Error, Fault};
pub use recovery::{ResetAuthorization, arm_reset, confirm_reset};
pub use revocation::{DeviceRevocation, RevocationRefused, apply_revocation, revoke_active};
pub use session::{SessionInfo, SessionRequest, build_session_info};
pub use state::{
    CodeRule, CodeVerified, Config, CredentialInfo, CredentialStatus, DeviceCredential,
    ExportedCredential, LocalCodeCheck, LockoutState, PairingRecord, RetryAfter, SecurityState,
    validate_code, validate_device_name,
};
pub use verify::{AuditEvent, AuditOutcome, Finished, PendingCodeCheck, Rejection, Verifier};
