//! The command types shared with the executor. A [`VerifiedCommand`] can only be built inside
//! this crate, after every check of the verification pipeline passed.

use serde::{Deserialize, Serialize};

/// 128-bit command identifier chosen by the sender; the executor is idempotent on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommandId(pub [u8; 16]);

/// Identifier of a paired device credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(pub Vec<u8>);

/// A remote action with its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Lock all doors.
    Lock,
    /// Unlock all doors.
    Unlock,
    /// Remote engine start; the engine is stopped after `max_run_secs` (capped by vehicle
    /// configuration) unless a driver takes over. `None` means the configured maximum.
    EngineStart {
        /// Requested run time in seconds.
        max_run_secs: Option<u32>,
    },
    /// Stop a remotely started engine.
    EngineStop,
    /// Flash the exterior lights.
    FlashLights,
    /// Sound the horn.
    Horn,
    /// Revoke another (or this) paired device of the same car (docs/protocol.md §10). Not an
    /// actuation: the daemon's security service carries it out after verification.
    RevokeDevice {
        /// Key id of the device to revoke.
        key_id: KeyId,
    },
}

/// A command that passed every check: VIN, key, AEAD, expiry, counter, lockout and the
/// security code. The executor takes it by value; there is no public constructor.
#[derive(Debug)]
pub struct VerifiedCommand {
    pub(crate) command_id: CommandId,
    pub(crate) key_id: KeyId,
    pub(crate) action: Action,
    pub(crate) counter: u64,
    pub(crate) issued_at: u64,
    pub(crate) expires_at: u64,
}

impl VerifiedCommand {
    /// The sender's command id.
    pub fn command_id(&self) -> CommandId {
        self.command_id
    }
    /// The device credential that sent it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    /// The action to perform.
    pub fn action(&self) -> &Action {
        &self.action
    }
    /// The per-device counter value of this command.
    pub fn counter(&self) -> u64 {
        self.counter
    }
    /// Issued-at, seconds since the Unix epoch (sender's clock).
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Expires-at, seconds since the Unix epoch.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}
