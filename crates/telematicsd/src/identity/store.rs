//! The identity directory: one subdirectory per renewed generation (`gen-<n>/` holding
//! `cert.pem`, and `key.pem` with the files key backend; a token keeps the key), and the commit
//! record `current` naming the generation in force.
//! Generation 0 is the configured `[mqtt] cert` / `key` (factory identity).
//!
//! Every file is written to a temporary name, fsynced, renamed and its directory fsynced; the
//! switch to a new identity is the rename of `current`, the last step, so a crash anywhere
//! leaves either the old identity or the new one in force, never half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use telematics_link::TlsFiles;

use super::keys::KeyBackend;
use super::renewal::Resume;
use crate::error::DaemonError;

const CURRENT: &str = "current";
const CERT_FILE: &str = "cert.pem";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |e| DaemonError::Identity(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` durably and atomically (temp file with `mode`, fsync, rename,
/// fsync of the directory).
pub fn write_durable(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DaemonError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Whether the identity directory `dir` holds a commit record (a renewed identity in force).
pub fn has_commit(dir: &Path) -> bool {
    dir.join(CURRENT).is_file()
}

/// The identity directory and the factory identity.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    dir: PathBuf,
    factory: TlsFiles,
}

impl IdentityStore {
    /// `dir` (created on first renewal); `factory` = the configured files (generation 0).
    pub fn new(dir: PathBuf, factory: TlsFiles) -> Self {
        IdentityStore { dir, factory }
    }

    /// Directory of `generation`.
    pub fn generation_dir(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("gen-{generation}"))
    }

    /// The committed generation (0 without a commit record). An unreadable record is an
    /// error (fail closed: it was written atomically, so it is damaged, not half-written).
    pub fn committed(&self) -> Result<u64, DaemonError> {
        let path = self.dir.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .strip_prefix("generation ")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    DaemonError::Identity(format!("{}: not a commit record", path.display()))
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The TLS files of `generation` (the factory files for 0).
    pub fn files(&self, generation: u64, keys: &dyn KeyBackend) -> TlsFiles {
        if generation == 0 {
            return self.factory.clone();
        }
        let dir = self.generation_dir(generation);
        TlsFiles {
            cert_chain: dir.join(CERT_FILE),
            key: keys.tls_key_file(&dir),
            ca: self.factory.ca.clone(),
        }
    }

    /// What a restart finds of the renewal of `generation` (not committed).
    pub fn resume(&self, generation: u64, keys: &dyn KeyBackend) -> Resume {
        let dir = self.generation_dir(generation);
        let key = keys.exists(&dir);
        Resume {
            key,
            cert: if key {
                std::fs::read(dir.join(CERT_FILE)).ok()
            } else {
                None
            },
        }
    }

    /// Stores the checked certificate of `generation`.
    pub fn store_cert(&self, generation: u64, pem: &[u8]) -> Result<(), DaemonError> {
        write_durable(&self.generation_dir(generation).join(CERT_FILE), pem, 0o644)
    }

    /// Prepares `generation`'s directory for a new key: a leftover of an abandoned attempt
    /// (e.g. a certificate for an older key) is removed first.
    pub fn fresh_generation(&self, generation: u64) -> Result<PathBuf, DaemonError> {
        let dir = self.generation_dir(generation);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Makes `generation` the identity in force (one atomic rename of the commit record), then
    /// removes the older generations' directories (their keys are no longer used).
    pub fn commit(&self, generation: u64) -> Result<(), DaemonError> {
        write_durable(
            &self.dir.join(CURRENT),
            format!("generation {generation}\n").as_bytes(),
            0o644,
        )?;
        crate::failpoint::hit(crate::failpoint::Crash::RenewAfterCommit);
        for old in 1..generation {
            let d = self.generation_dir(old);
            if d.exists()
                && let Err(e) = std::fs::remove_dir_all(&d)
            {
                tracing::warn!(error = %e, dir = %d.display(), "old identity not removed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::keys::StoreKeys;
    use super::*;
    use std::sync::Arc;
    use telematics_keystore::{KeyStore, KeysConfig};

    #[test]
    fn generations_commit_atomically_and_resume_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let factory = TlsFiles {
            cert_chain: "/etc/c.pem".into(),
            key: "/etc/k.pem".into(),
            ca: "/etc/ca.pem".into(),
        };
        let s = IdentityStore::new(dir.path().join("identity"), factory.clone());
        let k = StoreKeys::new(
            Arc::new(KeyStore::open(&KeysConfig::default(), Path::new("/etc/k.pem")).unwrap()),
            None,
        );
        assert_eq!(s.committed().unwrap(), 0);
        assert_eq!(s.files(0, &k), factory);
        assert_eq!(s.resume(1, &k), Resume::default());
        let g = s.fresh_generation(1).unwrap();
        k.generate(&g).unwrap();
        assert_eq!(
            s.resume(1, &k),
            Resume {
                key: true,
                cert: None
            }
        );
        s.store_cert(1, b"PEM").unwrap();
        assert_eq!(s.resume(1, &k).cert.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(s.committed().unwrap(), 0, "stored is not committed");
        s.commit(1).unwrap();
        assert_eq!(s.committed().unwrap(), 1);
        let f = s.files(1, &k);
        assert_eq!(f.ca, factory.ca);
        assert!(f.cert_chain.ends_with("gen-1/cert.pem"));
        // Generation 2 committed: generation 1's key is removed.
        s.fresh_generation(2).unwrap();
        s.commit(2).unwrap();
        assert!(!s.generation_dir(1).exists());
        std::fs::write(dir.path().join("identity/current"), "junk").unwrap();
        assert_eq!(s.committed().unwrap_err().code(), "identity.store");
    }
}
