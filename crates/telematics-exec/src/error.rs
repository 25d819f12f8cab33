//! The crate's error type.

/// Errors of the command executor. Each variant has a stable machine-readable [`code`](ExecError::code).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    /// A configuration value is invalid.
    #[error("invalid executor configuration: {0}")]
    InvalidConfig(&'static str),
}

impl ExecError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ExecError::InvalidConfig(_) => "exec_invalid_config",
        }
    }
}
