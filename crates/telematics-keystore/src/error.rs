//! The key store's one error type, each variant with a stable code.

/// Errors of the key store. None carries a PIN, a key or a plaintext.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The `[keys]` configuration is inconsistent.
    #[error("keys.config: {0}")]
    Config(String),
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("keys.pkcs11_module: {path}: {detail}")]
    Module {
        /// Module path from the configuration.
        path: String,
        /// What the loader or C_Initialize said.
        detail: String,
    },
    /// No slot holds a token with the configured label.
    #[error("keys.token_not_found: no PKCS#11 token labelled {0:?}")]
    TokenNotFound(String),
    /// The PIN (`keys.pin_missing`) or the file sealing key (`keys.seal_key_missing`) is not
    /// where the configuration says.
    #[error("{}: {what} {source_desc}: {detail}", self.code())]
    SecretMissing {
        /// `PIN` or `sealing key`.
        what: &'static str,
        /// The file or credential it was read from.
        source_desc: String,
        /// Why it could not be read (never its content).
        detail: String,
    },
    /// C_Login refused the PIN.
    #[error("keys.login: token {token:?} refused the user PIN: {detail}")]
    Login {
        /// Token label.
        token: String,
        /// Return value of C_Login.
        detail: String,
    },
    /// A PKCS#11 call failed.
    #[error("keys.pkcs11: {op}: {detail}")]
    Pkcs11 {
        /// The operation (C_Sign, C_Encrypt, ...).
        op: &'static str,
        /// Return value.
        detail: String,
    },
    /// A key the configuration names does not exist (in the token or as a file).
    #[error("keys.not_found: {0}")]
    NotFound(String),
    /// A key file exists but cannot be read, parsed or written.
    #[error("keys.key_file: {path}: {detail}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong with it (never its content).
        detail: String,
    },
    /// The key is not an EC P-256 key usable for ECDSA_NISTP256_SHA256.
    #[error("keys.unsupported_key: {0}")]
    UnsupportedKey(String),
    /// A sealed record does not open: wrong key, tampered or swapped record.
    #[error("keys.unseal_failed: {0}")]
    Unseal(String),
    /// A record could not be sealed.
    #[error("keys.seal_failed: {0}")]
    Seal(String),
}

impl KeyError {
    /// The stable code (the prefix of the message), for doctor, check-config and alerts.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Config(_) => "keys.config",
            KeyError::Module { .. } => "keys.pkcs11_module",
            KeyError::TokenNotFound(_) => "keys.token_not_found",
            KeyError::SecretMissing { what: "PIN", .. } => "keys.pin_missing",
            KeyError::SecretMissing { .. } => "keys.seal_key_missing",
            KeyError::Login { .. } => "keys.login",
            KeyError::Pkcs11 { .. } => "keys.pkcs11",
            KeyError::NotFound(_) => "keys.not_found",
            KeyError::KeyFile { .. } => "keys.key_file",
            KeyError::UnsupportedKey(_) => "keys.unsupported_key",
            KeyError::Unseal(_) => "keys.unseal_failed",
            KeyError::Seal(_) => "keys.seal_failed",
        }
    }
}

/// Result with [`KeyError`].
pub type Result<T> = std::result::Result<T, KeyError>;
