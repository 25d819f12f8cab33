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
    /// An admin-protocol frame was malformed.
    #[error("admin frame error: {0}")]
    Frame(String),
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
}

impl DaemonError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::ConfigRead { .. } => "config.read",
            DaemonError::ConfigParse(_) => "config.parse",
            DaemonError::ConfigInvalid(_) => "config.invalid",
            DaemonError::MissingFiles(_) => "config.missing_files",
            DaemonError::Frame(_) => "admin.frame",
            DaemonError::Unauthorized { .. } => "admin.unauthorized",
            DaemonError::Io(_) => "io",
        }
    }
}
