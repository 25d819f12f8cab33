//! Reset authorizations whose signature *verifies*: the fuzzer supplies the COSE_Sign1
//! **payload**, the harness signs it with the back-end key of the `reset-1` vector of
//! docs/protocol.md, so `arm_reset` gets past the signature check into payload parsing, the
//! VIN, time-window and nonce checks.
//!
//! Input layout (see fuzz/seed-corpora.sh, which writes valid authorizations in this form):
//!
//! | byte | meaning |
//! |------|---------|
//! | 0    | flags: bit 0 sign for another VIN (external AAD of another car), bits 1-2 clock (in window / expired / not yet valid / at the skew edge), bit 3 nonce already used |
//! | 1..  | payload (CBOR reset authorization) |
//!
//! Invariants (a violation panics = a finding): never panics; a signature made for another
//! VIN's AAD never verifies; an accepted authorization is for this VIN, has a bounded TTL and a
//! 16..=32-byte nonce, arms exactly one pending reset, is single-use (the same bytes again are
//! `nonce_reused`), and its payload re-encodes and re-verifies to the same authorization.
#![no_main]

use std::sync::OnceLock;

use coset::{TaggedCborSerializable, iana};
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};
use telematics_security::recovery::{MAX_RESET_TTL_SECS, reset_aad};
use telematics_security::{Config, Fault, SecurityState, arm_reset};

const VIN: &str = "WBA3A5C51CF256985";
const OTHER_VIN: &str = "WBA3A5C51CF256986";
const BACKEND_SEED: [u8; 32] = [0x42; 32];
const BACKEND_PK: [u8; 32] = [
    0x21, 0x52, 0xf8, 0xd1, 0x9b, 0x79, 0x1d, 0x24, 0x45, 0x32, 0x42, 0xe1, 0x5f, 0x2e, 0xab, 0x6c,
    0xb7, 0xcf, 0xfa, 0x7b, 0x6a, 0x5e, 0xd3, 0x00, 0x97, 0x96, 0x0e, 0x06, 0x98, 0x81, 0xdb, 0x12,
];
const ISSUED_AT: u64 = 1_800_000_000;
/// The nonce of the `reset-1` vector.
const VECTOR_NONCE: [u8; 16] = [
    0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
];

const VECTOR_PAYLOAD: &str = "a5017157424133413543353143463235363938350250505152535455565758595a5b5c5d5e5f031a6b49d200041a6b49d458056a636f64655f7265736574";
const VECTOR_SIGN1: &str = "d28443a10127a0583ea5017157424133413543353143463235363938350250505152535455565758595a5b5c5d5e5f031a6b49d200041a6b49d458056a636f64655f7265736574584031cbc83e3e1dfff88eaea0d3864a1e46800b5bdff9ff156caee659524bcce04b22e3006f122d00da2170371e7db39c6b8c0999f0b4dc726398dcfbde364ee409";

fn key() -> &'static Ed25519KeyPair {
    static K: OnceLock<Ed25519KeyPair> = OnceLock::new();
    K.get_or_init(|| {
        let kp = Ed25519KeyPair::from_seed_unchecked(&BACKEND_SEED).expect("ed25519 seed");
        assert_eq!(
            kp.public_key().as_ref(),
            &BACKEND_PK[..],
            "reset-1 vector key"
        );
        // Self-test: the vector payload signs to the vector's COSE_Sign1 byte for byte, so
        // the seeds (built from it) start past the signature check.
        let signed = sign_with(&kp, &unhex(VECTOR_PAYLOAD), VIN);
        assert_eq!(
            signed,
            unhex(VECTOR_SIGN1),
            "harness signer disagrees with reset-1"
        );
        let armed = arm_reset(
            &mut SecurityState::default(),
            &Config::default(),
            VIN,
            &BACKEND_PK,
            &signed,
            ISSUED_AT + 1,
        );
        assert_eq!(
            armed.map(|a| a.nonce),
            Ok(VECTOR_NONCE.to_vec()),
            "reset-1 arms"
        );
        kp
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex constant"))
        .collect()
}

/// Sign `payload` as the back end does (ResetAuthorization::sign), for any bytes.
fn sign(payload: &[u8], aad_vin: &str) -> Vec<u8> {
    sign_with(key(), payload, aad_vin)
}

fn sign_with(kp: &Ed25519KeyPair, payload: &[u8], aad_vin: &str) -> Vec<u8> {
    coset::CoseSign1Builder::new()
        .protected(
            coset::HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .build(),
        )
        .payload(payload.to_vec())
        .create_signature(&reset_aad(aad_vin), |data| kp.sign(data).as_ref().to_vec())
        .build()
        .to_tagged_vec()
        .expect("COSE encode")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let cfg = Config::default();
    let aad_vin = if flags & 1 != 0 { OTHER_VIN } else { VIN };
    let now = match (flags >> 1) & 3 {
        0 => ISSUED_AT + 1,
        1 => ISSUED_AT + 2 * MAX_RESET_TTL_SECS,
        2 => ISSUED_AT - 10_000,
        _ => ISSUED_AT - cfg.clock_skew_secs,
    };
    let mut state = SecurityState::default();
    if flags & 8 != 0 {
        state
            .used_nonces
            .push((VECTOR_NONCE.to_vec(), ISSUED_AT + 600));
    }
    let bytes = sign(payload, aad_vin);
    let auth = match arm_reset(&mut state, &cfg, VIN, &BACKEND_PK, &bytes, now) {
        Err(f) => {
            if aad_vin != VIN && bytes.len() <= cfg.max_message_size {
                assert_eq!(f, Fault::BadSignature, "foreign-VIN signature");
            }
            assert!(state.pending_reset.is_none(), "armed on {f:?}");
            return;
        }
        Ok(a) => a,
    };
    assert_eq!(aad_vin, VIN, "a signature over another VIN's AAD verified");
    assert_eq!(auth.vin, VIN);
    assert!((16..=32).contains(&auth.nonce.len()));
    assert!(auth.expires_at >= auth.issued_at);
    assert!(auth.expires_at - auth.issued_at <= MAX_RESET_TTL_SECS);
    let pending = state.pending_reset.as_ref().expect("armed");
    assert_eq!(pending.nonce, auth.nonce);
    assert_eq!(pending.armed_at, now);
    assert_eq!(
        state
            .used_nonces
            .iter()
            .filter(|(n, _)| *n == auth.nonce)
            .count(),
        1
    );
    // Single use.
    let mut again = state.clone();
    assert_eq!(
        arm_reset(&mut again, &cfg, VIN, &BACKEND_PK, &bytes, now),
        Err(Fault::NonceReused)
    );
    // Round trip through the back-end signer: same authorization, same bytes when canonical.
    let resigned = auth.sign(key()).expect("sign");
    let mut fresh = SecurityState::default();
    assert_eq!(
        arm_reset(&mut fresh, &cfg, VIN, &BACKEND_PK, &resigned, now).as_ref(),
        Ok(&auth)
    );
});
