//! The profile's one error type.

/// Why a vehicle profile was refused. Every variant names the profile key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// Not TOML, or a key of the wrong type or unknown.
    #[error("profile: {0}")]
    Toml(String),
    /// A key whose value does not fit the DBC, the mapping or the executor.
    #[error("{key}: {message}")]
    Invalid {
        /// The profile key (`actions.unlock.message`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read (only [`crate::VehicleProfile::from_path`]).
    #[error("profile: cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
}

impl ProfileError {
    /// Stable code (`profile.invalid`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            ProfileError::Toml(_) => "profile.toml",
            ProfileError::Invalid { .. } => "profile.invalid",
            ProfileError::Read { .. } => "profile.read",
        }
    }

    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}
