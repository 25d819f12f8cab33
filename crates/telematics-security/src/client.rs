//! Client side (owner's phone / telematicsctl / back end): build command envelopes, sign reset
//! authorizations and device revocations, parse session info.

use ring::rand::SecureRandom;

use crate::envelope::{CommandPayload, IV_LEN, seal_envelope};
use crate::error::Error;
use crate::state::ExportedCredential;
use crate::{Action, CommandId};

pub use crate::recovery::ResetAuthorization;
pub use crate::revocation::DeviceRevocation;
pub use crate::session::{LockoutReport, SessionInfo, SessionRequest};

/// What to send.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// 128-bit command id (random per command).
    pub command_id: CommandId,
    /// Action.
    pub action: Action,
    /// Counter; must exceed the last accepted one (see session info).
    pub counter: u64,
    /// Issued-at, Unix seconds.
    pub issued_at: u64,
    /// Expires-at, Unix seconds (vehicle enforces a bounded TTL).
    pub expires_at: u64,
    /// The owner's security code.
    pub code: String,
}

impl std::fmt::Debug for CommandRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRequest")
            .field("command_id", &self.command_id)
            .field("action", &self.action)
            .field("counter", &self.counter)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Build a command envelope (tagged COSE_Encrypt0) with a fresh random IV.
pub fn build_command(
    cred: &ExportedCredential,
    req: &CommandRequest,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv).map_err(|_| Error::Rng)?;
    let payload = CommandPayload {
        vin: cred.vin.clone(),
        command_id: req.command_id,
        action: req.action.clone(),
        counter: req.counter,
        issued_at: req.issued_at,
        expires_at: req.expires_at,
        code: req.code.clone(),
    };
    seal_envelope(&cred.key_id.0, &cred.secret, &payload, iv)
}

/// Back end: build and sign a reset authorization (tagged COSE_Sign1) for `vin` with a fresh
/// 16-byte random nonce.
pub fn sign_reset(
    backend_key: &ring::signature::Ed25519KeyPair,
    vin: &str,
    issued_at: u64,
    expires_at: u64,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    let mut nonce = vec![0u8; 16];
    rng.fill(&mut nonce).map_err(|_| Error::Rng)?;
    ResetAuthorization {
        vin: vin.to_owned(),
        nonce,
        issued_at,
        expires_at,
    }
    .sign(backend_key)
}

/// Back end: build and sign a device revocation (tagged COSE_Sign1, docs/protocol.md §10) of
/// `key_id` for `vin` with a fresh 16-byte random nonce; publish it on
/// `vehicles/{VIN}/devices/revoke`.
pub fn sign_revocation(
    backend_key: &ring::signature::Ed25519KeyPair,
    vin: &str,
    key_id: &[u8],
    issued_at: u64,
    expires_at: u64,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    DeviceRevocation::new(vin, key_id, issued_at, expires_at, rng)?.sign(backend_key)
}

/// Verify and parse a session-info reply for this credential.
pub fn parse_session_info(cred: &ExportedCredential, bytes: &[u8]) -> Result<SessionInfo, Error> {
    crate::session::parse_session_info(&cred.secret, &cred.key_id.0, &cred.vin, bytes)
}

/// Build a session-info request for this credential (sent on `vehicles/{VIN}/session/request`);
/// `challenge` (at most 32 bytes, random per request) comes back in the reply's echo.
pub fn session_request(cred: &ExportedCredential, challenge: &[u8]) -> Result<Vec<u8>, Error> {
    if challenge.len() > crate::session::MAX_CHALLENGE_LEN {
        return Err(Error::Invalid("challenge longer than 32 bytes"));
    }
    Ok(SessionRequest {
        key_id: cred.key_id.0.clone(),
        challenge: challenge.to_vec(),
    }
    .to_cbor())
}
