//! The facts of a certificate the daemon needs without a full X.509 parser: validity period
//! (`telematicsctl doctor`, the expiry check), serial number, subject CN and public key (the
//! checks of a renewed certificate). A minimal DER walk of `tbsCertificate` (RFC 5280 §4.1);
//! rustls / webpki check the certificate itself (signature, chain).

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::LinkError;

/// `notBefore` / `notAfter` of a certificate, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    /// Start of validity.
    pub not_before: u64,
    /// End of validity.
    pub not_after: u64,
}

/// What [`certificate_facts`] reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Validity period.
    pub validity: Validity,
    /// Serial number, lower-case hex of its DER content bytes.
    pub serial: String,
    /// The first `commonName` of the subject, if any (the VIN for a vehicle).
    pub subject_cn: Option<String>,
    /// The DER `SubjectPublicKeyInfo` (compared with the key the vehicle generated).
    pub spki: Vec<u8>,
    /// SHA-256 of the whole certificate DER, lower-case hex (the fingerprint).
    pub sha256: String,
}

/// The facts of the DER certificate `der` (`None` if it cannot be walked).
pub fn certificate_facts(der: &[u8]) -> Option<CertFacts> {
    let tbs = tbs_fields(der)?;
    let (0x02, serial, rest) = tlv(tbs)? else {
        return None;
    };
    // signature, issuer
    let (_, _, rest) = tlv(rest)?;
    let (_, _, rest) = tlv(rest)?;
    let (_, _, rest) = tlv(rest)?; // validity (read by validity_of_der)
    let (0x30, subject, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, _, after) = tlv(rest)? else {
        return None;
    };
    let spki = rest.get(..rest.len() - after.len())?.to_vec();
    Some(CertFacts {
        validity: validity_of_der(der)?,
        serial: hex(serial),
        subject_cn: common_name(subject),
        spki,
        sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The first `commonName` (OID 2.5.4.3) of a `Name`'s content.
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (0x31, mut set, rest) = tlv(name)? else {
            return None;
        };
        name = rest;
        while !set.is_empty() {
            let (0x30, atv, rest) = tlv(set)? else {
                return None;
            };
            set = rest;
            let (0x06, oid, value) = tlv(atv)? else {
                return None;
            };
            if oid == [0x55, 0x04, 0x03] {
                let (_, v, _) = tlv(value)?;
                return String::from_utf8(v.to_vec()).ok();
            }
        }
    }
    None
}

/// The facts of the first certificate in the PEM file `path` (the leaf of a chain).
pub fn certificate_facts_of_file(path: &Path) -> Result<CertFacts, LinkError> {
    let what = "client certificate";
    let der = first_der(path)?;
    certificate_facts(der.as_ref()).ok_or_else(|| LinkError::TlsFileInvalid {
        what,
        path: path.display().to_string(),
        detail: "cannot read the certificate".into(),
    })
}

fn first_der(path: &Path) -> Result<CertificateDer<'static>, LinkError> {
    let what = "client certificate";
    let invalid = |detail: &str| LinkError::TlsFileInvalid {
        what,
        path: path.display().to_string(),
        detail: detail.to_string(),
    };
    let pem = std::fs::read(path).map_err(|e| LinkError::TlsFileUnreadable {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| invalid("no CERTIFICATE in the file"))?
        .map_err(|e| invalid(&e.to_string()))
}

/// The validity of the first certificate in the PEM file `path` (the leaf of a chain).
pub fn certificate_validity(path: &Path) -> Result<Validity, LinkError> {
    let der = first_der(path)?;
    validity_of_der(der.as_ref()).ok_or_else(|| LinkError::TlsFileInvalid {
        what: "client certificate",
        path: path.display().to_string(),
        detail: "cannot read the validity period".into(),
    })
}

/// One DER TLV: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = (b.get(..n)?, b.get(n..)?);
        b = rest;
        bytes
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
    };
    Some((tag, b.get(..len)?, b.get(len..)?))
}

/// The fields of `der`'s TBSCertificate after its optional `[0]` version (serialNumber
/// first).
fn tbs_fields(der: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (tag, _, rest) = tlv(tbs)?;
    Some(if tag == 0xa0 { rest } else { tbs })
}

fn validity_of_der(der: &[u8]) -> Option<Validity> {
    // serialNumber, signature, issuer, then validity.
    let mut tbs = tbs_fields(der)?;
    for _ in 0..3 {
        let (_, _, rest) = tlv(tbs)?;
        tbs = rest;
    }
    let (0x30, validity, _) = tlv(tbs)? else {
        return None;
    };
    let (t1, nb, rest) = tlv(validity)?;
    let (t2, na, _) = tlv(rest)?;
    Some(Validity {
        not_before: time_of(t1, nb)?,
        not_after: time_of(t2, na)?,
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time_of(tag: u8, v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        0x18 if s.len() == 14 => (num(0..4)?, 4),
        _ => return None,
    };
    let f = |i: usize| num(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, h, m, sec) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day)? * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm); `None` before
/// 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time_of(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time_of(0x17, b"240229120000Z"), Some(1_709_208_000));
        assert_eq!(time_of(0x18, b"20991231235959Z"), Some(4_102_444_799));
        assert_eq!(time_of(0x17, b"240229120000"), None, "no Z");
        assert_eq!(time_of(0x17, b"241329120000Z"), None, "month 13");
        assert_eq!(time_of(0x05, b""), None);
    }

    #[test]
    fn validity_of_a_generated_certificate() {
        let pki = telematics_testkit::TestPki::generate().unwrap();
        let files = pki.client("VIN1").unwrap();
        let v = certificate_validity(&files.cert).unwrap();
        let now = crate::status::unix_now_s();
        assert!(v.not_before <= now && now < v.not_after, "{v:?} at {now}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("x.pem");
        std::fs::write(&bad, "nothing").unwrap();
        assert_eq!(
            certificate_validity(&bad).unwrap_err().code(),
            "link.tls_file_invalid"
        );
        assert_eq!(
            certificate_validity(&dir.path().join("missing"))
                .unwrap_err()
                .code(),
            "link.tls_file_unreadable"
        );
        assert_eq!(validity_of_der(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
        assert_eq!(certificate_facts(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
        let f = certificate_facts_of_file(&files.cert).unwrap();
        assert_eq!(f.validity, v);
        assert_eq!(f.subject_cn.as_deref(), Some("VIN1"));
        let key = std::fs::read_to_string(&files.key).unwrap();
        let key = rcgen::KeyPair::from_pem(&key).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(f.spki, key.subject_public_key_info());
        assert_eq!(f.sha256.len(), 64);
        assert!(!f.serial.is_empty());
    }
}
