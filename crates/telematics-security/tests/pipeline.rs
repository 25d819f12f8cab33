//! Every fault code of the verification pipeline, the lockout schedule in virtual time,
//! pairing rules, session info, recovery, audit and Debug redaction.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use telematics_security::client::{self, CommandRequest, LockoutReport, build_command};
use telematics_security::envelope::{CommandPayload, Envelope};
use telematics_security::{
    Action, AuditOutcome, CodeRule, CommandId, Config, CredentialStatus, Error, ExportedCredential,
    Fault, RetryAfter, SecurityState, Verifier, arm_reset, build_session_info, confirm_reset,
    validate_code,
};

#[test]
fn ok_and_verified_command_fields() {
    let mut s = setup();
    let bytes = s.cmd(1, CODE);
    let p = s.verifier.begin(&mut s.state, &bytes, NOW).unwrap();
    // Failure pre-counted and counter consumed before PBKDF2.
    assert_eq!(s.state.lockout.consecutive_failures, 1);
    assert_eq!(s.state.credentials[0].last_counter, 1);
    let f = p.finish(&mut s.state, NOW);
    let v = f.result.unwrap();
    assert_eq!(v.action(), &Action::Unlock);
    assert_eq!(v.counter(), 1);
    assert_eq!(v.command_id(), CommandId([1; 16]));
    assert_eq!(v.key_id(), &s.cred.key_id);
    assert_eq!((v.issued_at(), v.expires_at()), (NOW, NOW + 60));
    assert_eq!(s.state.lockout.consecutive_failures, 0);
    assert_eq!(f.audit.outcome, AuditOutcome::Accepted);
    assert_eq!(f.audit.action, Some("unlock"));
    assert_eq!(f.audit.key_id.as_ref(), Some(&s.cred.key_id));
}

#[test]
fn fault_too_large() {
    let mut s = setup();
    let mut cfg = cfg();
    cfg.max_message_size = 100;
    s.verifier = Verifier::new(cfg, VIN).unwrap();
    let b = s.cmd(1, CODE);
    assert!(b.len() > 100);
    assert_eq!(s.run(&b, NOW), "too_large");
    assert_eq!(Envelope::decode(&vec![0u8; 70_000]), Err(Fault::TooLarge));
}

#[test]
fn fault_decode() {
    let mut s = setup();
    assert_eq!(s.run(b"", NOW), "decode");
    assert_eq!(s.run(&[0xd0, 0x83], NOW), "decode");
    // Untagged is refused: strip the 0xd0 tag byte.
    let b = s.cmd(1, CODE);
    assert_eq!(s.run(&b[1..], NOW), "decode");
    // Trailing data.
    let mut t = b.clone();
    t.push(0);
    assert_eq!(s.run(&t, NOW), "decode");
    // Non-canonical but semantically equal: array header 0x83 re-encoded as 0x98 0x03.
    assert_eq!(b[1], 0x83);
    let mut nc = vec![0xd0, 0x98, 0x03];
    nc.extend_from_slice(&b[2..]);
    assert_eq!(s.run(&nc, NOW), "decode");
    // Extra unprotected header parameter (kid 4 => h'00') is refused: map a1 -> a2.
    let mut extra = b.clone();
    let pos = extra.windows(2).position(|w| w == [0xa1, 0x05]).unwrap();
    extra[pos] = 0xa2;
    extra.splice(pos + 1..pos + 1, [0x04, 0x41, 0x00]);
    assert_eq!(s.run(&extra, NOW), "decode");
    // The intact one still works (nothing was consumed by the failures).
    assert_eq!(s.run(&b, NOW), "ok");
}

#[test]
fn fault_wrong_vin() {
    let mut s = setup();
    let mut other = s.cred.clone();
    other.vin = "WBA00000000000000".into();
    let b = build_command(&other, &req(1, CODE), &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "wrong_vin");
}

#[test]
fn fault_unknown_and_revoked_key() {
    let mut s = setup();
    let mut stranger = s.cred.clone();
    stranger.key_id.0 = vec![9; 8];
    let b = build_command(&stranger, &req(1, CODE), &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "unknown_key");
    s.state.revoke_device(&s.cred.key_id.0, NOW).unwrap();
    assert!(matches!(
        s.state.credentials[0].status,
        CredentialStatus::Revoked { .. }
    ));
    let b = s.cmd(1, CODE);
    assert_eq!(s.run(&b, NOW), "revoked_key");
}

#[test]
fn fault_aead() {
    let mut s = setup();
    let mut forged = s.cred.clone();
    forged.secret = [7; 32];
    let b = build_command(&forged, &req(1, CODE), &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "aead");
    // Flip one ciphertext bit.
    let mut b = s.cmd(1, CODE);
    let n = b.len();
    b[n - 20] ^= 1;
    assert_eq!(s.run(&b, NOW), "aead");
    assert_eq!(s.state.credentials[0].last_counter, 0);
}

#[test]
fn fault_time_window() {
    let mut s = setup();
    let skew = cfg().clock_skew_secs;
    let mut r = req(1, CODE);
    r.issued_at = NOW - 200;
    r.expires_at = NOW - skew - 1;
    let b = build_command(&s.cred, &r, &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "expired");
    r.issued_at = NOW + skew + 1;
    r.expires_at = NOW + skew + 60;
    let b = build_command(&s.cred, &r, &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "not_yet_valid");
    // Within skew: accepted.
    r.issued_at = NOW + skew;
    let b = build_command(&s.cred, &r, &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "ok");
    r.counter = 2;
    r.issued_at = NOW;
    r.expires_at = NOW + cfg().max_ttl_secs + 1;
    let b = build_command(&s.cred, &r, &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "ttl_too_long");
    r.expires_at = NOW - 1;
    let b = build_command(&s.cred, &r, &s.rng).unwrap();
    assert_eq!(s.run(&b, NOW), "ttl_too_long");
}

#[test]
fn fault_replay() {
    let mut s = setup();
    let b5 = s.cmd(5, CODE);
    assert_eq!(s.run(&b5, NOW), "ok");
    assert_eq!(s.run(&b5, NOW), "replay");
    let b3 = s.cmd(3, CODE);
    assert_eq!(s.run(&b3, NOW), "replay");
    let b0 = s.cmd(0, CODE);
    assert_eq!(s.run(&b0, NOW), "replay");
    assert_eq!(s.run(&s.cmd(6, CODE), NOW), "ok");
}

#[test]
fn fault_wrong_code_and_bad_payload() {
    let mut s = setup();
    assert_eq!(s.run(&s.cmd(1, "1397"), NOW), "wrong_code");
    assert_eq!(s.state.lockout.consecutive_failures, 1);
    // The counter of a wrong-code attempt is consumed.
    assert_eq!(s.run(&s.cmd(1, CODE), NOW), "replay");
    // A payload that is authentic but not a command map.
    let env = Envelope::decode(&s.cmd(2, CODE)).unwrap();
    assert!(env.open(&s.cred.secret).is_ok());
    assert_eq!(CommandPayload::from_cbor(&[0xa0]), Err(Fault::BadPayload));
    assert_eq!(CommandPayload::from_cbor(&[0x01]), Err(Fault::BadPayload));
}

#[test]
fn fault_not_paired_and_state_changed() {
    let mut s = setup();
    let b = s.cmd(1, CODE);
    let p = s.verifier.begin(&mut s.state, &b, NOW).unwrap();
    // Another check begins before this one finishes: the first one fails closed.
    let b2 = s.cmd(2, CODE);
    let p2 = s.verifier.begin(&mut s.state, &b2, NOW).unwrap();
    assert_eq!(
        p.finish(&mut s.state, NOW).result.unwrap_err(),
        Fault::StateChanged
    );
    assert!(p2.finish(&mut s.state, NOW).result.is_ok());
    s.state.pairing = None;
    assert_eq!(s.run(&s.cmd(3, CODE), NOW), "not_paired");
}

#[test]
fn lockout_schedule_virtual_time() {
    let mut s = setup();
    let c = cfg();
    let mut now = NOW;
    let counter = std::cell::Cell::new(0u64);
    let next = |s: &mut Setup, code: &str, now: u64| {
        counter.set(counter.get() + 1);
        let mut r = req(counter.get(), code);
        r.issued_at = now;
        r.expires_at = now + 60;
        let b = build_command(&s.cred, &r, &s.rng).unwrap();
        s.run(&b, now)
    };
    // Two wrong codes: no wait yet.
    assert_eq!(next(&mut s, "1111x", now), "wrong_code");
    assert_eq!(next(&mut s, "0000", now), "wrong_code");
    assert_eq!(s.state.retry_after(now), None);
    // Third: wait base (30 s), then 60, 120, ... until the hard limit.
    for failures in 3..c.hard_limit {
        assert_eq!(next(&mut s, "0000", now), "wrong_code");
        let wait = c.base_wait_secs << (failures - c.lockout_threshold);
        assert_eq!(
            s.state.retry_after(now),
            Some(RetryAfter::Seconds(wait)),
            "after {failures}"
        );
        // Even the right code is refused during the wait, with retry-after.
        let b = {
            counter.set(counter.get() + 1);
            let mut r = req(counter.get(), CODE);
            r.issued_at = now + wait - 1;
            r.expires_at = now + wait + 30;
            build_command(&s.cred, &r, &s.rng).unwrap()
        };
        let rej = s
            .verifier
            .begin(&mut s.state, &b, now + wait - 1)
            .unwrap_err();
        assert_eq!(rej.fault, Fault::LockedOut);
        assert_eq!(rej.retry_after, Some(RetryAfter::Seconds(1)));
        assert!(rej.must_persist);
        now += wait;
    }
    // The 10th wrong code locks until recovery.
    assert_eq!(next(&mut s, "0000", now), "wrong_code");
    assert_eq!(s.state.retry_after(now), Some(RetryAfter::UntilRecovery));
    assert_eq!(next(&mut s, CODE, now + 1_000_000), "locked_out");
}

#[test]
fn success_resets_failures() {
    let mut s = setup();
    assert_eq!(s.run(&s.cmd(1, "0000"), NOW), "wrong_code");
    assert_eq!(s.run(&s.cmd(2, "0000"), NOW), "wrong_code");
    assert_eq!(s.run(&s.cmd(3, CODE), NOW), "ok");
    assert_eq!(s.state.lockout.consecutive_failures, 0);
    assert_eq!(s.run(&s.cmd(4, "0000"), NOW), "wrong_code");
    assert_eq!(s.run(&s.cmd(5, "0000"), NOW), "wrong_code");
    assert_eq!(s.state.retry_after(NOW), None);
}

#[test]
fn crash_between_phases_keeps_failure_counted() {
    let mut s = setup();
    let b = s.cmd(1, CODE);
    let p = s.verifier.begin(&mut s.state, &b, NOW).unwrap();
    let persisted = s.state.to_cbor().unwrap();
    drop(p); // power cut during PBKDF2
    let restored = SecurityState::from_cbor(&persisted).unwrap();
    assert_eq!(restored.lockout.consecutive_failures, 1);
    assert_eq!(restored.credentials[0].last_counter, 1);
    assert_eq!(restored, s.state);
}

#[test]
fn every_fault_code_is_stable_and_unique() {
    let mut codes: Vec<_> = Fault::ALL.iter().map(|f| f.code()).collect();
    let mut nums: Vec<_> = Fault::ALL.iter().map(|f| f.number()).collect();
    codes.sort();
    codes.dedup();
    nums.sort();
    nums.dedup();
    assert_eq!(codes.len(), Fault::ALL.len());
    assert_eq!(nums, (1..=Fault::ALL.len() as u16).collect::<Vec<_>>());
    assert_eq!(Fault::LockedOut.code(), "locked_out");
    assert_eq!(Fault::LockedOut.number(), 12);
}

#[test]
fn code_rules_and_iterations() {
    for ok in ["2580", "13579", "90210", "12341234", "1243"] {
        assert!(validate_code(ok).is_ok(), "{ok}");
    }
    for (bad, rule) in [
        ("123", CodeRule::Length),
        ("123456789", CodeRule::Length),
        ("", CodeRule::Length),
        ("４５６７", CodeRule::Length),
        ("12a4", CodeRule::DigitsOnly),
        ("+123", CodeRule::DigitsOnly),
        ("1111", CodeRule::NotAllSame),
        ("00000000", CodeRule::NotAllSame),
        ("1234", CodeRule::NotAscending),
        ("3456789", CodeRule::NotAscending),
        ("98765", CodeRule::NotDescending),
        ("3210", CodeRule::NotDescending),
    ] {
        let e = validate_code(bad).unwrap_err();
        assert!(matches!(e, Error::WeakCode(r) if r == rule), "{bad}: {e}");
        // The message names the rule (the same text on the admin socket and in the CLI).
        assert_eq!(e.to_string(), rule.message(), "{bad}");
        assert_eq!(e.code(), "weak_code");
    }
    assert_eq!(
        validate_code("1111").unwrap_err().to_string(),
        "the security code must not be all the same digit"
    );
    // Pairing refuses with the same typed error.
    let mut st = SecurityState::default();
    let e = st
        .set_initial_code(&cfg(), "1111", &SystemRandom::new(), NOW)
        .unwrap_err();
    assert!(matches!(e, Error::WeakCode(CodeRule::NotAllSame)), "{e}");
    let low = Config {
        pbkdf2_iterations: 1000,
        ..Config::default()
    };
    assert_eq!(low.validate().unwrap_err().code(), "too_few_iterations");
    assert_eq!(Config::default().pbkdf2_iterations, 600_000);
    assert!(Config::default().validate().is_ok());
}

#[test]
fn pairing_list_revoke_export() {
    let rng = SystemRandom::new();
    let mut st = SecurityState::default();
    assert_eq!(
        st.check_code(&cfg(), CODE, NOW).unwrap_err().code(),
        "not_paired"
    );
    let first = st.set_initial_code(&cfg(), CODE, &rng, NOW).unwrap();
    assert_eq!(
        st.set_initial_code(&cfg(), CODE, &rng, NOW)
            .unwrap_err()
            .code(),
        "already_paired"
    );
    assert_eq!(
        st.check_code(&cfg(), "0000", NOW).unwrap_err().code(),
        "wrong_code"
    );
    assert_eq!(
        st.lockout.consecutive_failures, 1,
        "in-car wrong code counted"
    );
    let a = st.add_device(first, VIN, "phone A", &rng, NOW).unwrap();
    assert_eq!(st.lockout.consecutive_failures, 1);
    let proof = st.check_code(&cfg(), CODE, NOW + 1).unwrap();
    assert_eq!(st.lockout.consecutive_failures, 0, "right code clears");
    let b = st.add_device(proof, VIN, "phone B", &rng, NOW + 1).unwrap();
    assert_ne!(a.key_id, b.key_id);
    let list = st.list_devices();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].name, "phone B");
    st.revoke_device(&a.key_id.0, NOW + 2).unwrap();
    assert_eq!(
        st.list_devices()[0].status,
        CredentialStatus::Revoked { at: NOW + 2 }
    );
    assert!(st.revoke_device(&[1, 2], NOW).is_err());
    let text = b.to_text();
    assert!(text.starts_with("TMDC1:"));
    assert_eq!(ExportedCredential::from_text(&text).unwrap(), b);
    assert!(ExportedCredential::from_text("TMDC1:!!").is_err());
    // Persisted state round-trips and never contains the code.
    let bytes = st.to_cbor().unwrap();
    assert_eq!(SecurityState::from_cbor(&bytes).unwrap(), st);
    assert!(!bytes.windows(4).any(|w| w == CODE.as_bytes()));
}

#[test]
fn debug_never_prints_secrets() {
    let s = setup();
    let secret_hex = hex::encode(s.cred.secret);
    let dbg = format!(
        "{:?} {:?} {:?} {:?}",
        s.state,
        s.cred,
        req(1, "97315"),
        Envelope::decode(&s.cmd(1, "97315")).unwrap()
    );
    assert!(dbg.contains("<redacted>"));
    assert!(!dbg.contains("97315"));
    assert!(!dbg.contains(&secret_hex));
    let sb: Vec<String> = s.cred.secret.iter().map(|b| b.to_string()).collect();
    assert!(!dbg.contains(&sb.join(", ")));
    let p = CommandPayload::from_cbor(
        &Envelope::decode(&s.cmd(1, "97315"))
            .unwrap()
            .open(&s.cred.secret)
            .unwrap(),
    )
    .unwrap();
    assert!(!format!("{p:?}").contains("97315"));
}

#[test]
fn session_info_roundtrip_and_auth() {
    let mut s = setup();
    assert_eq!(s.run(&s.cmd(7, CODE), NOW), "ok");
    for _ in 0..3 {
        let c = s.state.credentials[0].last_counter + 1;
        assert_eq!(s.run(&s.cmd(c, "0000"), NOW), "wrong_code");
    }
    let r = build_session_info(&s.state, VIN, &s.cred.key_id.0, b"chal", NOW + 10).unwrap();
    let info = client::parse_session_info(&s.cred, &r).unwrap();
    assert_eq!(info.last_counter, 10);
    assert_eq!(info.clock, NOW + 10);
    assert_eq!(info.consecutive_failures, 3);
    assert_eq!(info.lockout, LockoutReport::Backoff { retry_after: 20 });
    assert_eq!(info.echo, b"chal");
    // Tampering / wrong key refused.
    let mut t = r.clone();
    let n = t.len();
    t[n - 40] ^= 1;
    assert!(client::parse_session_info(&s.cred, &t).is_err());
    let mut other = s.cred.clone();
    other.secret = [1; 32];
    assert!(client::parse_session_info(&other, &r).is_err());
    assert!(build_session_info(&s.state, VIN, &[0; 8], b"", NOW).is_err());
}

#[test]
fn session_request_round_trip_and_strict_parse() {
    use telematics_security::SessionRequest;
    use telematics_security::session::MAX_REQUEST_SIZE;
    let s = setup();
    let bytes = client::session_request(&s.cred, b"0123456789abcdef").unwrap();
    let req = SessionRequest::from_cbor(&bytes).unwrap();
    assert_eq!(req.key_id, s.cred.key_id.0);
    assert_eq!(req.challenge, b"0123456789abcdef");
    // The reply echoes the challenge and verifies with the device's credential only.
    let r = build_session_info(&s.state, VIN, &req.key_id, &req.challenge, NOW).unwrap();
    assert_eq!(
        client::parse_session_info(&s.cred, &r).unwrap().echo,
        req.challenge
    );
    // Strict: over-long challenge, missing or extra keys, wrong types, trailing bytes, oversize.
    assert!(client::session_request(&s.cred, &[0; 33]).is_err());
    // {1: h'01'} (no challenge), {1: h'01', 2: h'', 3: 0} (extra key), {1: "x", 2: h''}.
    for bad in [
        &b"\xa1\x01\x41\x01"[..],
        &b"\xa3\x01\x41\x01\x02\x40\x03\x00"[..],
        &b"\xa2\x01\x61x\x02\x40"[..],
        &b"\xa2\x01\x40\x02\x40"[..],
    ] {
        assert_eq!(
            SessionRequest::from_cbor(bad),
            Err(Fault::Decode),
            "{bad:02x?}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(SessionRequest::from_cbor(&trailing), Err(Fault::Decode));
    assert_eq!(
        SessionRequest::from_cbor(&[0u8; MAX_REQUEST_SIZE + 1]),
        Err(Fault::TooLarge)
    );
}

fn backend() -> (Ed25519KeyPair, Vec<u8>) {
    let kp = Ed25519KeyPair::from_seed_unchecked(&[42; 32]).unwrap();
    let pk = kp.public_key().as_ref().to_vec();
    (kp, pk)
}

#[test]
fn recovery_flow() {
    let mut s = setup();
    let (kp, pk) = backend();
    let c = cfg();
    // Lock hard.
    for i in 1..=c.hard_limit as u64 {
        let mut r = req(i, "0000");
        r.issued_at = NOW + i * 100_000;
        r.expires_at = r.issued_at + 60;
        let b = build_command(&s.cred, &r, &s.rng).unwrap();
        assert_eq!(s.run(&b, r.issued_at), "wrong_code");
    }
    assert_eq!(
        s.state.retry_after(NOW * 2),
        Some(RetryAfter::UntilRecovery)
    );
    let now = NOW + 2_000_000;
    // Confirming without an armed reset fails.
    assert_eq!(
        confirm_reset(&mut s.state, &c, "4826", &s.rng, now)
            .unwrap_err()
            .code(),
        "no_pending_reset"
    );
    let auth = client::sign_reset(&kp, VIN, now, now + 600, &s.rng).unwrap();
    // Wrong pinned key, wrong VIN, expired.
    let other = Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();
    assert_eq!(
        arm_reset(
            &mut s.state,
            &c,
            VIN,
            other.public_key().as_ref(),
            &auth,
            now
        ),
        Err(Fault::BadSignature)
    );
    let wrong_vin = client::sign_reset(&kp, "WBA00000000000000", now, now + 600, &s.rng).unwrap();
    // Signed for another VIN: the AAD differs, so the signature fails first.
    assert_eq!(
        arm_reset(&mut s.state, &c, VIN, &pk, &wrong_vin, now),
        Err(Fault::BadSignature)
    );
    assert_eq!(
        arm_reset(&mut s.state, &c, VIN, &pk, &auth, now + 10_000),
        Err(Fault::Expired)
    );
    let long = client::sign_reset(&kp, VIN, now, now + 90_000, &s.rng).unwrap();
    assert_eq!(
        arm_reset(&mut s.state, &c, VIN, &pk, &long, now),
        Err(Fault::TtlTooLong)
    );
    assert_eq!(
        arm_reset(&mut s.state, &c, VIN, &pk, &auth[1..], now),
        Err(Fault::Decode)
    );
    arm_reset(&mut s.state, &c, VIN, &pk, &auth, now).unwrap();
    assert_eq!(
        arm_reset(&mut s.state, &c, VIN, &pk, &auth, now + 1),
        Err(Fault::NonceReused)
    );
    // Weak new code is refused, reset stays armed.
    assert!(confirm_reset(&mut s.state, &c, "1234", &s.rng, now + 5).is_err());
    confirm_reset(&mut s.state, &c, "4826", &s.rng, now + 5).unwrap();
    assert_eq!(s.state.retry_after(now + 5), None);
    assert_eq!(s.state.epoch, 1);
    assert!(matches!(
        s.state.credentials[0].status,
        CredentialStatus::VoidedByRecovery { .. }
    ));
    // Old credential is void; re-pair with the new code and command again.
    let mut r = req(100, "4826");
    r.issued_at = now + 6;
    r.expires_at = now + 60;
    assert_eq!(
        s.run(&build_command(&s.cred, &r, &s.rng).unwrap(), now + 6),
        "revoked_key"
    );
    let rng = SystemRandom::new();
    let proof = s.state.check_code(&c, "4826", now + 7).unwrap();
    s.cred = s
        .state
        .add_device(proof, VIN, "new phone", &rng, now + 7)
        .unwrap();
    r.counter = 1;
    assert_eq!(
        s.run(&build_command(&s.cred, &r, &s.rng).unwrap(), now + 8),
        "ok"
    );
    // Confirmation window elapsed.
    let auth2 = client::sign_reset(&kp, VIN, now, now + 600, &s.rng).unwrap();
    arm_reset(&mut s.state, &c, VIN, &pk, &auth2, now + 10).unwrap();
    assert_eq!(
        confirm_reset(
            &mut s.state,
            &c,
            "4826",
            &s.rng,
            now + 10 + c.reset_confirm_window_secs + 1
        )
        .unwrap_err()
        .code(),
        "no_pending_reset"
    );
}

#[test]
fn engine_start_parameters_roundtrip() {
    let mut s = setup();
    for (i, a) in [
        Action::Lock,
        Action::EngineStart {
            max_run_secs: Some(600),
        },
        Action::EngineStart { max_run_secs: None },
        Action::EngineStop,
        Action::FlashLights,
        Action::Horn,
    ]
    .into_iter()
    .enumerate()
    {
        let r = CommandRequest {
            action: a.clone(),
            ..req(i as u64 + 1, CODE)
        };
        let b = build_command(&s.cred, &r, &s.rng).unwrap();
        let p = s.verifier.begin(&mut s.state, &b, NOW).unwrap();
        assert_eq!(p.finish(&mut s.state, NOW).result.unwrap().action(), &a);
    }
}

#[test]
fn error_codes() {
    assert_eq!(Error::from(Fault::Aead).code(), "aead");
    assert_eq!(Error::WeakCode(CodeRule::Length).code(), "weak_code");
}

#[test]
#[allow(deprecated)]
fn broken_rng_fails_instead_of_looping() {
    let rng = ring::test::rand::FixedByteRandom { byte: 7 };
    let mut st = SecurityState::default();
    let first = st.set_initial_code(&cfg(), CODE, &rng, NOW).unwrap();
    st.add_device(first, VIN, "a", &rng, NOW).unwrap();
    let proof = st.check_code(&cfg(), CODE, NOW).unwrap();
    assert_eq!(
        st.add_device(proof, VIN, "b", &rng, NOW)
            .unwrap_err()
            .code(),
        "rng"
    );
}

#[test]
fn lockout_wait_schedule_values() {
    let c = Config::default();
    let waits: Vec<_> = (0..=11).map(|f| c.lockout_wait(f)).collect();
    assert_eq!(&waits[..3], &[None, None, None]);
    let secs: Vec<u64> = waits[3..10]
        .iter()
        .map(|w| match w {
            Some(RetryAfter::Seconds(s)) => *s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920]);
    assert_eq!(waits[10], Some(RetryAfter::UntilRecovery));
    assert_eq!(waits[11], Some(RetryAfter::UntilRecovery));
}
