//! Back-end / dealer keys: Ed25519 key generation, reset-authorization signing and the
//! `TMRA1:` text form of a reset authorization.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use telematics_security::recovery::MAX_RESET_TTL_SECS;

use crate::CtlError;

/// Prefix of the reset-authorization text form.
pub const RESET_AUTH_PREFIX: &str = "TMRA1:";

/// Largest reset authorization accepted from text (the vehicle's own limit is smaller).
const MAX_RESET_AUTH_LEN: usize = 4096;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `TMRA1:` + unpadded base64url of the COSE_Sign1 bytes.
pub fn reset_auth_to_text(bytes: &[u8]) -> String {
    format!("{RESET_AUTH_PREFIX}{}", B64.encode(bytes))
}

/// Parses the text form (surrounding whitespace allowed). Only the prefix and the base64url
/// alphabet are checked here; the signature is checked by the vehicle.
pub fn reset_auth_from_text(text: &str) -> Result<Vec<u8>, CtlError> {
    let body = text
        .trim()
        .strip_prefix(RESET_AUTH_PREFIX)
        .ok_or(CtlError::ResetAuthText("missing TMRA1: prefix"))?;
    if body.len() > MAX_RESET_AUTH_LEN * 4 / 3 + 4 {
        return Err(CtlError::ResetAuthText("too long"));
    }
    let bytes = B64
        .decode(body)
        .map_err(|_| CtlError::ResetAuthText("not unpadded base64url"))?;
    if bytes.is_empty() {
        return Err(CtlError::ResetAuthText("empty"));
    }
    Ok(bytes)
}

/// Reads a reset authorization file: the `TMRA1:` text form, or the raw COSE_Sign1 bytes
/// (compatibility with files written before the text form existed).
pub fn read_reset_auth(path: &Path) -> Result<Vec<u8>, CtlError> {
    let raw =
        std::fs::read(path).map_err(|e| CtlError::io("reading reset authorization", path, e))?;
    let trimmed = raw.trim_ascii_start();
    if trimmed.starts_with(RESET_AUTH_PREFIX.as_bytes()) {
        let text = std::str::from_utf8(trimmed)
            .map_err(|_| CtlError::ResetAuthText("not UTF-8 after the TMRA1: prefix"))?;
        reset_auth_from_text(text)
    } else if raw.is_empty() {
        Err(CtlError::ResetAuthText("empty"))
    } else {
        Ok(raw)
    }
}

/// Creates `path` with mode 0600 and writes `text` + newline; never overwrites.
pub fn write_private(path: &Path, text: &str) -> Result<(), CtlError> {
    write_new(path, text.as_bytes(), true, 0o600)
}

fn write_new(path: &Path, data: &[u8], newline: bool, mode: u32) -> Result<(), CtlError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CtlError::io("creating", path, e))?;
    f.write_all(data)
        .and_then(|()| if newline { f.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| f.sync_all())
        .map_err(|e| CtlError::io("writing", path, e))
}

/// DER prefix of an RFC 8410 PKCS#8 v1 Ed25519 private key (`OneAsymmetricKey` version 0,
/// no public key): SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
/// OCTET STRING (32-byte seed) } }. The 32-byte seed follows.
const PKCS8_V1_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The PKCS#8 v1 DER document (48 bytes) of an Ed25519 seed.
fn pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = PKCS8_V1_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

/// Generates an Ed25519 back-end key: the private key goes to `key_out` (mode 0600) as a
/// **PKCS#8 v1 DER** document (RFC 8410, 48 bytes; what `openssl pkey -inform DER` and
/// python-cryptography's `load_der_private_key` read), and the public key to `public_out` as
/// 64 lowercase hex characters + newline (the daemon's `security.backend_public_key` format).
/// Refuses to overwrite either file. Returns the public key hex.
pub fn backend_keygen(key_out: &Path, public_out: &Path) -> Result<String, CtlError> {
    for p in [key_out, public_out] {
        if p.symlink_metadata().is_ok() {
            return Err(CtlError::io(
                "refusing to overwrite",
                p,
                std::io::ErrorKind::AlreadyExists.into(),
            ));
        }
    }
    let rng = SystemRandom::new();
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&rng, &mut seed)
        .map_err(|_| CtlError::Security(telematics_security::Error::Rng))?;
    let der = pkcs8_v1(&seed);
    seed.fill(0);
    let pair =
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| CtlError::BackendKey {
            path: key_out.display().to_string(),
            why: e.to_string(),
        })?;
    let public = hex::encode(pair.public_key().as_ref());
    write_new(key_out, &der, false, 0o600)?;
    write_new(public_out, public.as_bytes(), true, 0o644)?;
    Ok(public)
}

/// Loads an Ed25519 back-end key: PKCS#8 v1 (what [`backend_keygen`] writes) or v2 (files
/// written by earlier versions), as DER or as PEM (`-----BEGIN PRIVATE KEY-----`, e.g. from
/// `openssl genpkey -algorithm ed25519`). Refuses a file readable by group or others (like
/// ssh).
pub fn load_backend_key(path: &Path) -> Result<Ed25519KeyPair, CtlError> {
    let bad = |why: String| CtlError::BackendKey {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| CtlError::io("reading", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad(format!(
            "permissions {:o} are too open (chmod 600)",
            meta.permissions().mode() & 0o777
        )));
    }
    let raw = std::fs::read(path).map_err(|e| CtlError::io("reading", path, e))?;
    let der = match pem_body(&raw) {
        Some(body) => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| bad("PEM body is not base64".into()))?,
        None => raw,
    };
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| bad(format!("not a PKCS#8 Ed25519 key ({e})")))
}

/// The base64 body of a `PRIVATE KEY` PEM block, whitespace removed; `None` when `raw` is not
/// PEM.
fn pem_body(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = text.find(begin)? + begin.len();
    let stop = start + text[start..].find(end)?;
    Some(text[start..stop].split_whitespace().collect())
}

/// Signs a reset authorization for `vin`, valid for `ttl_s` seconds from now
/// (1..=`MAX_RESET_TTL_SECS`). Returns the COSE_Sign1 bytes.
pub fn sign_reset_authorization(
    key: &Ed25519KeyPair,
    vin: &str,
    ttl_s: u64,
) -> Result<Vec<u8>, CtlError> {
    if ttl_s == 0 || ttl_s > MAX_RESET_TTL_SECS {
        return Err(CtlError::Invalid(format!(
            "ttl must be 1..={MAX_RESET_TTL_SECS} seconds"
        )));
    }
    crate::watch::check_vin(vin)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CtlError::Invalid("system clock before 1970".into()))?
        .as_secs();
    Ok(telematics_security::client::sign_reset(
        key,
        vin,
        now,
        now.saturating_add(ttl_s),
        &SystemRandom::new(),
    )?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use telematics_security::{Config, SecurityState, arm_reset};

    const VIN: &str = "WBA3A5C51CF256985";

    #[test]
    fn private_file_mode_and_no_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cred");
        write_private(&p, "secret-cred").unwrap();
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret-cred\n");
        assert!(write_private(&p, "again").is_err(), "never overwrites");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret-cred\n");
    }

    #[test]
    fn tmra1_round_trip() {
        for bytes in [vec![0xd2u8, 0x84, 0x43], (0..=255).collect::<Vec<u8>>()] {
            let t = reset_auth_to_text(&bytes);
            assert!(t.starts_with("TMRA1:"));
            assert!(!t.contains('='), "unpadded");
            assert!(!t.contains('+') && !t.contains('/'), "url alphabet");
            assert_eq!(reset_auth_from_text(&t).unwrap(), bytes);
            assert_eq!(reset_auth_from_text(&format!("  {t}\n")).unwrap(), bytes);
        }
        for bad in [
            "",
            "TMRA1:",
            "TMDC1:AAAA",
            "TMRA1:a+b/",
            "TMRA1:AAA=",
            "tmra1:AA",
        ] {
            assert_eq!(
                reset_auth_from_text(bad).unwrap_err().code(),
                "ctl.reset_auth_text",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keygen_modes_no_overwrite_and_sign_verifies_on_the_vehicle_side() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("backend.pk8");
        let public = d.path().join("backend.pub");
        let hex_pub = backend_keygen(&key, &public).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&public), 0o644);
        let pub_text = std::fs::read_to_string(&public).unwrap();
        assert_eq!(pub_text, format!("{hex_pub}\n"));
        assert_eq!(hex_pub.len(), 64);
        assert!(
            hex_pub
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        );
        // Never overwrites, and a failed attempt leaves both files untouched.
        let before = std::fs::read(&key).unwrap();
        assert!(backend_keygen(&key, &d.path().join("other.pub")).is_err());
        assert!(backend_keygen(&d.path().join("other.pk8"), &public).is_err());
        assert!(!d.path().join("other.pub").exists() && !d.path().join("other.pk8").exists());
        assert_eq!(std::fs::read(&key).unwrap(), before);

        // The signed authorization, through its text form, arms a reset on the vehicle side.
        let pair = load_backend_key(&key).unwrap();
        let auth = sign_reset_authorization(&pair, VIN, 3600).unwrap();
        let text = reset_auth_to_text(&auth);
        let file = d.path().join("auth.txt");
        write_private(&file, &text).unwrap();
        let bytes = read_reset_auth(&file).unwrap();
        assert_eq!(bytes, auth);
        let mut state = SecurityState::default();
        let pk = hex::decode(pub_text.trim()).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let armed = arm_reset(&mut state, &Config::default(), VIN, &pk, &bytes, now).unwrap();
        assert_eq!(armed.vin, VIN);
        assert_eq!(armed.expires_at - armed.issued_at, 3600);
        // Raw bytes are still accepted.
        let raw = d.path().join("auth.bin");
        std::fs::write(&raw, &auth).unwrap();
        assert_eq!(read_reset_auth(&raw).unwrap(), auth);
        // Bad TTL / VIN.
        assert!(sign_reset_authorization(&pair, VIN, 0).is_err());
        assert!(sign_reset_authorization(&pair, VIN, MAX_RESET_TTL_SECS + 1).is_err());
        assert!(sign_reset_authorization(&pair, "a/b", 60).is_err());
    }

    /// The public key OpenSSL derives from a key file, as hex (`openssl pkey`, apt package
    /// openssl: scripts/install-test-deps.sh).
    fn openssl_public(key: &Path, inform: &str) -> String {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-inform", inform, "-in"])
            .arg(key)
            .args(["-pubout", "-outform", "DER"])
            .output()
            .expect("openssl not found: apt-get install -y openssl (scripts/install-test-deps.sh)");
        assert!(
            out.status.success(),
            "openssl pkey cannot load {}: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // SubjectPublicKeyInfo of Ed25519: 12-byte header, then the 32-byte key.
        assert_eq!(out.stdout.len(), 44, "{:02x?}", out.stdout);
        hex::encode(&out.stdout[12..])
    }

    #[test]
    fn keygen_key_loads_in_openssl_and_python_cryptography() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("backend.pk8");
        let public = d.path().join("backend.pub");
        let hex_pub = backend_keygen(&key, &public).unwrap();
        let daemon_file = std::fs::read_to_string(&public).unwrap();
        assert_eq!(daemon_file.trim(), hex_pub);
        let der = std::fs::read(&key).unwrap();
        assert_eq!(der.len(), 48, "PKCS#8 v1: 16-byte prefix + 32-byte seed");
        assert_eq!(&der[..16], &PKCS8_V1_ED25519_PREFIX);

        // OpenSSL 3 loads it and derives the same public key as the daemon's file.
        assert_eq!(openssl_public(&key, "DER"), hex_pub, "openssl");

        // python-cryptography loads it and derives the same public key.
        let py = "import sys\n\
                  from cryptography.hazmat.primitives import serialization as s\n\
                  k = s.load_der_private_key(open(sys.argv[1], 'rb').read(), None)\n\
                  print(k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())\n";
        let out = std::process::Command::new("python3")
            .args(["-c", py])
            .arg(&key)
            .output()
            .expect("python3 not found");
        assert!(
            out.status.success(),
            "python-cryptography cannot load the key (pip install cryptography: \
             scripts/install-test-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            hex_pub,
            "python"
        );

        // And the other way: a key made by `openssl genpkey` (PEM) signs for its public key.
        let pem = d.path().join("openssl.pem");
        let st = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pair = load_backend_key(&pem).unwrap();
        assert_eq!(
            hex::encode(pair.public_key().as_ref()),
            openssl_public(&pem, "PEM")
        );
    }

    #[test]
    fn loose_or_bogus_key_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("k.pk8");
        backend_keygen(&key, &d.path().join("k.pub")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load_backend_key(&key).unwrap_err().code(),
            "ctl.backend_key"
        );
        let bogus = d.path().join("bogus.pk8");
        write_new(&bogus, b"not a key", false, 0o600).unwrap();
        assert_eq!(
            load_backend_key(&bogus).unwrap_err().code(),
            "ctl.backend_key"
        );
        assert_eq!(
            load_backend_key(&d.path().join("missing"))
                .unwrap_err()
                .code(),
            "ctl.io"
        );
    }
}
