//! The per-credential command counter, persisted next to the credential file.
//!
//! The vehicle accepts a command only if its counter exceeds the last accepted one, so a
//! counter value must never be sent twice. [`next`] therefore reads the stored value, adds one
//! and makes the new value durable (temporary file, `fsync`, `rename`, `fsync` of the
//! directory) **before** the caller publishes anything. A crash at any point either leaves the
//! old value (nothing was sent with the new one) or the new one. A left-over temporary file from
//! an earlier crash is simply overwritten. Concurrent invocations are serialised by an
//! exclusive lock on `<counter>.lock`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::CtlError;

/// The counter file belonging to a credential file: `<credential>.counter`.
pub fn counter_path(credential: &Path) -> PathBuf {
    with_suffix(credential, ".counter")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads the stored counter (`0` when the file does not exist). Anything but a decimal `u64`
/// (surrounding whitespace allowed) is an error: guessing could reuse a counter.
pub fn read(path: &Path) -> Result<u64, CtlError> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .map_err(|e| CtlError::io("reading counter", path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CtlError::io("opening counter", path, e)),
    }
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CtlError::Counter {
            path: path.display().to_string(),
            why: "not a decimal number (refusing to guess a counter)".into(),
        });
    }
    t.parse::<u64>().map_err(|_| CtlError::Counter {
        path: path.display().to_string(),
        why: "out of range".into(),
    })
}

/// Durably replaces the counter file with `value` (tmp file + fsync + rename + directory fsync).
pub fn write(path: &Path, value: u64) -> Result<(), CtlError> {
    let tmp = with_suffix(path, ".tmp");
    {
        // truncate: a temporary file left over by a crash is overwritten, never trusted.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| CtlError::io("creating counter temp file", &tmp, e))?;
        f.write_all(format!("{value}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| CtlError::io("writing counter temp file", &tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| CtlError::io("renaming counter file", path, e))?;
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CtlError::io("syncing directory", dir, e))?;
    Ok(())
}

/// Reserves the next counter value: read (missing = 0), add one, persist durably, return it.
/// Holds an exclusive lock on `<path>.lock` for the read-modify-write.
pub fn next(path: &Path) -> Result<u64, CtlError> {
    let lock_path = with_suffix(path, ".lock");
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| CtlError::io("opening counter lock", &lock_path, e))?;
    lock.lock()
        .map_err(|e| CtlError::io("locking counter", &lock_path, e))?;
    let value = read(path)?
        .checked_add(1)
        .ok_or_else(|| CtlError::Counter {
            path: path.display().to_string(),
            why: "counter exhausted".into(),
        })?;
    write(path, value)?;
    // The lock is released when `lock` is dropped.
    drop(lock);
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_is_zero_and_increments_persist() {
        let d = tempfile::tempdir().unwrap();
        let p = counter_path(&d.path().join("phone.cred"));
        assert_eq!(p.file_name().unwrap(), "phone.cred.counter");
        assert_eq!(read(&p).unwrap(), 0);
        assert_eq!(next(&p).unwrap(), 1);
        assert_eq!(next(&p).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "2\n");
        assert_eq!(read(&p).unwrap(), 2);
    }

    #[test]
    fn leftover_tmp_file_is_ignored_and_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.counter");
        write(&p, 41).unwrap();
        // A crash after writing the temp file but before the rename leaves a stale tmp.
        std::fs::write(with_suffix(&p, ".tmp"), "999999\n").unwrap();
        assert_eq!(read(&p).unwrap(), 41, "the tmp file is never read");
        assert_eq!(next(&p).unwrap(), 42);
        assert_eq!(read(&p).unwrap(), 42);
        // A truncated/partial tmp file is equally harmless.
        std::fs::write(with_suffix(&p, ".tmp"), "9").unwrap();
        assert_eq!(next(&p).unwrap(), 43);
        assert!(!with_suffix(&p, ".tmp").exists(), "renamed away");
    }

    #[test]
    fn garbage_counter_fails_closed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.counter");
        for bad in ["", "abc", "-1", "12x", "99999999999999999999999"] {
            std::fs::write(&p, bad).unwrap();
            let e = next(&p).unwrap_err();
            assert_eq!(e.code(), "ctl.counter", "{bad:?}");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), bad, "left unchanged");
        }
        std::fs::write(&p, u64::MAX.to_string()).unwrap();
        assert_eq!(next(&p).unwrap_err().code(), "ctl.counter");
    }

    #[test]
    fn counter_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.counter");
        next(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
}
