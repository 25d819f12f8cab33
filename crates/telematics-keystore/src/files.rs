//! Files backend (development default): the identity key is a PEM file (signing by ring
//! through rustls), the sealing key a 32-byte file or systemd credential outside the state
//! directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::SigningKey;

use crate::IdentitySlot;
use crate::config::SecretSource;
use crate::error::{KeyError, Result};
use crate::seal::Sealer;

pub(crate) struct Files {
    pub(crate) tls_key: PathBuf,
    pub(crate) seal_key: Option<SecretSource>,
}

fn key_file_error(path: &Path, detail: impl Into<String>) -> KeyError {
    KeyError::KeyFile {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Writes `contents` to `path` with mode 0600 atomically (temp file, fsync, rename, fsync dir).
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| key_file_error(path, e.to_string()))
}

impl Files {
    pub(crate) fn path(&self, slot: IdentitySlot) -> PathBuf {
        match slot {
            IdentitySlot::Current => self.tls_key.clone(),
            IdentitySlot::Next => {
                let mut p = self.tls_key.clone().into_os_string();
                p.push(".next");
                PathBuf::from(p)
            }
        }
    }

    pub(crate) fn signing_key(&self, slot: IdentitySlot) -> Result<Arc<dyn SigningKey>> {
        let path = self.path(slot);
        let pem = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                KeyError::NotFound(format!("identity key file {}", path.display()))
            } else {
                key_file_error(&path, e.to_string())
            }
        })?;
        signing_key_from_pem(&pem, &path.display().to_string())
    }

    pub(crate) fn generate(&self, slot: IdentitySlot) -> Result<()> {
        let path = self.path(slot);
        let pem = new_identity_pem(&path.display().to_string())?;
        write_private(&path, pem.as_bytes())
    }

    pub(crate) fn promote(&self) -> Result<()> {
        let next = self.path(IdentitySlot::Next);
        if !next.exists() {
            return Err(KeyError::NotFound(format!(
                "identity key file {}",
                next.display()
            )));
        }
        let cur = self.path(IdentitySlot::Current);
        let dir = cur
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::rename(&next, &cur)
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| key_file_error(&cur, e.to_string()))
    }

    pub(crate) fn delete(&self, slot: IdentitySlot) -> Result<()> {
        let path = self.path(slot);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(key_file_error(&path, e.to_string())),
        }
    }

    pub(crate) fn sealer(&self) -> Result<Option<Sealer>> {
        let Some(src) = &self.seal_key else {
            return Ok(None);
        };
        let bytes = src.read("sealing key")?;
        let key = parse_seal_key(&bytes).ok_or_else(|| KeyError::KeyFile {
            path: src.describe(),
            detail: "a sealing key is 32 bytes (raw) or 64 hex characters".into(),
        })?;
        Sealer::from_key_bytes(&key).map(Some)
    }
}

/// A new EC P-256 key as PEM `PRIVATE KEY` (PKCS#8) text; `what` names it in an error.
pub fn new_identity_pem(what: &str) -> Result<String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .map_err(|_| KeyError::KeyFile {
        path: what.into(),
        detail: "EC P-256 key generation failed".into(),
    })?;
    Ok(pkcs8_pem(pkcs8.as_ref()))
}

/// The rustls signing key (ring) of a PEM private key; `what` names it in an error.
pub fn signing_key_from_pem(pem: &[u8], what: &str) -> Result<Arc<dyn SigningKey>> {
    let bad = |detail: String| KeyError::KeyFile {
        path: what.into(),
        detail,
    };
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(e.to_string()))?;
    rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| bad(e.to_string()))
}

/// PEM `PRIVATE KEY` (PKCS#8) text of `der`, 64 base64 characters a line.
fn pkcs8_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// 32 raw bytes, or 64 hex characters (surrounding whitespace ignored).
fn parse_seal_key(bytes: &[u8]) -> Option<[u8; 32]> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let decoded = hex::decode(text).ok()?;
    <[u8; 32]>::try_from(decoded.as_slice()).ok()
}

/// Writes a fresh random 32-byte sealing key to `path` (mode 0600). Refuses to overwrite.
pub fn write_new_seal_key(path: &Path) -> Result<()> {
    if path.exists() {
        return Err(key_file_error(
            path,
            "exists; refusing to replace a sealing key",
        ));
    }
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| key_file_error(path, "no randomness"))?;
    write_private(path, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_files_are_p256_pkcs8_pem_0600_and_promote_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files {
            tls_key: dir.path().join("client.key"),
            seal_key: None,
        };
        files.generate(IdentitySlot::Next).expect("generate");
        let next = files.path(IdentitySlot::Next);
        let mode = std::fs::metadata(&next).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = files
            .signing_key(IdentitySlot::Next)
            .expect("parses as PEM");
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
        let spki = key.public_key().expect("spki").as_ref().to_vec();
        assert!(files.signing_key(IdentitySlot::Current).is_err());
        files.promote().expect("promote");
        let cur = files.signing_key(IdentitySlot::Current).expect("current");
        assert_eq!(cur.public_key().expect("spki").as_ref(), &spki[..]);
        assert!(!next.exists());
        assert!(matches!(files.promote(), Err(KeyError::NotFound(_))));
    }

    #[test]
    fn seal_key_file_forms() {
        assert_eq!(parse_seal_key(&[1u8; 32]), Some([1u8; 32]));
        let hex_form = format!("{}\n", "ab".repeat(32));
        assert_eq!(parse_seal_key(hex_form.as_bytes()), Some([0xab; 32]));
        assert_eq!(parse_seal_key(b"short"), None);
    }
}
