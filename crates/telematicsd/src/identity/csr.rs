//! The PKCS#10 certificate signing request of a renewal (RFC 2986), built in DER by hand so
//! that the daemon links no certificate generator: `CertificationRequestInfo { version 0,
//! subject CN = <VIN>, SubjectPublicKeyInfo (EC P-256), attributes [0] {} }`, signed
//! ecdsa-with-SHA256 by the key store's identity key (in the token or a key file). The
//! signature is the DER `ECDSA-Sig-Value` [`IdentityKey::sign`] returns.

use telematics_keystore::IdentityKey;

use crate::error::DaemonError;

/// DER of OID 2.5.4.3 (id-at-commonName).
const OID_CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
/// DER `AlgorithmIdentifier { ecdsa-with-SHA256 }` (OID 1.2.840.10045.4.3.2, no parameters).
const ECDSA_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// Appends the DER TLV `tag`, length of `content`, `content` to `out`.
fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    tlv(&mut out, tag, content);
    out
}

/// DER `Name` with the one RDN `CN = cn` (UTF8String).
fn subject(cn: &str) -> Vec<u8> {
    let mut atv = OID_CN.to_vec();
    tlv(&mut atv, 0x0c, cn.as_bytes());
    wrap(0x30, &wrap(0x31, &wrap(0x30, &atv)))
}

/// The DER `CertificationRequestInfo` for `cn` and the SubjectPublicKeyInfo DER `spki`.
fn request_info(cn: &str, spki: &[u8]) -> Vec<u8> {
    let mut info = vec![0x02, 0x01, 0x00]; // version v1 (0)
    info.extend_from_slice(&subject(cn));
    info.extend_from_slice(spki);
    info.extend_from_slice(&[0xa0, 0x00]); // attributes [0] IMPLICIT SET OF: empty
    wrap(0x30, &info)
}

/// DER PKCS#10 request for subject `CN = cn`, signed by `key`.
pub fn csr_der(key: &IdentityKey, cn: &str) -> Result<Vec<u8>, DaemonError> {
    let info = request_info(cn, key.spki().as_ref());
    let sig = key.sign(&info)?;
    let mut bits = Vec::with_capacity(sig.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&sig);
    let mut body = info;
    body.extend_from_slice(&ECDSA_SHA256);
    tlv(&mut body, 0x03, &bits);
    Ok(wrap(0x30, &body))
}

/// [`csr_der`] as PEM (`CERTIFICATE REQUEST`, 64 base64 characters a line).
pub fn csr_pem(key: &IdentityKey, cn: &str) -> Result<String, DaemonError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(csr_der(key, cn)?);
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\n");
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::Command;
    use telematics_keystore::{IdentitySlot, KeyStore, KeysConfig};

    fn key(dir: &std::path::Path) -> IdentityKey {
        let store = KeyStore::open(&KeysConfig::default(), &dir.join("key.pem")).unwrap();
        store.generate_identity(IdentitySlot::Current).unwrap();
        store.identity(IdentitySlot::Current).unwrap()
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        assert_eq!(wrap(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        let long = wrap(0x04, &[0; 0x80]);
        assert_eq!(&long[..3], &[0x04, 0x81, 0x80]);
        let longer = wrap(0x04, &[0; 0x123]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x23]);
        assert_eq!(longer.len(), 4 + 0x123);
    }

    /// An independent parser (rcgen's x509-parser, as the back end's `ca sign-csr` reads it)
    /// accepts the CSR, verifies its signature and finds the VIN and the key.
    #[test]
    fn the_csr_parses_and_verifies_with_x509_parser() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path());
        let pem = csr_pem(&k, "VIN0123456789ABCD").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(parsed.public_key.der_bytes(), k.point());
        assert_eq!(
            parsed.public_key.subject_public_key_info(),
            k.spki().as_ref()
        );
        let dn = format!("{:?}", parsed.params.distinguished_name);
        assert!(dn.contains("VIN0123456789ABCD"), "{dn}");
    }

    /// OpenSSL (the reference implementation) verifies the self-signature and prints the
    /// subject and the P-256 key (openssl: scripts/install-test-deps.sh).
    #[test]
    fn openssl_verifies_the_csr() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path());
        let path = dir.path().join("csr.pem");
        std::fs::write(&path, csr_pem(&k, "VIN1").unwrap()).unwrap();
        let out = Command::new("openssl")
            .args(["req", "-verify", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .expect("openssl on PATH");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("verify OK"), "{text}");
        assert!(
            text.contains("CN=VIN1") || text.contains("CN = VIN1"),
            "{text}"
        );
        assert!(
            text.contains("prime256v1") || text.contains("P-256"),
            "{text}"
        );
        assert!(text.contains("ecdsa-with-SHA256"), "{text}");
        // A flipped signature byte is refused.
        let mut der = csr_der(&k, "VIN1").unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        let bad = dir.path().join("bad.der");
        std::fs::write(&bad, der).unwrap();
        let out = Command::new("openssl")
            .args(["req", "-verify", "-noout", "-inform", "DER", "-in"])
            .arg(&bad)
            .output()
            .unwrap();
        // OpenSSL 3.0 exits 0 here: the verdict is the message.
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("verify failure") && !text.contains("verify OK"),
            "a damaged signature must not verify: {text}"
        );
    }
}
