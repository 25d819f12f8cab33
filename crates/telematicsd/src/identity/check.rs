//! The checks of a certificate the back end sent for a renewal (pure, `now` passed in): it
//! chains to a pinned CA and is valid now (webpki, as the broker checks it), certifies the key
//! generated for this renewal, and names this vehicle (subject CN = VIN).

use std::path::Path;

use telematics_link::{ChainRefusal, certificate_facts, verify_client_chain};

use super::Refusal;

/// What the certificate must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The pinned CA file (one or several CAs).
    pub ca: &'a Path,
    /// DER `SubjectPublicKeyInfo` of the renewal's key.
    pub spki: &'a [u8],
    /// The VIN (= MQTT username = certificate CN).
    pub vin: &'a str,
}

/// `Ok(serial)` if `pem` passes every check at `now_s`, else the first refusal (chain and
/// validity, then key, then VIN) and the serial if the certificate could be read.
pub fn check(
    pem: &[u8],
    expected: Expected<'_>,
    now_s: u64,
) -> Result<String, (Refusal, Option<String>)> {
    let chain = match verify_client_chain(expected.ca, pem, now_s) {
        Ok(Ok(chain)) => chain,
        Ok(Err(refusal)) => {
            let serial = first_serial(pem);
            return Err((
                match refusal {
                    ChainRefusal::Malformed(_) => Refusal::Malformed,
                    ChainRefusal::Untrusted(why) => {
                        tracing::warn!(%why, "renewed certificate does not chain to a pinned CA");
                        Refusal::Untrusted
                    }
                    ChainRefusal::Expired => Refusal::Expired,
                    ChainRefusal::NotYetValid => Refusal::NotYetValid,
                },
                serial,
            ));
        }
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "pinned CA file unusable");
            return Err((Refusal::Untrusted, first_serial(pem)));
        }
    };
    let Some(facts) = chain.first().and_then(|c| certificate_facts(c.as_ref())) else {
        return Err((Refusal::Malformed, None));
    };
    if facts.spki != expected.spki {
        return Err((Refusal::KeyMismatch, Some(facts.serial)));
    }
    if facts.subject_cn.as_deref() != Some(expected.vin) {
        return Err((Refusal::VinMismatch, Some(facts.serial)));
    }
    Ok(facts.serial)
}

fn first_serial(pem: &[u8]) -> Option<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    certificate_facts(der.as_ref()).map(|f| f.serial)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn each_wrong_certificate_has_its_code() {
        let pki = telematics_testkit::TestPki::generate().unwrap();
        let mine = pki.client("VIN1").unwrap();
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&mine.key).unwrap()).unwrap();
        let spki = key.subject_public_key_info();
        let exp = Expected {
            ca: pki.ca_cert(),
            spki: &spki,
            vin: "VIN1",
        };
        let now = 1_800_000_000;
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert!(check(&read(&mine.cert), exp, now).is_ok());
        let other_key = pki.client("VIN1").unwrap();
        assert_eq!(
            check(&read(&other_key.cert), exp, now).unwrap_err().0,
            Refusal::KeyMismatch
        );
        let exp_other_vin = Expected { vin: "VIN2", ..exp };
        let (r, serial) = check(&read(&mine.cert), exp_other_vin, now).unwrap_err();
        assert_eq!(r, Refusal::VinMismatch);
        assert!(serial.is_some());
        let rogue = pki.rogue_client("VIN1").unwrap();
        assert_eq!(
            check(&read(&rogue.cert), exp, now).unwrap_err().0,
            Refusal::Untrusted
        );
        assert_eq!(
            check(b"nope", exp, now).unwrap_err(),
            (Refusal::Malformed, None)
        );
        assert_eq!(
            check(&read(&mine.cert), exp, 4_200_000_000_000)
                .unwrap_err()
                .0,
            Refusal::Expired
        );
        assert_eq!(
            check(&read(&mine.cert), exp, 1).unwrap_err().0,
            Refusal::NotYetValid
        );
    }
}
