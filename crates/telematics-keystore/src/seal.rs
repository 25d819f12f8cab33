//! Sealing of records at rest: AES-256-GCM with a fresh random 96-bit nonce per write and the
//! record's identity as additional data (a record moved under another identity does not open).
//!
//! Format (docs/protocol.md, "Sealed security state"):
//! `"TMS1" || kind (1 byte: 1 = token key, 2 = key file) || nonce (12) || ciphertext || tag (16)`.

use std::fmt;
use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{KeyError, Result};
use crate::pkcs11::TokenAesKey;

/// Magic of a sealed record.
pub const SEAL_MAGIC: &[u8; 4] = b"TMS1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = SEAL_MAGIC.len() + 1 + NONCE_LEN;

/// Which key sealed a record (byte 4 of the format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKind {
    /// AES key inside the PKCS#11 token (CKM_AES_GCM in the token).
    Token = 1,
    /// AES key from a key file or systemd credential (ring).
    KeyFile = 2,
}

/// Whether `bytes` is a sealed record (starts with [`SEAL_MAGIC`]); a clear record of the
/// security state is CBOR and starts with a map byte.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(SEAL_MAGIC)
}

enum Key {
    File(Box<LessSafeKey>),
    Token(Arc<TokenAesKey>),
}

/// Seals and unseals records with the store's sealing key. Cheap to share (`Arc`).
pub struct Sealer {
    key: Key,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer over a 32-byte key file's key.
    pub(crate) fn from_key_bytes(bytes: &[u8]) -> Result<Sealer> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KeyError::Seal("sealing key must be 32 bytes".into()))?;
        Ok(Sealer {
            key: Key::File(Box::new(LessSafeKey::new(key))),
            rng: SystemRandom::new(),
        })
    }

    pub(crate) fn from_token(key: Arc<TokenAesKey>) -> Sealer {
        Sealer {
            key: Key::Token(key),
            rng: SystemRandom::new(),
        }
    }

    /// Which kind of key this sealer uses.
    pub fn kind(&self) -> SealKind {
        match self.key {
            Key::File(_) => SealKind::KeyFile,
            Key::Token(_) => SealKind::Token,
        }
    }

    /// Seals `plaintext` under `aad` (the record's identity) with a fresh nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| KeyError::Seal("no randomness for the nonce".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(SEAL_MAGIC);
        out.push(self.kind() as u8);
        out.extend_from_slice(&nonce);
        match &self.key {
            Key::File(k) => {
                let mut buf = plaintext.to_vec();
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buf,
                )
                .map_err(|_| KeyError::Seal("AES-GCM seal failed".into()))?;
                out.extend_from_slice(&buf);
            }
            Key::Token(k) => out.extend_from_slice(&k.encrypt(&nonce, aad, plaintext)?),
        }
        Ok(out)
    }

    /// Opens a record sealed by [`Sealer::seal`] under the same `aad`. A wrong key, another
    /// identity, a truncated or tampered record: [`KeyError::Unseal`].
    pub fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if !is_sealed(sealed) || sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(KeyError::Unseal("not a sealed record".into()));
        }
        let kind = sealed[SEAL_MAGIC.len()];
        if kind != self.kind() as u8 {
            return Err(KeyError::Unseal(format!(
                "record sealed with key kind {kind}, this store's sealing key is {:?}",
                self.kind()
            )));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[SEAL_MAGIC.len() + 1..HEADER_LEN]);
        let body = &sealed[HEADER_LEN..];
        match &self.key {
            Key::File(k) => {
                let mut buf = body.to_vec();
                let plain = k
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut buf,
                    )
                    .map_err(|_| {
                        KeyError::Unseal(
                            "authentication failed (wrong key or tampered record)".into(),
                        )
                    })?;
                Ok(plain.to_vec())
            }
            Key::Token(k) => k.decrypt(&nonce, aad, body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_sealing_round_trips_and_binds_aad_and_key() {
        let s = Sealer::from_key_bytes(&[7u8; 32]).expect("sealer");
        let a = s.seal(b"rec-1", b"secret").expect("seal");
        let b = s.seal(b"rec-1", b"secret").expect("seal");
        assert_ne!(a, b, "fresh nonce per write");
        assert!(is_sealed(&a));
        assert_eq!(s.unseal(b"rec-1", &a).expect("open"), b"secret");
        assert!(matches!(s.unseal(b"rec-2", &a), Err(KeyError::Unseal(_))));
        let other = Sealer::from_key_bytes(&[8u8; 32]).expect("sealer");
        assert!(matches!(
            other.unseal(b"rec-1", &a),
            Err(KeyError::Unseal(_))
        ));
        let mut tampered = a.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            s.unseal(b"rec-1", &tampered),
            Err(KeyError::Unseal(_))
        ));
        assert!(matches!(
            s.unseal(b"rec-1", &a[..20]),
            Err(KeyError::Unseal(_))
        ));
        assert!(Sealer::from_key_bytes(&[0u8; 16]).is_err());
    }
}
