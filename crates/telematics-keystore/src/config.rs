//! The `[keys]` configuration: which backend holds the identity key and the sealing key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{KeyError, Result};

/// Where the keys live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// PEM key file(s) and a sealing key file (development default).
    #[default]
    Files,
    /// A PKCS#11 token (HSM, secure element, SoftHSM2 in tests).
    Pkcs11,
}

/// Where a small secret (PIN, file sealing key) is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// A file (mode 0600/0640, outside the state directory).
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=` or
    /// `LoadCredentialEncrypted=` in the unit).
    Credential(String),
}

impl SecretSource {
    /// The path it resolves to now (the credential directory is read from the environment).
    pub fn path(&self) -> Result<PathBuf> {
        match self {
            SecretSource::File(p) => Ok(p.clone()),
            SecretSource::Credential(name) => {
                if name.is_empty() || name.contains('/') {
                    return Err(KeyError::Config(format!(
                        "credential name {name:?} must be a plain file name"
                    )));
                }
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    KeyError::SecretMissing {
                        what: "secret",
                        source_desc: format!("credential {name:?}"),
                        detail: "CREDENTIALS_DIRECTORY is not set (not started by systemd \
                                 with LoadCredential=/LoadCredentialEncrypted=)"
                            .into(),
                    }
                })?;
                Ok(PathBuf::from(dir).join(name))
            }
        }
    }

    /// Human description for errors (`file /x` or `credential "name"`).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Credential(n) => format!("credential {n:?}"),
        }
    }

    /// Reads the secret's bytes. The error names the source, never the content.
    pub fn read(&self, what: &'static str) -> Result<Vec<u8>> {
        let path = self.path().map_err(|e| match e {
            KeyError::SecretMissing {
                source_desc,
                detail,
                ..
            } => KeyError::SecretMissing {
                what,
                source_desc,
                detail,
            },
            other => other,
        })?;
        std::fs::read(&path).map_err(|e| KeyError::SecretMissing {
            what,
            source_desc: format!("{} ({})", self.describe(), path.display()),
            detail: e.to_string(),
        })
    }
}

/// PKCS#11 token settings (`[keys.pkcs11]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so` for SoftHSM2).
    pub module: PathBuf,
    /// Label of the token (`softhsm2-util --init-token --label`).
    pub token_label: String,
    /// User PIN source.
    pub pin: Option<SecretSource>,
    /// Label of the identity key pair (EC P-256); the renewal candidate is `<label>.next`.
    pub key_label: String,
    /// Label of the AES-256 key that seals the security state.
    pub seal_key_label: String,
}

impl Default for Pkcs11Config {
    fn default() -> Self {
        Pkcs11Config {
            module: PathBuf::new(),
            token_label: "telematicsd".into(),
            pin: None,
            key_label: "telematicsd-identity".into(),
            seal_key_label: "telematicsd-seal".into(),
        }
    }
}

/// `[keys]`: the backend and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// `files` (default) or `pkcs11`.
    pub backend: Backend,
    /// Files backend: the 32-byte AES-256 key sealing the security state (a file or a systemd
    /// credential, outside the state directory). Unset: the state is stored in clear
    /// (development only; doctor warns).
    pub seal_key: Option<SecretSource>,
    /// PKCS#11 backend settings.
    pub pkcs11: Pkcs11Config,
    /// Seal a security state found in clear while a sealing key is configured (the one-time
    /// migration of a state written before sealing). Off by default: otherwise a clear record
    /// is refused (`keys.unseal_failed`), because whoever can write the flash could plant one
    /// with a device secret and a code verifier of their own. Set it for the first start after
    /// adding the key, then remove it (docs/protocol.md, migration).
    pub migrate_clear_state: bool,
}

impl KeysConfig {
    /// Checks the settings that need no I/O; messages name the key.
    pub fn validate(&self) -> Result<()> {
        match self.backend {
            Backend::Files => Ok(()),
            Backend::Pkcs11 => {
                let p = &self.pkcs11;
                if p.module.as_os_str().is_empty() {
                    return Err(KeyError::Config(
                        "keys.pkcs11.module must name the PKCS#11 module".into(),
                    ));
                }
                if p.token_label.is_empty() || p.key_label.is_empty() || p.seal_key_label.is_empty()
                {
                    return Err(KeyError::Config(
                        "keys.pkcs11.token_label, key_label and seal_key_label must not be empty"
                            .into(),
                    ));
                }
                if p.pin.is_none() {
                    return Err(KeyError::Config(
                        "keys.pkcs11.pin must be set ({ file = \"...\" } or \
                         { credential = \"...\" })"
                            .into(),
                    ));
                }
                if self.seal_key.is_some() {
                    return Err(KeyError::Config(
                        "keys.seal_key is for the files backend; with pkcs11 the sealing key \
                         is keys.pkcs11.seal_key_label in the token"
                            .into(),
                    ));
                }
                Ok(())
            }
        }
    }
}
