//! The key backend of a renewal over the key store of `[keys]` (telematics-keystore): where
//! the new identity key is generated, how it signs the CSR ([`super::csr`], no certificate
//! generator linked), which key the probe and the link then use, and its promotion.
//!
//! * files: the new key is the P-256 PKCS#8 PEM file `gen-<n>/key.pem` (0600) of the
//!   generation directory. With a sealing key (`keys.seal_key`) the file holds the PEM sealed
//!   (AES-256-GCM, the format of docs/protocol.md "Sealed records", bound to the generation):
//!   the identity directory is in the state directory, and a copy of it must not carry the
//!   car's identity; the key is unsealed into memory and signs as a rustls signing key. Without
//!   a sealing key (development) it is the clear PEM the link loads as a file. Nothing to
//!   promote: the commit record selects it.
//! * pkcs11: the new key is generated non-extractable in the token's [`IdentitySlot::Next`]
//!   slot; the probe signs with it, and once the commit record names the generation it is
//!   promoted to [`IdentitySlot::Current`], the key the link signs with. A crash between the
//!   commit and the promotion is finished at the next start ([`KeyBackend::finish_promotion`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use telematics_keystore::{
    Backend, IdentityKey, IdentitySlot, KeyError, KeyStore, KeysConfig, Sealer, SigningKey,
    is_sealed, new_identity_pem, signing_key_from_pem,
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
    /// The signing key of the identity in force (`dir`: its generation directory, `None` for
    /// the factory identity), `None` when the link loads the key file itself.
    fn current_key(&self, dir: Option<&Path>) -> Result<Option<Arc<dyn SigningKey>>, DaemonError>;
    /// After the commit record names `dir`'s generation: its key becomes the one in force.
    fn promote(&self, dir: &Path) -> Result<(), DaemonError>;
    /// At start, with the committed certificate's `SubjectPublicKeyInfo`: finishes a promotion
    /// a crash interrupted after the commit (the candidate key is the certified one). Returns
    /// whether it promoted.
    fn finish_promotion(&self, cert_spki: &[u8]) -> Result<bool, DaemonError>;
}

/// [`KeyBackend`] over the opened key store (either backend).
#[derive(Clone)]
pub struct StoreKeys {
    store: Arc<KeyStore>,
    /// Files backend with a sealing key: renewed keys are sealed under it.
    sealer: Option<Arc<Sealer>>,
}

impl std::fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKeys")
            .field("store", &self.store)
            .field("sealed", &self.sealer.is_some())
            .finish()
    }
}

const KEY_FILE: &str = "key.pem";

/// Associated data of a sealed renewed key: the record kind and its generation directory's
/// name, so a sealed key opens only as the key of its own generation.
fn sealed_key_aad(dir: &Path) -> Vec<u8> {
    let mut aad = b"telematicsd/v1/identity/key/".to_vec();
    aad.extend_from_slice(
        dir.file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default(),
    );
    aad
}

impl StoreKeys {
    /// Renewal keys in `store` (the daemon's key store of `[keys]`); with the files backend,
    /// `sealer` (the sealer of the security state, if configured) seals every renewed key.
    pub fn new(store: Arc<KeyStore>, sealer: Option<Arc<Sealer>>) -> Self {
        let sealer = sealer.filter(|_| store.backend() == Backend::Files);
        StoreKeys { store, sealer }
    }

    fn token(&self) -> bool {
        self.store.backend() == Backend::Pkcs11
    }

    /// Files backend: the signing key of `dir`'s key file, unsealed if sealed (`None`: a clear
    /// file the link loads itself). With a sealing key, a clear key file (a renewal from
    /// before sealing was configured) is sealed in place first: it is a certified key of this
    /// car (a planted key has no certificate from the pinned CA), and left clear it would sit
    /// in the state directory until the next renewal.
    fn sealed_file_key(&self, dir: &Path) -> Result<Option<Arc<dyn SigningKey>>, DaemonError> {
        let path = dir.join(KEY_FILE);
        let bytes = zeroize::Zeroizing::new(match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    KeyError::NotFound(format!("identity key file {}", path.display())).into(),
                );
            }
            Err(e) => return Err(DaemonError::Identity(format!("{}: {e}", path.display()))),
        });
        let what = path.display().to_string();
        match (&self.sealer, is_sealed(&bytes)) {
            (None, false) => Ok(None),
            (None, true) => Err(KeyError::Unseal(format!(
                "{what}: sealed, and no sealing key is configured (keys.seal_key)"
            ))
            .into()),
            (Some(sealer), true) => {
                let pem = zeroize::Zeroizing::new(sealer.unseal(&sealed_key_aad(dir), &bytes)?);
                Ok(Some(signing_key_from_pem(&pem, &what)?))
            }
            (Some(sealer), false) => {
                let key = signing_key_from_pem(&bytes, &what)?;
                let sealed = sealer.seal(&sealed_key_aad(dir), &bytes)?;
                super::store::write_durable(&path, &sealed, 0o600)?;
                tracing::warn!(key = %what, "renewed identity key sealed at rest (it was clear)");
                Ok(Some(key))
            }
        }
    }

    /// The files backend's key store whose current key is `dir/key.pem`.
    fn files_in(dir: &Path) -> Result<KeyStore, DaemonError> {
        Ok(KeyStore::open(&KeysConfig::default(), &dir.join(KEY_FILE))?)
    }

    fn identity(&self, dir: &Path) -> Result<IdentityKey, DaemonError> {
        Ok(if self.token() {
            self.store.identity(IdentitySlot::Next)?
        } else if let Some(key) = self.sealed_file_key(dir)? {
            IdentityKey::new(key)?
        } else {
            Self::files_in(dir)?.identity(IdentitySlot::Current)?
        })
    }
}

impl KeyBackend for StoreKeys {
    fn generate(&self, dir: &Path) -> Result<(), DaemonError> {
        if self.token() {
            self.store.generate_identity(IdentitySlot::Next)?;
        } else if let Some(sealer) = &self.sealer {
            let path = dir.join(KEY_FILE);
            let pem = zeroize::Zeroizing::new(new_identity_pem(&path.display().to_string())?);
            let sealed = sealer.seal(&sealed_key_aad(dir), pem.as_bytes())?;
            super::store::write_durable(&path, &sealed, 0o600)?;
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

    fn candidate_key(&self, dir: &Path) -> Result<Option<Arc<dyn SigningKey>>, DaemonError> {
        if self.token() {
            Ok(Some(self.store.tls_signing_key(IdentitySlot::Next)?))
        } else {
            self.sealed_file_key(dir)
        }
    }

    fn current_key(&self, dir: Option<&Path>) -> Result<Option<Arc<dyn SigningKey>>, DaemonError> {
        match dir {
            _ if self.token() => Ok(Some(self.store.tls_signing_key(IdentitySlot::Current)?)),
            Some(dir) => self.sealed_file_key(dir),
            None => Ok(None),
        }
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
        let k = StoreKeys::new(Arc::new(store), None);
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
        assert!(k.current_key(Some(&g)).unwrap().is_none());
        assert!(k.current_key(None).unwrap().is_none());
        assert!(!k.finish_promotion(&spki).unwrap());
        k.generate(&g).unwrap();
        assert_ne!(k.public_key(&g).unwrap(), spki, "a new key each time");
    }

    #[test]
    fn with_a_sealing_key_a_renewed_file_key_is_sealed_to_its_generation() {
        let dir = tempfile::tempdir().unwrap();
        let seal_file = dir.path().join("seal.key");
        telematics_keystore::write_new_seal_key(&seal_file).unwrap();
        let cfg = KeysConfig {
            seal_key: Some(telematics_keystore::SecretSource::File(seal_file.clone())),
            ..KeysConfig::default()
        };
        let store = KeyStore::open(&cfg, &dir.path().join("factory.key")).unwrap();
        let sealer = store.sealer().unwrap().map(Arc::new);
        assert!(sealer.is_some());
        let k = StoreKeys::new(Arc::new(store), sealer);
        let g = dir.path().join("gen-1");
        k.generate(&g).unwrap();
        let bytes = std::fs::read(g.join(KEY_FILE)).unwrap();
        assert!(is_sealed(&bytes), "sealed on disk");
        assert!(
            !bytes.windows(7).any(|w| w == b"PRIVATE"),
            "no PEM in the clear"
        );
        let mode = std::fs::metadata(g.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(k.exists(&g));
        // It signs the CSR, the probe and the link from memory, and the CSR carries its key.
        let spki = k.public_key(&g).unwrap();
        let csr = k.csr(&g, "VIN1").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(parsed.public_key.subject_public_key_info(), spki);
        let candidate = k.candidate_key(&g).unwrap().expect("in memory");
        let current = k.current_key(Some(&g)).unwrap().expect("in memory");
        for key in [candidate, current] {
            assert_eq!(
                key.public_key().map(|p| p.as_ref().to_vec()),
                Some(spki.clone())
            );
        }
        assert!(
            k.current_key(None).unwrap().is_none(),
            "factory key: the file"
        );
        // Bound to its generation: moved to another generation's directory it does not open.
        let g2 = dir.path().join("gen-2");
        std::fs::create_dir(&g2).unwrap();
        std::fs::copy(g.join(KEY_FILE), g2.join(KEY_FILE)).unwrap();
        assert_eq!(k.public_key(&g2).unwrap_err().code(), "keys.unseal_failed");
        // Without the sealing key it is refused, never read as something else.
        let plain = StoreKeys::new(
            Arc::new(KeyStore::open(&KeysConfig::default(), Path::new("/nonexistent")).unwrap()),
            None,
        );
        assert_eq!(
            plain.public_key(&g).unwrap_err().code(),
            "keys.unseal_failed"
        );
        assert_eq!(
            plain.current_key(Some(&g)).err().map(|e| e.code()),
            Some("keys.unseal_failed"),
            "the link never falls back to another key"
        );
        // A clear renewed key (renewed before the sealing key was configured) is sealed in
        // place when first used, and keeps its identity.
        let old = dir.path().join("gen-3");
        std::fs::create_dir(&old).unwrap();
        plain.generate(&old).unwrap();
        let clear_spki = plain.public_key(&old).unwrap();
        assert!(!is_sealed(&std::fs::read(old.join(KEY_FILE)).unwrap()));
        let key = k
            .current_key(Some(&old))
            .unwrap()
            .expect("unsealed into memory");
        assert!(
            is_sealed(&std::fs::read(old.join(KEY_FILE)).unwrap()),
            "sealed now"
        );
        assert_eq!(
            key.public_key().map(|p| p.as_ref().to_vec()),
            Some(clear_spki.clone())
        );
        assert_eq!(k.public_key(&old).unwrap(), clear_spki);
    }
}
