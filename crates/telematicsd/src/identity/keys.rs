//! The key backend of a renewal over the key store of `[keys]` (telematics-keystore): where
//! the new identity key is generated, how it signs the CSR ([`super::csr`], no certificate
//! generator linked), which key the probe and the link then use, and its promotion.
//!
//! * files: the new key is the P-256 PKCS#8 PEM file `gen-<n>/key.pem` (0600) of the
//!   generation directory, written by the key store's files backend; the link loads it as a
//!   file with the generation's certificate. Nothing to promote: the commit record selects it.
//! * pkcs11: the new key is generated non-extractable in the token's [`IdentitySlot::Next`]
//!   slot; the probe signs with it, and once the commit record names the generation it is
//!   promoted to [`IdentitySlot::Current`], the key the link signs with. A crash between the
//!   commit and the promotion is finished at the next start ([`KeyBackend::finish_promotion`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use telematics_keystore::{
    Backend, IdentityKey, IdentitySlot, KeyError, KeyStore, KeysConfig, SigningKey,
};

use crate::error::DaemonError;

/// Generates a generation's key, signs its CSR and names the keys the link uses.
pub trait KeyBackend: Send + Sync {
    /// Generates a new EC P-256 key for the generation directory `dir`, durable when this
    /// returns (a partial earlier attempt is replaced).
    fn generate(&self, dir: &Path) -> Result<(), DaemonError>;
    /// Whether `dir`'s key exists (a renewal to resume).
    fn exists(&self, dir: &Path) -> bool;
    /// The DER `SubjectPublicKeyInfo` of `dir`'s key.
    fn public_key(&self, dir: &Path) -> Result<Vec<u8>, DaemonError>;
    /// A PEM PKCS#10 CSR for subject `CN = cn`, signed with `dir`'s key.
    fn csr(&self, dir: &Path, cn: &str) -> Result<String, DaemonError>;
    /// The key file the TLS client loads for this generation (unused when a signing key is
    /// given: token).
    fn tls_key_file(&self, dir: &Path) -> PathBuf;
    /// The signing key of `dir`'s (not yet committed) key for the probe connection, `None`
    /// when it is the file [`KeyBackend::tls_key_file`].
    fn candidate_key(&self, dir: &Path) -> Result<Option<Arc<dyn SigningKey>>, DaemonError>;
    /// The signing key of the identity in force, `None` when it is the generation's key file.
    fn current_key(&self) -> Result<Option<Arc<dyn SigningKey>>, DaemonError>;
    /// After the commit record names `dir`'s generation: its key becomes the one in force.
    fn promote(&self, dir: &Path) -> Result<(), DaemonError>;
    /// At start, with the committed certificate's `SubjectPublicKeyInfo`: finishes a promotion
    /// a crash interrupted after the commit (the candidate key is the certified one). Returns
    /// whether it promoted.
    fn finish_promotion(&self, cert_spki: &[u8]) -> Result<bool, DaemonError>;
}

/// [`KeyBackend`] over the opened key store (either backend).
#[derive(Debug, Clone)]
pub struct StoreKeys {
    store: Arc<KeyStore>,
}

const KEY_FILE: &str = "key.pem";

impl StoreKeys {
    /// Renewal keys in `store` (the daemon's key store of `[keys]`).
    pub fn new(store: Arc<KeyStore>) -> Self {
        StoreKeys { store }
    }

    fn token(&self) -> bool {
        self.store.backend() == Backend::Pkcs11
    }

    /// The files backend's key store whose current key is `dir/key.pem`.
    fn files_in(dir: &Path) -> Result<KeyStore, DaemonError> {
        Ok(KeyStore::open(&KeysConfig::default(), &dir.join(KEY_FILE))?)
    }

    fn identity(&self, dir: &Path) -> Result<IdentityKey, DaemonError> {
        Ok(if self.token() {
            self.store.identity(IdentitySlot::Next)?
        } else {
            Self::files_in(dir)?.identity(IdentitySlot::Current)?
        })
    }
}

impl KeyBackend for StoreKeys {
    fn generate(&self, dir: &Path) -> Result<(), DaemonError> {
        if self.token() {
            self.store.generate_identity(IdentitySlot::Next)?;
        } else {
            Self::files_in(dir)?.generate_identity(IdentitySlot::Current)?;
        }
        Ok(())
    }

    fn exists(&self, dir: &Path) -> bool {
        if self.token() {
            self.store.public_key(IdentitySlot::Next).is_ok()
        } else {
            dir.join(KEY_FILE).is_file()
        }
    }

    fn public_key(&self, dir: &Path) -> Result<Vec<u8>, DaemonError> {
        Ok(self.identity(dir)?.spki().as_ref().to_vec())
    }

    fn csr(&self, dir: &Path, cn: &str) -> Result<String, DaemonError> {
        super::csr::csr_pem(&self.identity(dir)?, cn)
    }

    fn tls_key_file(&self, dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    fn candidate_key(&self, _dir: &Path) -> Result<Option<Arc<dyn SigningKey>>, DaemonError> {
        Ok(if self.token() {
            Some(self.store.tls_signing_key(IdentitySlot::Next)?)
        } else {
            None
        })
    }

    fn current_key(&self) -> Result<Option<Arc<dyn SigningKey>>, DaemonError> {
        Ok(if self.token() {
            Some(self.store.tls_signing_key(IdentitySlot::Current)?)
        } else {
            None
        })
    }

    fn promote(&self, _dir: &Path) -> Result<(), DaemonError> {
        if self.token() {
            self.store.promote()?;
        }
        Ok(())
    }

    fn finish_promotion(&self, cert_spki: &[u8]) -> Result<bool, DaemonError> {
        if !self.token() {
            return Ok(false);
        }
        match self.store.public_key(IdentitySlot::Next) {
            Ok(next) if next.as_ref() == cert_spki => {
                self.store.promote()?;
                Ok(true)
            }
            Ok(_) | Err(KeyError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_key_is_private_and_signs_a_csr_for_the_vin() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            KeyStore::open(&KeysConfig::default(), &dir.path().join("factory.key")).unwrap();
        let k = StoreKeys::new(Arc::new(store));
        let g = dir.path().join("gen-1");
        std::fs::create_dir(&g).unwrap();
        assert!(!k.exists(&g));
        k.generate(&g).unwrap();
        assert!(k.exists(&g));
        let mode = std::fs::metadata(k.tls_key_file(&g))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let spki = k.public_key(&g).unwrap();
        let csr = k.csr(&g, "VIN1").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(parsed.public_key.subject_public_key_info(), spki);
        assert!(k.candidate_key(&g).unwrap().is_none(), "the file is loaded");
        assert!(k.current_key().unwrap().is_none());
        assert!(!k.finish_promotion(&spki).unwrap());
        k.generate(&g).unwrap();
        assert_ne!(k.public_key(&g).unwrap(), spki, "a new key each time");
    }
}
