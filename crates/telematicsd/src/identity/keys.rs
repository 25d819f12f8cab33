//! Key backends of a renewal: where the new identity's private key is generated and how it
//! signs the CSR. [`FileKeys`] (the development default, as `[mqtt] key` today) writes a new
//! P-256 PKCS#8 PEM file, mode 0600, in the generation's directory. A token backend (PKCS#11,
//! the key store of issue #13) implements [`KeyBackend`] with a non-extractable key instead.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};

use super::store::write_durable;
use crate::error::DaemonError;

/// Generates a generation's key and signs its CSR.
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
    /// The key file the TLS client loads for this generation.
    fn tls_key_file(&self, dir: &Path) -> PathBuf;
}

/// Keys as PEM files (`key.pem`, 0600) in the generation directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileKeys;

const KEY_FILE: &str = "key.pem";

fn err(what: &str, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Identity(format!("{what}: {e}"))
}

impl FileKeys {
    fn load(&self, dir: &Path) -> Result<KeyPair, DaemonError> {
        let path = dir.join(KEY_FILE);
        let pem =
            std::fs::read_to_string(&path).map_err(|e| err(&path.display().to_string(), e))?;
        KeyPair::from_pem(&pem).map_err(|e| err(&path.display().to_string(), e))
    }
}

impl KeyBackend for FileKeys {
    fn generate(&self, dir: &Path) -> Result<(), DaemonError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| err("key generation", e))?;
        write_durable(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)
    }

    fn exists(&self, dir: &Path) -> bool {
        dir.join(KEY_FILE).is_file()
    }

    fn public_key(&self, dir: &Path) -> Result<Vec<u8>, DaemonError> {
        Ok(self.load(dir)?.subject_public_key_info())
    }

    fn csr(&self, dir: &Path, cn: &str) -> Result<String, DaemonError> {
        let key = self.load(dir)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| err("CSR", e))
    }

    fn tls_key_file(&self, dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
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
        let k = FileKeys;
        assert!(!k.exists(dir.path()));
        k.generate(dir.path()).unwrap();
        assert!(k.exists(dir.path()));
        let mode = std::fs::metadata(k.tls_key_file(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let spki = k.public_key(dir.path()).unwrap();
        let csr = k.csr(dir.path(), "VIN1").unwrap();
        assert!(
            csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{csr}"
        );
        k.generate(dir.path()).unwrap();
        assert_ne!(
            k.public_key(dir.path()).unwrap(),
            spki,
            "a new key each time"
        );
    }
}
