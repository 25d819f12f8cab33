//! rustls (TLS handshake) and CSR signing through a key that may never leave its token: the SHA-256 digest
//! is computed in software (ring), the token signs the digest (CKM_ECDSA) and returns raw
//! `r || s`, converted here to the DER `ECDSA-Sig-Value` that TLS and X.509 carry.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::sign::{Signer, SigningKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;

use crate::error::{KeyError, Result};

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66
/// bytes); followed by the 65-byte uncompressed point.
pub(crate) const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SPKI DER of a P-256 uncompressed point (`0x04 || x || y`).
pub(crate) fn p256_spki(point: &[u8]) -> Result<SubjectPublicKeyInfoDer<'static>> {
    if point.len() != 65 || point[0] != 0x04 {
        return Err(KeyError::UnsupportedKey(format!(
            "EC point of {} bytes is not an uncompressed P-256 point",
            point.len()
        )));
    }
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    Ok(SubjectPublicKeyInfoDer::from(der))
}

/// The uncompressed point of a P-256 SPKI.
pub(crate) fn p256_point(spki: &[u8]) -> Result<&[u8]> {
    spki.strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|p| p.len() == 65)
        .ok_or_else(|| KeyError::UnsupportedKey("not an EC P-256 public key".into()))
}

/// Raw ECDSA P-256 over a 32-byte digest, returning `r || s` (64 bytes).
pub(crate) trait DigestSigner: std::fmt::Debug + Send + Sync {
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>>;
}

fn der_integer(out: &mut Vec<u8>, be: &[u8]) {
    let trimmed = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => &[0u8][..],
    };
    let pad = trimmed[0] & 0x80 != 0;
    out.push(0x02);
    out.push((trimmed.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

/// `r || s` (64 bytes) to DER `SEQUENCE { INTEGER r, INTEGER s }`.
pub(crate) fn raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.len() != 64 {
        return Err(KeyError::Pkcs11 {
            op: "C_Sign",
            detail: format!("ECDSA signature of {} bytes, expected 64", raw.len()),
        });
    }
    let mut body = Vec::with_capacity(72);
    der_integer(&mut body, &raw[..32]);
    der_integer(&mut body, &raw[32..]);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    Ok(out)
}

/// A P-256 identity key in a token, as a rustls [`SigningKey`] (only scheme
/// ECDSA_NISTP256_SHA256).
#[derive(Debug, Clone)]
pub(crate) struct TokenSigningKey {
    pub(crate) signer: Arc<dyn DigestSigner>,
    pub(crate) spki: SubjectPublicKeyInfoDer<'static>,
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(self.spki.clone())
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

impl Signer for TokenSigningKey {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        let raw = self
            .signer
            .sign_digest(&d)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        raw_to_der(&raw).map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// An identity key wherever it lives, with its public key: signs a CSR or any other
/// ECDSA P-256 SHA-256 signature with the key (DER `ECDSA-Sig-Value`), e.g. for certificate
/// renewal, without the daemon linking a certificate generator.
#[derive(Debug, Clone)]
pub struct IdentityKey {
    key: Arc<dyn SigningKey>,
    point: Vec<u8>,
}

impl IdentityKey {
    /// The identity key of a rustls signing key (`keys.unsupported_key` unless EC P-256).
    pub fn new(key: Arc<dyn SigningKey>) -> Result<IdentityKey> {
        let spki = key
            .public_key()
            .ok_or_else(|| KeyError::UnsupportedKey("key has no public key".into()))?;
        let point = p256_point(spki.as_ref())?.to_vec();
        Ok(IdentityKey { key, point })
    }

    /// SubjectPublicKeyInfo DER of the key.
    pub fn spki(&self) -> SubjectPublicKeyInfoDer<'static> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        SubjectPublicKeyInfoDer::from(der)
    }

    /// The uncompressed P-256 point (`0x04 || x || y`).
    pub fn point(&self) -> &[u8] {
        &self.point
    }

    /// ECDSA P-256 SHA-256 signature of `msg`, DER encoded (as X.509 and CSRs carry it).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .ok_or_else(|| KeyError::UnsupportedKey("not an ECDSA P-256 key".into()))?;
        signer.sign(msg).map_err(|e| KeyError::Pkcs11 {
            op: "sign",
            detail: e.to_string(),
        })
    }

    /// The rustls signing key (TLS handshake).
    pub fn tls(&self) -> Arc<dyn SigningKey> {
        self.key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_of_raw_pads_high_bits_and_strips_zeros() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r high bit set: 33-byte INTEGER with a 0x00 prefix
        raw[31] = 1;
        raw[63] = 0x7f; // s = 0x7f: one byte
        let der = raw_to_der(&raw).expect("der");
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 0x7f]);
        assert_eq!(der[1] as usize, der.len() - 2);
    }

    #[test]
    fn der_signature_verifies_with_ring() {
        // A software key signs; its DER is turned into r||s and back: ring must accept it.
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("gen");
        let kp = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("kp");
        use ring::signature::KeyPair;
        let raw = kp.sign(&rng, b"hello").expect("sign");
        let der = raw_to_der(raw.as_ref()).expect("der");
        let pk = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            kp.public_key().as_ref(),
        );
        pk.verify(b"hello", &der).expect("DER signature verifies");
        assert!(p256_spki(kp.public_key().as_ref()).is_ok());
        assert!(p256_spki(&[4u8; 10]).is_err());
    }
}
