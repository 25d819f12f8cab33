//! The crate's error enum.

use std::path::Path;

/// Errors of the telematicsctl library. Each variant has a stable [`CtlError::code`].
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A file operation failed.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done (e.g. "reading credential").
        what: &'static str,
        /// The file concerned.
        path: String,
        /// The underlying error (part of the message, not a separate source, so that
        /// `{:#}` chains do not print it twice).
        error: std::io::Error,
    },
    /// The counter file holds something other than a decimal counter, or the counter is
    /// exhausted.
    #[error("counter file {path}: {why}")]
    Counter {
        /// The counter file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// TLS files or configuration (from telematics-link).
    #[error(transparent)]
    Tls(#[from] telematics_link::LinkError),
    /// The MQTT session failed (connection refused, broker error, subscription refused).
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// A security-layer operation failed (credential parsing, envelope building, signing).
    #[error(transparent)]
    Security(#[from] telematics_security::Error),
    /// A `TMRA1:` reset authorization text is malformed.
    #[error("reset authorization text: {0}")]
    ResetAuthText(&'static str),
    /// The back-end key file is unusable.
    #[error("back-end key {path}: {why}")]
    BackendKey {
        /// The key file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A CA operation failed (unusable CA files, a CSR refused, signing failed).
    #[error("ca: {0}")]
    Ca(String),
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl CtlError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CtlError::Io { .. } => "ctl.io",
            CtlError::Counter { .. } => "ctl.counter",
            CtlError::Tls(e) => e.code(),
            CtlError::Mqtt(_) => "ctl.mqtt",
            CtlError::Security(e) => e.code(),
            CtlError::ResetAuthText(_) => "ctl.reset_auth_text",
            CtlError::BackendKey { .. } => "ctl.backend_key",
            CtlError::Ca(_) => "ctl.ca",
            CtlError::Invalid(_) => "ctl.invalid",
        }
    }

    pub(crate) fn io(what: &'static str, path: &Path, error: std::io::Error) -> Self {
        CtlError::Io {
            what,
            path: path.display().to_string(),
            error,
        }
    }
}
