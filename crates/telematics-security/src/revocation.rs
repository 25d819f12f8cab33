//! Remote device revocation (docs/protocol.md §10): a back-end-signed [`DeviceRevocation`]
//! (tagged COSE_Sign1, EdDSA/Ed25519 with the pinned back-end key, purpose `device_revoke`,
//! external AAD `vehicles/{VIN}/devices/revoke`) revokes one paired device at once
//! ([`apply_revocation`]). It only removes access, so unlike a reset it needs no in-car
//! confirmation. The same effect from a paired device of the same car is the `revoke_device`
//! command action, which goes through the ordinary command pipeline (security code included)
//! and ends in [`revoke_active`].

use ciborium::Value;
use ring::rand::SecureRandom;

use crate::cbor::{self, IntMap};
use crate::error::{Error, Fault};
use crate::signed;
use crate::state::{Config, CredentialStatus, SecurityState};

/// Purpose string inside a device revocation.
pub const REVOKE_PURPOSE: &str = "device_revoke";
/// Maximum `expires_at - issued_at` of a device revocation, seconds (7 days: a revocation for a
/// car parked out of coverage must still take effect when it comes back).
pub const MAX_REVOKE_TTL_SECS: u64 = 7 * 24 * 3600;
/// Longest key id accepted in a revocation or a `revoke_device` command, bytes.
pub const MAX_KEY_ID_LEN: usize = 32;

/// External AAD of a device revocation: UTF-8 `vehicles/{VIN}/devices/revoke` (the topic).
pub fn revoke_aad(vin: &str) -> Vec<u8> {
    format!("vehicles/{vin}/devices/revoke").into_bytes()
}

/// A device revocation's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRevocation {
    /// VIN.
    pub vin: String,
    /// Key id of the device to revoke.
    pub key_id: Vec<u8>,
    /// Single-use nonce, 16..=32 bytes.
    pub nonce: Vec<u8>,
    /// Issued-at, Unix seconds.
    pub issued_at: u64,
    /// Expires-at, Unix seconds.
    pub expires_at: u64,
}

impl DeviceRevocation {
    /// Deterministic CBOR map `{1: vin, 2: nonce, 3: iat, 4: exp, 5: "device_revoke", 6: kid}`.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(&cbor::int_map(vec![
            (1, Value::Text(self.vin.clone())),
            (2, Value::Bytes(self.nonce.clone())),
            (3, Value::Integer(self.issued_at.into())),
            (4, Value::Integer(self.expires_at.into())),
            (5, Value::Text(REVOKE_PURPOSE.into())),
            (6, Value::Bytes(self.key_id.clone())),
        ]))
    }

    /// Strict parse (deterministic CBOR, keys 1..=6 only, right types and sizes): any
    /// violation is [`Fault::BadPayload`].
    pub fn from_cbor(b: &[u8]) -> Result<Self, Fault> {
        let m = IntMap::parse(b).map_err(|_| Fault::BadPayload)?;
        m.only(&[1, 2, 3, 4, 5, 6]).map_err(|_| Fault::BadPayload)?;
        if m.text(5) != Some(REVOKE_PURPOSE) {
            return Err(Fault::BadPayload);
        }
        let nonce = m.bytes(2).ok_or(Fault::BadPayload)?;
        let key_id = m.bytes(6).ok_or(Fault::BadPayload)?;
        if !signed::valid_nonce(nonce) || !valid_key_id(key_id) {
            return Err(Fault::BadPayload);
        }
        Ok(DeviceRevocation {
            vin: m.text(1).ok_or(Fault::BadPayload)?.to_owned(),
            key_id: key_id.to_vec(),
            nonce: nonce.to_vec(),
            issued_at: m.uint(3).ok_or(Fault::BadPayload)?,
            expires_at: m.uint(4).ok_or(Fault::BadPayload)?,
        })
    }

    /// Back-end side: sign into a tagged COSE_Sign1 with the back-end Ed25519 key.
    pub fn sign(&self, key: &ring::signature::Ed25519KeyPair) -> Result<Vec<u8>, Error> {
        signed::sign(key, self.to_cbor(), &revoke_aad(&self.vin))
    }

    /// Back-end side: a revocation of `key_id` for `vin` with a fresh 16-byte random nonce.
    pub fn new(
        vin: &str,
        key_id: &[u8],
        issued_at: u64,
        expires_at: u64,
        rng: &dyn SecureRandom,
    ) -> Result<Self, Error> {
        if !valid_key_id(key_id) {
            return Err(Error::Invalid("key id must be 1..=32 bytes"));
        }
        let mut nonce = vec![0u8; 16];
        rng.fill(&mut nonce).map_err(|_| Error::Rng)?;
        Ok(DeviceRevocation {
            vin: vin.to_owned(),
            key_id: key_id.to_vec(),
            nonce,
            issued_at,
            expires_at,
        })
    }
}

/// A key id of 1 to [`MAX_KEY_ID_LEN`] bytes.
pub(crate) fn valid_key_id(key_id: &[u8]) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&key_id.len())
}

/// Why a revocation was refused, with what is known of it: `revocation` is `Some` once the
/// signature verified (the back end's nonce and key id can then be echoed in the outcome).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRefused {
    /// The stable fault.
    pub fault: Fault,
    /// The authenticated payload, if the signature verified.
    pub revocation: Option<DeviceRevocation>,
}

/// Vehicle side: verify a device revocation against the pinned back-end public key and revoke
/// the device at `now`. Persist the state afterwards (the nonce is now used, the device
/// revoked); on a refusal `state` is unchanged. Order: size (`too_large`), decode (`decode`),
/// payload (`bad_payload`), signature over the AAD of the payload's VIN (`bad_signature`), VIN
/// (`wrong_vin`), time window (`ttl_too_long`, `not_yet_valid`, `expired`), nonce
/// (`nonce_reused`), key id (`unknown_key`, `revoked_key` when no longer active).
pub fn apply_revocation(
    state: &mut SecurityState,
    cfg: &Config,
    vin: &str,
    backend_public_key: &[u8],
    bytes: &[u8],
    now: u64,
) -> Result<DeviceRevocation, RevocationRefused> {
    let unauthenticated = |fault| RevocationRefused {
        fault,
        revocation: None,
    };
    // The AAD names the VIN the back end signed for, so a revocation for another car verifies
    // and is then refused `wrong_vin` (a signature is never valid across VINs either way).
    let payload = signed::verify(cfg, backend_public_key, bytes, |p| {
        DeviceRevocation::from_cbor(p).map(|r| revoke_aad(&r.vin))
    })
    .map_err(unauthenticated)?;
    let rev = DeviceRevocation::from_cbor(&payload).map_err(unauthenticated)?;
    let refuse = |fault| RevocationRefused {
        fault,
        revocation: Some(rev.clone()),
    };
    if rev.vin != vin {
        return Err(refuse(Fault::WrongVin));
    }
    let mut candidate = state.clone();
    signed::consume_nonce(
        &mut candidate,
        cfg,
        &rev.nonce,
        (rev.issued_at, rev.expires_at),
        MAX_REVOKE_TTL_SECS,
        now,
    )
    .map_err(refuse)?;
    revoke_active(&mut candidate, &rev.key_id, now).map_err(refuse)?;
    *state = candidate;
    Ok(rev)
}

/// Revoke the active device `key_id` at `now` (remote revocation and the `revoke_device`
/// action): `unknown_key` if it was never paired, `revoked_key` if it is no longer active
/// (revoked or voided by recovery). Its key id stays reserved; its commands are refused
/// `revoked_key` from now on.
pub fn revoke_active(state: &mut SecurityState, key_id: &[u8], now: u64) -> Result<(), Fault> {
    let c = state.credential_mut(key_id).ok_or(Fault::UnknownKey)?;
    if !c.is_active() {
        return Err(Fault::RevokedKey);
    }
    c.status = CredentialStatus::Revoked { at: now };
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const VIN: &str = "WBA3A5C51CF256985";
    const OTHER_VIN: &str = "1M8GDM9AXKP042788";
    const NOW: u64 = 1_800_000_000;

    fn cfg() -> Config {
        Config {
            pbkdf2_iterations: 1000,
            min_pbkdf2_iterations: 1000,
            ..Config::default()
        }
    }

    struct Car {
        state: SecurityState,
        kp: Ed25519KeyPair,
        phones: Vec<Vec<u8>>,
    }

    fn car() -> Car {
        let c = cfg();
        let rng = SystemRandom::new();
        let mut state = SecurityState::default();
        let proof = state.set_initial_code(&c, "2580", &rng, NOW - 100).unwrap();
        let a = state.add_device(proof, VIN, "a", &rng, NOW - 90).unwrap();
        let proof = state.check_code(&c, "2580", NOW - 80).unwrap();
        let b = state.add_device(proof, VIN, "b", &rng, NOW - 80).unwrap();
        Car {
            state,
            kp: Ed25519KeyPair::from_seed_unchecked(&[42; 32]).unwrap(),
            phones: vec![a.key_id.0, b.key_id.0],
        }
    }

    fn signed(car: &Car, vin: &str, kid: &[u8], iat: u64, exp: u64) -> Vec<u8> {
        DeviceRevocation::new(vin, kid, iat, exp, &SystemRandom::new())
            .unwrap()
            .sign(&car.kp)
            .unwrap()
    }

    fn apply(car: &mut Car, bytes: &[u8], now: u64) -> Result<DeviceRevocation, Fault> {
        let pk = car.kp.public_key().as_ref().to_vec();
        apply_revocation(&mut car.state, &cfg(), VIN, &pk, bytes, now).map_err(|r| r.fault)
    }

    #[test]
    fn a_signed_revocation_revokes_one_device_at_once_and_only_once() {
        let mut car = car();
        let kid = car.phones[0].clone();
        let msg = signed(&car, VIN, &kid, NOW, NOW + 600);
        let rev = apply(&mut car, &msg, NOW).unwrap();
        assert_eq!(rev.key_id, kid);
        assert_eq!(
            car.state.credential(&kid).unwrap().status,
            CredentialStatus::Revoked { at: NOW }
        );
        assert!(car.state.credential(&car.phones[1]).unwrap().is_active());
        // Replayed after use: the nonce is spent.
        let before = car.state.clone();
        assert_eq!(apply(&mut car, &msg, NOW + 1), Err(Fault::NonceReused));
        assert_eq!(car.state, before, "a refusal changes nothing");
        // A fresh revocation of the same device: already revoked.
        let again = signed(&car, VIN, &kid, NOW, NOW + 600);
        assert_eq!(apply(&mut car, &again, NOW + 2), Err(Fault::RevokedKey));
    }

    #[test]
    fn every_refusal_has_its_stable_code_and_changes_nothing() {
        let mut car = car();
        let kid = car.phones[0].clone();
        let before = car.state.clone();
        let other_vin = signed(&car, OTHER_VIN, &kid, NOW, NOW + 600);
        assert_eq!(apply(&mut car, &other_vin, NOW), Err(Fault::WrongVin));
        let unknown = signed(&car, VIN, &[9; 8], NOW, NOW + 600);
        assert_eq!(apply(&mut car, &unknown, NOW), Err(Fault::UnknownKey));
        let expired = signed(&car, VIN, &kid, NOW - 700, NOW - 100);
        assert_eq!(apply(&mut car, &expired, NOW), Err(Fault::Expired));
        let future = signed(&car, VIN, &kid, NOW + 3600, NOW + 7200);
        assert_eq!(apply(&mut car, &future, NOW), Err(Fault::NotYetValid));
        let long = signed(&car, VIN, &kid, NOW, NOW + MAX_REVOKE_TTL_SECS + 1);
        assert_eq!(apply(&mut car, &long, NOW), Err(Fault::TtlTooLong));
        // Signed by another key.
        let forger = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
        let forged = DeviceRevocation::new(VIN, &kid, NOW, NOW + 600, &SystemRandom::new())
            .unwrap()
            .sign(&forger)
            .unwrap();
        assert_eq!(apply(&mut car, &forged, NOW), Err(Fault::BadSignature));
        // One flipped byte anywhere: never accepted.
        let good = signed(&car, VIN, &kid, NOW, NOW + 600);
        for i in 0..good.len() {
            let mut m = good.clone();
            m[i] ^= 0x01;
            assert!(apply(&mut car, &m, NOW).is_err(), "byte {i}");
        }
        // A reset authorization is not a revocation (purpose and AAD differ).
        let reset =
            crate::client::sign_reset(&car.kp, VIN, NOW, NOW + 600, &SystemRandom::new()).unwrap();
        assert_eq!(apply(&mut car, &reset, NOW), Err(Fault::BadPayload));
        assert_eq!(apply(&mut car, &[0u8; 5000], NOW), Err(Fault::TooLarge));
        assert_eq!(apply(&mut car, b"\xa0", NOW), Err(Fault::Decode));
        assert_eq!(car.state, before);
    }

    #[test]
    fn revoke_active_refuses_unknown_and_inactive_devices() {
        let mut car = car();
        let kid = car.phones[1].clone();
        assert_eq!(
            revoke_active(&mut car.state, &[1; 8], NOW),
            Err(Fault::UnknownKey)
        );
        revoke_active(&mut car.state, &kid, NOW).unwrap();
        assert_eq!(
            revoke_active(&mut car.state, &kid, NOW),
            Err(Fault::RevokedKey)
        );
    }
}
