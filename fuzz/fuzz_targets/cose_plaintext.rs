//! Structure-aware command fuzzing that reaches *past* the AEAD.
//!
//! The fuzzer supplies the command **plaintext** (plus a few header / state choices); the
//! harness seals it correctly as a tagged COSE_Encrypt0 with the device key of a fixed paired
//! state (the `command-1` vector of docs/protocol.md, PBKDF2 lowered to 1 iteration) and runs
//! the full two-phase verification (`Verifier::begin` -> `PendingCodeCheck::finish`). So the
//! strict plaintext decoding, the VIN / time-window / counter / lockout checks and the code
//! check are all exercised.
//!
//! Input layout (see fuzz/seed-corpora.sh, which writes valid commands in this form):
//!
//! | byte    | meaning |
//! |---------|---------|
//! | 0       | flags: bits 0-1 kid (0,3 active / 1 revoked / 2 unknown), bit 2 header VIN of another car, bit 3 last counter preset to 41, bits 4-5 lockout preset (none / 2 failures / back-off running / hard locked), bits 6-7 clock (in window / expired / not yet valid / at the skew edge) |
//! | 1..13   | AES-GCM IV |
//! | 13..    | plaintext (CBOR command payload) |
//!
//! Invariants checked (a violation panics = a finding):
//! * never panics; every rejection's audit record carries its fault code;
//! * a command that passes `begin` has a plaintext that parses, targets this VIN, comes from
//!   the active key, and consumed the counter: the same bytes again are a `replay`;
//! * a verified command round-trips: its fields equal the parsed plaintext, the code is the
//!   paired code, the payload re-encodes and re-parses to itself, the lockout is cleared.
#![no_main]

use std::sync::OnceLock;

use coset::cbor::value::Value;
use coset::{TaggedCborSerializable, iana};
use libfuzzer_sys::fuzz_target;
use ring::aead;
use telematics_security::envelope::{
    CommandPayload, HEADER_VIN, INFO_COMMAND, command_aad, derive_key,
};
use telematics_security::{
    AuditOutcome, Config, CredentialStatus, DeviceCredential, Fault, KeyId, PairingRecord,
    SecurityState, Verifier,
};

/// The `command-1` vector of docs/protocol.md.
const VIN: &str = "WBA3A5C51CF256985";
const OTHER_VIN: &str = "WBA3A5C51CF256986";
const CODE: &str = "2580";
const KID: [u8; 8] = [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8];
const REVOKED_KID: [u8; 8] = [0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8];
const UNKNOWN_KID: [u8; 8] = [0xff; 8];
const SECRET: [u8; 32] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
];
const ISSUED_AT: u64 = 1_800_000_000;
const VECTOR_IV: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const VECTOR_PLAINTEXT: &str = "a701715742413341354335314346323536393835025000112233445566778899aabbccddeeff0366756e6c6f636b0501061a6b49d200071a6b49d278086432353830";
const VECTOR_ENVELOPE: &str = "d0835824a301030448a1a2a3a4a5a6a7a83a00010000715742413341354335314346323536393835a1054c000102030405060708090a0b58521a4465bec6bafcc0453b6f76c6c40958d62d6c8266d8036e4e30b638064d4bb00a5d5f63448b6bbef786e1569fa0eece4b4b4729cb71f6136693b15981e11d01901657022781eae9abab184eb68d84f3c7f1";

struct Fixture {
    cfg: Config,
    verifier: Verifier,
    state: SecurityState,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex constant"))
        .collect()
}

/// Seal `plaintext` exactly as a client does (docs/protocol.md §command envelope), but without
/// requiring it to be a well-formed payload.
fn seal(kid: &[u8], header_vin: &str, iv: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
    let key = derive_key(&SECRET, INFO_COMMAND, header_vin);
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, &key).expect("32-byte key"),
    );
    let protected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::A256GCM)
        .key_id(kid.to_vec())
        .value(HEADER_VIN, Value::Text(header_vin.to_owned()))
        .build();
    let unprotected = coset::HeaderBuilder::new().iv(iv.to_vec()).build();
    coset::CoseEncrypt0Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .create_ciphertext(plaintext, &command_aad(header_vin), |pt, aad| {
            let mut buf = pt.to_vec();
            key.seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(iv),
                aead::Aad::from(aad),
                &mut buf,
            )
            .expect("AES-GCM seal");
            buf
        })
        .build()
        .to_tagged_vec()
        .expect("COSE encode")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // The harness sealer must agree with the spec byte for byte, or nothing would ever
        // pass the AEAD and this target would silently degrade to `cose_envelope`.
        assert_eq!(
            seal(&KID, VIN, VECTOR_IV, &unhex(VECTOR_PLAINTEXT)),
            unhex(VECTOR_ENVELOPE),
            "harness sealer disagrees with the command-1 vector"
        );
        let cfg = Config {
            pbkdf2_iterations: 1,
            min_pbkdf2_iterations: 1,
            ..Config::default()
        };
        let rng = ring::rand::SystemRandom::new();
        let record = PairingRecord::new(CODE, cfg.pbkdf2_iterations, &rng, ISSUED_AT - 1000)
            .expect("pairing record");
        let mut state = SecurityState {
            pairing: Some(record),
            ..SecurityState::default()
        };
        for (kid, status) in [
            (KID, CredentialStatus::Active),
            (
                REVOKED_KID,
                CredentialStatus::Revoked { at: ISSUED_AT - 10 },
            ),
        ] {
            state.credentials.push(DeviceCredential {
                key_id: KeyId(kid.to_vec()),
                secret: SECRET,
                name: "fuzz".into(),
                created_at: ISSUED_AT - 900,
                status,
                last_counter: 0,
                last_used_at: None,
            });
        }
        let verifier = Verifier::new(cfg.clone(), VIN).expect("verifier");
        // Self-test: the vector command (the seed `command-1_00`) verifies end to end, so the
        // fuzzer starts from inputs that reach `finish` and a `VerifiedCommand`.
        let mut probe = state.clone();
        let vector = seal(&KID, VIN, VECTOR_IV, &unhex(VECTOR_PLAINTEXT));
        let pending = verifier
            .begin(&mut probe, &vector, ISSUED_AT + 1)
            .expect("vector command passes begin");
        assert!(
            pending.finish(&mut probe, ISSUED_AT + 1).result.is_ok(),
            "vector command verifies"
        );
        Fixture {
            verifier,
            cfg,
            state,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let fx = fixture();
    let flags = data[0];
    let iv: [u8; 12] = data[1..13].try_into().expect("12 bytes");
    let plaintext = &data[13..];
    let kid: &[u8] = match flags & 3 {
        1 => &REVOKED_KID,
        2 => &UNKNOWN_KID,
        _ => &KID,
    };
    let header_vin = if flags & 4 != 0 { OTHER_VIN } else { VIN };
    let mut state = fx.state.clone();
    if flags & 8 != 0 {
        state.credentials[0].last_counter = 41;
    }
    let now = match flags >> 6 {
        0 => ISSUED_AT + 1,
        1 => ISSUED_AT + 10_000,
        2 => ISSUED_AT - 10_000,
        _ => ISSUED_AT - fx.cfg.clock_skew_secs,
    };
    match (flags >> 4) & 3 {
        0 => {}
        1 => state.lockout.consecutive_failures = fx.cfg.lockout_threshold - 1,
        2 => {
            state.lockout.consecutive_failures = fx.cfg.lockout_threshold;
            state.lockout.locked_until = Some(now + 30);
        }
        _ => {
            state.lockout.consecutive_failures = fx.cfg.hard_limit;
            state.lockout.hard_locked = true;
        }
    }
    let counter_before = state.credentials[0].last_counter;
    let bytes = seal(kid, header_vin, iv, plaintext);

    let pending = match fx.verifier.begin(&mut state, &bytes, now) {
        Err(r) => {
            assert_eq!(r.audit.outcome, AuditOutcome::Rejected);
            assert_eq!(r.audit.fault_code, Some(r.fault.code()));
            assert_eq!(r.must_persist, r.fault == Fault::LockedOut, "{:?}", r.fault);
            assert_eq!(r.retry_after.is_some(), r.fault == Fault::LockedOut);
            return;
        }
        Ok(p) => p,
    };
    // Everything `begin` accepted must be authentic, well-formed and fresh.
    let payload = CommandPayload::from_cbor(plaintext).expect("begin accepted a bad plaintext");
    assert_eq!(kid, &KID[..], "begin accepted a revoked/unknown key");
    assert_eq!(header_vin, VIN);
    assert_eq!(payload.vin, VIN);
    assert_eq!(pending.command_id(), payload.command_id);
    assert!(payload.counter > counter_before, "counter not fresh");
    assert_eq!(state.credentials[0].last_counter, payload.counter);
    assert!(
        state.lockout.consecutive_failures > 0,
        "failure not pre-counted"
    );
    // The counter is consumed: the same bytes are a replay from now on.
    let mut again = state.clone();
    match fx.verifier.begin(&mut again, &bytes, now) {
        Err(r) => assert_eq!(r.fault, Fault::Replay),
        Ok(_) => panic!("the same command verified twice"),
    }

    let finished = pending.finish(&mut state, now);
    match finished.result {
        Err(f) => {
            assert_eq!(f, Fault::WrongCode, "unexpected finish fault");
            assert_ne!(payload.code, CODE);
            assert_eq!(finished.audit.fault_code, Some(f.code()));
            assert!(state.lockout.consecutive_failures > 0);
        }
        Ok(cmd) => {
            assert_eq!(payload.code, CODE, "verified with a wrong code");
            assert_eq!(finished.audit.outcome, AuditOutcome::Accepted);
            assert_eq!(finished.audit.fault_code, None);
            assert_eq!(cmd.command_id(), payload.command_id);
            assert_eq!(cmd.key_id(), &KeyId(KID.to_vec()));
            assert_eq!(cmd.action(), &payload.action);
            assert_eq!(cmd.counter(), payload.counter);
            assert_eq!(cmd.issued_at(), payload.issued_at);
            assert_eq!(cmd.expires_at(), payload.expires_at);
            assert!(cmd.expires_at() >= cmd.issued_at());
            assert!(cmd.expires_at() - cmd.issued_at() <= fx.cfg.max_ttl_secs);
            assert_eq!(state.lockout.consecutive_failures, 0);
            assert_eq!(state.lockout.locked_until, None);
            assert!(!state.lockout.hard_locked);
            // Round trip: the canonical re-encoding parses back to the same payload.
            let reenc = payload.to_cbor();
            assert_eq!(CommandPayload::from_cbor(&reenc).as_ref(), Ok(&payload));
        }
    }
});
