//! Recovery: a back-end-signed reset authorization (tagged COSE_Sign1, EdDSA/Ed25519) arms a
//! pending reset ([`arm_reset`]); the in-car UI confirms a new code (physical presence) within
//! `reset_confirm_window_secs` to complete it ([`confirm_reset`]). The two are separate calls
//! with `now` passed in: arming needs only the authorization bytes, so it works the same
//! whatever carried them (admin socket, or the MQTT topic its AAD `vehicles/{VIN}/reset`
//! names); confirming needs the car.
//!
//! Completing a reset: new salt + verifier, lockout cleared, **every active credential is
//! revoked** (`VoidedByRecovery`) and the epoch increments. Revocation (not counter reset) is
//! deliberate: resetting counters to 0 would make every previously captured command
//! replayable again, and the usual reasons for recovery (lost phone, leaked code) mean the old
//! credentials should not survive anyway; re-pairing happens in the car, where the owner is.

use ciborium::Value;
use ring::rand::SecureRandom;

use crate::cbor::{self, IntMap};
use crate::error::{Error, Fault};
use crate::signed;
use crate::state::{
    Config, CredentialStatus, LockoutState, PairingRecord, PendingReset, SecurityState,
};

/// Purpose string inside a reset authorization.
pub const RESET_PURPOSE: &str = "code_reset";
/// External AAD of a reset authorization: UTF-8 `vehicles/{VIN}/reset`.
pub fn reset_aad(vin: &str) -> Vec<u8> {
    format!("vehicles/{vin}/reset").into_bytes()
}
/// Maximum `expires_at - issued_at` of a reset authorization, seconds.
pub const MAX_RESET_TTL_SECS: u64 = 24 * 3600;

/// A reset authorization's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetAuthorization {
    /// VIN.
    pub vin: String,
    /// Single-use nonce, 16..=32 bytes.
    pub nonce: Vec<u8>,
    /// Issued-at, Unix seconds.
    pub issued_at: u64,
    /// Expires-at, Unix seconds.
    pub expires_at: u64,
}

impl ResetAuthorization {
    /// CBOR map `{1: vin, 2: nonce, 3: iat, 4: exp, 5: "code_reset"}`.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(&cbor::int_map(vec![
            (1, Value::Text(self.vin.clone())),
            (2, Value::Bytes(self.nonce.clone())),
            (3, Value::Integer(self.issued_at.into())),
            (4, Value::Integer(self.expires_at.into())),
            (5, Value::Text(RESET_PURPOSE.into())),
        ]))
    }

    fn from_cbor(b: &[u8]) -> Result<Self, Fault> {
        let m = IntMap::parse(b).map_err(|_| Fault::BadPayload)?;
        m.only(&[1, 2, 3, 4, 5]).map_err(|_| Fault::BadPayload)?;
        if m.text(5) != Some(RESET_PURPOSE) {
            return Err(Fault::BadPayload);
        }
        let nonce = m.bytes(2).ok_or(Fault::BadPayload)?;
        if !signed::valid_nonce(nonce) {
            return Err(Fault::BadPayload);
        }
        Ok(ResetAuthorization {
            vin: m.text(1).ok_or(Fault::BadPayload)?.to_owned(),
            nonce: nonce.to_vec(),
            issued_at: m.uint(3).ok_or(Fault::BadPayload)?,
            expires_at: m.uint(4).ok_or(Fault::BadPayload)?,
        })
    }

    /// Back-end side: sign into a tagged COSE_Sign1 with the back-end Ed25519 key.
    pub fn sign(&self, key: &ring::signature::Ed25519KeyPair) -> Result<Vec<u8>, Error> {
        signed::sign(key, self.to_cbor(), &reset_aad(&self.vin))
    }
}

/// Vehicle side: verify a reset authorization against the pinned back-end public key
/// (32-byte Ed25519) and arm a pending reset. Persist the state afterwards (the nonce is now
/// used). Order: size, decode, signature, payload, VIN, time window, nonce.
pub fn arm_reset(
    state: &mut SecurityState,
    cfg: &Config,
    vin: &str,
    backend_public_key: &[u8],
    bytes: &[u8],
    now: u64,
) -> Result<ResetAuthorization, Fault> {
    let payload = signed::verify(cfg, backend_public_key, bytes, |_| Ok(reset_aad(vin)))?;
    let auth = ResetAuthorization::from_cbor(&payload)?;
    if auth.vin != vin {
        return Err(Fault::WrongVin);
    }
    signed::consume_nonce(
        state,
        cfg,
        &auth.nonce,
        (auth.issued_at, auth.expires_at),
        MAX_RESET_TTL_SECS,
        now,
    )?;
    state.pending_reset = Some(PendingReset {
        nonce: auth.nonce.clone(),
        armed_at: now,
        confirm_by: now.saturating_add(cfg.reset_confirm_window_secs),
    });
    Ok(auth)
}

/// In-car confirmation (physical presence): set the new code and complete the reset. Fails with
/// `no_pending_reset` when nothing is armed or the confirmation window passed. Persist after.
pub fn confirm_reset(
    state: &mut SecurityState,
    cfg: &Config,
    new_code: &str,
    rng: &dyn SecureRandom,
    now: u64,
) -> Result<(), Error> {
    cfg.validate()?;
    match &state.pending_reset {
        Some(p) if now <= p.confirm_by => {}
        _ => {
            state.pending_reset = None;
            return Err(Fault::NoPendingReset.into());
        }
    }
    let record = PairingRecord::new(new_code, cfg.pbkdf2_iterations, rng, now)?;
    state.pairing = Some(record);
    let seq = state.lockout.check_seq.wrapping_add(1);
    state.lockout = LockoutState {
        check_seq: seq,
        ..LockoutState::default()
    };
    for c in &mut state.credentials {
        if c.is_active() {
            c.status = CredentialStatus::VoidedByRecovery { at: now };
        }
    }
    state.epoch = state.epoch.wrapping_add(1);
    state.pending_reset = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const VIN: &str = "WBA3A5C51CF256985";
    const NOW: u64 = 1_800_000_000;

    fn cfg() -> Config {
        Config {
            pbkdf2_iterations: 1000,
            min_pbkdf2_iterations: 1000,
            ..Config::default()
        }
    }

    /// A hard-locked, paired state and a fresh authorization signed at `NOW`.
    fn locked_and_signed() -> (SecurityState, Ed25519KeyPair, Vec<u8>) {
        let c = cfg();
        let rng = SystemRandom::new();
        let mut st = SecurityState::default();
        let proof = st.set_initial_code(&c, "2580", &rng, NOW - 100).unwrap();
        st.add_device(proof, VIN, "phone", &rng, NOW - 90).unwrap();
        st.lockout.hard_locked = true;
        st.lockout.consecutive_failures = c.hard_limit;
        let kp = Ed25519KeyPair::from_seed_unchecked(&[42; 32]).unwrap();
        let auth = crate::client::sign_reset(&kp, VIN, NOW, NOW + 3600, &rng).unwrap();
        (st, kp, auth)
    }

    #[test]
    fn arm_then_confirm_within_the_window() {
        let c = cfg();
        let (mut st, kp, auth) = locked_and_signed();
        arm_reset(&mut st, &c, VIN, kp.public_key().as_ref(), &auth, NOW).unwrap();
        let p = st.pending_reset.clone().unwrap();
        assert_eq!(p.confirm_by, NOW + c.reset_confirm_window_secs);
        // Arming alone changes nothing else: the hard lock stays in force.
        assert_eq!(st.retry_after(NOW), Some(crate::RetryAfter::UntilRecovery));
        // A weak new code is refused; the reset stays armed for a better one.
        assert_eq!(
            confirm_reset(&mut st, &c, "1111", &SystemRandom::new(), NOW + 1)
                .unwrap_err()
                .code(),
            "weak_code"
        );
        assert_eq!(st.pending_reset, Some(p));
        // The last second of the window still confirms.
        let at = NOW + c.reset_confirm_window_secs;
        confirm_reset(&mut st, &c, "4826", &SystemRandom::new(), at).unwrap();
        assert_eq!(st.retry_after(at), None);
        assert_eq!(st.pending_reset, None);
        assert_eq!(st.epoch, 1);
        assert!(st.credentials.iter().all(|c| !c.is_active()));
        assert!(st.pairing.as_ref().unwrap().verify("4826"));
    }

    #[test]
    fn confirmation_after_the_window_is_refused_and_disarms() {
        let c = cfg();
        let (mut st, kp, auth) = locked_and_signed();
        arm_reset(&mut st, &c, VIN, kp.public_key().as_ref(), &auth, NOW).unwrap();
        let late = NOW + c.reset_confirm_window_secs + 1;
        let e = confirm_reset(&mut st, &c, "4826", &SystemRandom::new(), late).unwrap_err();
        assert!(matches!(e, Error::Fault(Fault::NoPendingReset)), "{e:?}");
        assert_eq!(e.code(), "no_pending_reset");
        assert_eq!(st.pending_reset, None, "expired reset disarmed");
        // Nothing changed: old code, hard lock, devices.
        assert!(st.pairing.as_ref().unwrap().verify("2580"));
        assert!(st.lockout.hard_locked);
        assert!(st.credentials[0].is_active());
        // The used authorization cannot re-arm (its nonce is spent).
        assert_eq!(
            arm_reset(&mut st, &c, VIN, kp.public_key().as_ref(), &auth, late),
            Err(Fault::NonceReused)
        );
    }
}
