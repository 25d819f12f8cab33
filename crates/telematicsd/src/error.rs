//! The daemon library's error type.

use std::path::PathBuf;

/// Errors of the telematicsd library. Every variant has a stable
/// machine-readable [`code`](DaemonError::code).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration could not be parsed (syntax, unknown key, wrong type).
    #[error("config parse error: {0}")]
    ConfigParse(String),
    /// The configuration parsed but failed validation; one message per bad key.
    #[error("invalid config:\n  {}", .0.join("\n  "))]
    ConfigInvalid(Vec<String>),
    /// A file required at startup (certificate, key, CA, pairing state…) is missing.
    #[error("required file missing:\n  {}", .0.join("\n  "))]
    MissingFiles(Vec<String>),
    /// The admin protocol failed (malformed frame, socket I/O); codes from
    /// [`telematics_admin::AdminError::code`].
    #[error(transparent)]
    Admin(#[from] telematics_admin::AdminError),
    /// The admin peer is not authorized.
    #[error("admin peer not authorized: uid {uid} gid {gid}")]
    Unauthorized {
        /// Peer user id.
        uid: u32,
        /// Peer primary group id.
        gid: u32,
    },
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Security configuration or key material is unusable (fail closed).
    #[error("{0}")]
    Security(String),
    /// Persisted state exists but does not decode (fail closed: never replaced by defaults).
    #[error("state corrupted: {0}")]
    StateCorrupted(String),
    /// The durable store failed (open, corrupted file, write).
    #[error("store: {0}")]
    Store(#[from] telematics_store::StoreError),
    /// The vehicle model (DBC, VSS mapping) or the CAN interface is unusable.
    #[error("can: {0}")]
    Can(String),
    /// A durable write failed at run time (disk full, I/O error): the daemon stops.
    #[error("store: {0}")]
    StoreFailed(String),
    /// The command executor's configuration is unusable.
    #[error("exec: {0}")]
    Exec(String),
    /// The telemetry schedule or alert rules are unusable.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// A command journal entry or the run timer could not be encoded or decoded.
    #[error("journal: {0}")]
    Journal(String),
    /// A task of the runtime panicked or was cancelled.
    #[error("task failed: {0}")]
    Task(String),
    /// The MQTT link could not be configured (TLS files, topics).
    #[error("mqtt: {0}")]
    Link(String),
    /// An identity file (renewed key, certificate, commit record) could not be read or
    /// written.
    #[error("identity: {0}")]
    Identity(String),
    /// The key store refused: module, token, PIN, key or sealed state (fail closed).
    #[error(transparent)]
    Keys(#[from] telematics_keystore::KeyError),
}

impl DaemonError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::ConfigRead { .. } => "config.read",
            DaemonError::ConfigParse(_) => "config.parse",
            DaemonError::ConfigInvalid(_) => "config.invalid",
            DaemonError::MissingFiles(_) => "config.missing_files",
            DaemonError::Admin(e) => e.code(),
            DaemonError::Unauthorized { .. } => "admin.unauthorized",
            DaemonError::Io(_) => "io",
            DaemonError::Security(_) => "security.config",
            DaemonError::StateCorrupted(_) => "state.corrupted",
            DaemonError::Store(e) => e.code(),
            DaemonError::Can(_) => "can.setup",
            DaemonError::Link(_) => "mqtt.setup",
            DaemonError::Identity(_) => "identity.store",
            DaemonError::StoreFailed(_) => "store.write_failed",
            DaemonError::Exec(_) => "exec.config",
            DaemonError::Telemetry(_) => "telemetry.config",
            DaemonError::Journal(_) => "journal.encoding",
            DaemonError::Task(_) => "runtime.task_failed",
            DaemonError::Keys(e) => e.code(),
        }
    }
}
