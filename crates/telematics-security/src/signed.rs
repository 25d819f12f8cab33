//! Back-end-signed messages (docs/protocol.md §9, §10): the COSE_Sign1 / EdDSA (Ed25519)
//! verification against the pinned back-end key, the validity window and the single-use
//! nonce, shared by the reset authorization ([`crate::recovery`]) and the remote device
//! revocation ([`crate::revocation`]). Each message type has its own purpose string and its own
//! external AAD, so one can never be taken for the other.

use coset::{TaggedCborSerializable, iana};
use ring::signature::{ED25519, UnparsedPublicKey};

use crate::error::{Error, Fault};
use crate::state::{Config, SecurityState};

/// Back-end side: sign `payload` into a tagged COSE_Sign1 (protected header `{1: -8}` only)
/// with external AAD `aad`.
pub(crate) fn sign(
    key: &ring::signature::Ed25519KeyPair,
    payload: Vec<u8>,
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    let protected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .build();
    coset::CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(aad, |data| key.sign(data).as_ref().to_vec())
        .build()
        .to_tagged_vec()
        .map_err(|e| Error::Encoding(e.to_string()))
}

/// Vehicle side: size limit, canonical tagged COSE_Sign1 with exactly `alg: EdDSA`, then the
/// Ed25519 signature over the Sig_structure with the external AAD that `aad` derives from the
/// (not yet authenticated) payload. Returns the authenticated payload bytes.
pub(crate) fn verify(
    cfg: &Config,
    backend_public_key: &[u8],
    bytes: &[u8],
    aad: impl FnOnce(&[u8]) -> Result<Vec<u8>, Fault>,
) -> Result<Vec<u8>, Fault> {
    if bytes.len() > cfg.max_message_size {
        return Err(Fault::TooLarge);
    }
    let msg = coset::CoseSign1::from_tagged_slice(bytes).map_err(|_| Fault::Decode)?;
    if msg.clone().to_tagged_vec().map_err(|_| Fault::Decode)? != bytes {
        return Err(Fault::Decode);
    }
    let ph = &msg.protected.header;
    if ph.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::EdDSA))
        || !ph.crit.is_empty()
        || !msg.unprotected.is_empty()
    {
        return Err(Fault::Decode);
    }
    let payload = msg.payload.as_deref().ok_or(Fault::Decode)?;
    let aad = aad(payload)?;
    let pk = UnparsedPublicKey::new(&ED25519, backend_public_key);
    msg.verify_signature(&aad, |sig, data| {
        pk.verify(data, sig).map_err(|_| Fault::BadSignature)
    })?;
    Ok(payload.to_vec())
}

/// The validity window and single-use nonce of an authenticated back-end message: `ttl_too_long`
/// (negative or above `max_ttl`), `not_yet_valid`, `expired` (both with the clock-skew
/// tolerance), `nonce_reused`; on success the nonce is recorded as used in `state` (persist
/// it). Expired nonces are forgotten first: they can never verify again.
pub(crate) fn consume_nonce(
    state: &mut SecurityState,
    cfg: &Config,
    nonce: &[u8],
    (issued_at, expires_at): (u64, u64),
    max_ttl: u64,
    now: u64,
) -> Result<(), Fault> {
    if expires_at < issued_at || expires_at - issued_at > max_ttl {
        return Err(Fault::TtlTooLong);
    }
    if issued_at > now.saturating_add(cfg.clock_skew_secs) {
        return Err(Fault::NotYetValid);
    }
    if expires_at.saturating_add(cfg.clock_skew_secs) < now {
        return Err(Fault::Expired);
    }
    state
        .used_nonces
        .retain(|(_, exp)| exp.saturating_add(cfg.clock_skew_secs) >= now);
    if state.used_nonces.iter().any(|(n, _)| n.as_slice() == nonce) {
        return Err(Fault::NonceReused);
    }
    state.used_nonces.push((nonce.to_vec(), expires_at));
    Ok(())
}

/// A nonce of 16 to 32 bytes.
pub(crate) fn valid_nonce(nonce: &[u8]) -> bool {
    (16..=32).contains(&nonce.len())
}
