//! Key store of the vehicle: the mTLS identity key and the key that seals the security state
//! at rest, in one of two backends chosen by `[keys] backend`:
//!
//! * `pkcs11`: a PKCS#11 token (cryptoki). The identity key is a non-extractable EC P-256 key
//!   that signs the TLS handshake inside the token ([`KeyStore::tls_signing_key`]); the
//!   sealing key is a non-extractable AES-256 key used by CKM_AES_GCM inside the token.
//! * `files` (development default): the PEM key file of today, and a 32-byte sealing key file
//!   or systemd credential outside the state directory.
//!
//! Fail closed: a missing module, token, PIN or key is an error with a stable code
//! ([`KeyError::code`]); nothing falls back to the files backend.
//!
//! Identity slots: [`IdentitySlot::Current`] signs today's connections; certificate renewal
//! generates [`IdentitySlot::Next`], proves it, then [`KeyStore::promote`]s it.

mod config;
mod error;
mod files;
mod pkcs11;
mod seal;
mod sign;

use std::path::Path;
use std::sync::Arc;

pub use config::{Backend, KeysConfig, Pkcs11Config, SecretSource};
pub use error::{KeyError, Result};
pub use files::{new_identity_pem, signing_key_from_pem, write_new_seal_key};
pub use rustls::sign::SigningKey;
pub use rustls_pki_types::SubjectPublicKeyInfoDer;
pub use seal::{SEAL_MAGIC, SealKind, Sealer, is_sealed};
pub use sign::IdentityKey;

/// Which identity key: the one in use, or the renewal candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySlot {
    /// The key of the certificate in force.
    Current,
    /// A key generated for renewal, not yet promoted (`<label>.next` / `<key file>.next`).
    Next,
}

enum Inner {
    Files(files::Files),
    Token(Arc<pkcs11::Token>),
}

/// The opened key store.
pub struct KeyStore {
    inner: Inner,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the backend of `cfg`. `files_tls_key` is the identity key file of the files
    /// backend (the daemon's `mqtt.key`); the pkcs11 backend ignores it. With pkcs11 this loads
    /// the module, finds the token and logs in with the PIN: each failure is an error, never a
    /// fall-back to files. Keys are looked up when used.
    pub fn open(cfg: &KeysConfig, files_tls_key: &Path) -> Result<KeyStore> {
        cfg.validate()?;
        let inner = match cfg.backend {
            Backend::Files => Inner::Files(files::Files {
                tls_key: files_tls_key.to_path_buf(),
                seal_key: cfg.seal_key.clone(),
            }),
            Backend::Pkcs11 => Inner::Token(pkcs11::Token::open(&cfg.pkcs11)?),
        };
        Ok(KeyStore { inner })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Files(_) => Backend::Files,
            Inner::Token(_) => Backend::Pkcs11,
        }
    }

    /// The identity key of `slot` as a rustls signing key for the client certificate
    /// (`keys.not_found` if absent). Token keys offer only ECDSA_NISTP256_SHA256.
    pub fn tls_signing_key(&self, slot: IdentitySlot) -> Result<Arc<dyn SigningKey>> {
        match &self.inner {
            Inner::Files(f) => f.signing_key(slot),
            Inner::Token(t) => t.signing_key(slot),
        }
    }

    /// The identity key of `slot` with its public key, to sign a CSR. Must be EC P-256.
    pub fn identity(&self, slot: IdentitySlot) -> Result<IdentityKey> {
        IdentityKey::new(self.tls_signing_key(slot)?)
    }

    /// SubjectPublicKeyInfo DER of the identity key of `slot`.
    pub fn public_key(&self, slot: IdentitySlot) -> Result<SubjectPublicKeyInfoDer<'static>> {
        Ok(self.identity(slot)?.spki())
    }

    /// Generates a new EC P-256 identity key in `slot` (in the token, non-extractable; or a
    /// 0600 PEM file written atomically), replacing what was there, and returns its public key.
    pub fn generate_identity(
        &self,
        slot: IdentitySlot,
    ) -> Result<SubjectPublicKeyInfoDer<'static>> {
        match &self.inner {
            Inner::Files(f) => f.generate(slot)?,
            Inner::Token(t) => t.generate(slot)?,
        }
        self.public_key(slot)
    }

    /// Makes the [`IdentitySlot::Next`] key the current one (the old current key is deleted).
    /// Files: one atomic rename. Token: per key class current -> `.old`, next -> current,
    /// then `.old` destroyed; resumable, so a promotion interrupted between two token calls is
    /// finished by calling it again (the daemon does at start when the committed certificate
    /// certifies the `next` public key).
    pub fn promote(&self) -> Result<()> {
        match &self.inner {
            Inner::Files(f) => f.promote(),
            Inner::Token(t) => t.promote(),
        }
    }

    /// Deletes the key of `slot` (absent is fine).
    pub fn delete(&self, slot: IdentitySlot) -> Result<()> {
        match &self.inner {
            Inner::Files(f) => f.delete(slot),
            Inner::Token(t) => t.delete(slot),
        }
    }

    /// The sealer of the security state. Token: the AES key in the token (`keys.not_found`
    /// until provisioned). Files: the configured key file or credential, `None` when
    /// `keys.seal_key` is unset (state in clear: development only).
    pub fn sealer(&self) -> Result<Option<Sealer>> {
        match &self.inner {
            Inner::Files(f) => f.sealer(),
            Inner::Token(t) => t.aes_key().map(|k| Some(Sealer::from_token(k))),
        }
    }

    /// Provisioning: generates the sealing key inside the token if it does not exist yet
    /// (returns whether it did). Files backend: use [`write_new_seal_key`] instead
    /// (`keys.config` here).
    pub fn provision_seal_key(&self) -> Result<bool> {
        match &self.inner {
            Inner::Files(_) => Err(KeyError::Config(
                "the files backend's sealing key is a file: write it with write_new_seal_key \
                 or `head -c 32 /dev/urandom` (docs/deploy.md)"
                    .into(),
            )),
            Inner::Token(t) => t.provision_seal_key(),
        }
    }
}
