//! Device revocations (`vehicles/{vin}/devices/revoke`, docs/protocol.md §10) and the device
//! payloads a back end decodes (`vehicles/{vin}/devices`, `/devices/revocations`).
//!
//! Input layout: byte 0 = flags (bit 0: sign the rest as the COSE_Sign1 payload with the
//! back-end key of the `revoke-1` vector, so the checks after the signature are reached;
//! otherwise the rest goes to the vehicle as raw bytes, e.g. the vector's own COSE_Sign1 or
//! mutations of it), bytes 1.. = data.
//! The same data also goes through `DeviceList::decode` and `RevocationOutcome::decode`.
//!
//! Invariants (a violation panics = a finding): never panics; an accepted revocation is for this VIN, names a device that was active and is now revoked,
//! changes nothing else, and is single use (the same bytes again are `nonce_reused`); a
//! decoded device list or outcome re-encodes to a value that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};
use telematics_security::revocation::revoke_aad;
use telematics_security::{
    Config, CredentialStatus, DeviceCredential, Fault, KeyId, SecurityState, apply_revocation,
};
use telematics_telemetry::{DeviceList, RevocationOutcome};

const VIN: &str = "WBA3A5C51CF256985";
const KID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const NOW: u64 = 1_800_000_100;

fn sign(kp: &Ed25519KeyPair, payload: &[u8]) -> Vec<u8> {
    use coset::{TaggedCborSerializable, iana};
    let protected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .build();
    let vin = telematics_security::DeviceRevocation::from_cbor(payload)
        .map(|r| r.vin)
        .unwrap_or_else(|_| VIN.to_owned());
    coset::CoseSign1Builder::new()
        .protected(protected)
        .payload(payload.to_vec())
        .create_signature(&revoke_aad(&vin), |d| kp.sign(d).as_ref().to_vec())
        .build()
        .to_tagged_vec()
        .expect("encode")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = DeviceList::decode(data) {
        assert_eq!(DeviceList::decode(&l.encode().expect("encode")).expect("re-decode"), l);
    }
    if let Ok(o) = RevocationOutcome::decode(data) {
        let b = o.encode().expect("encode");
        assert_eq!(RevocationOutcome::decode(&b).expect("re-decode"), o);
    }
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let kp = Ed25519KeyPair::from_seed_unchecked(&[0x42; 32]).expect("seed");
    let pk = kp.public_key().as_ref().to_vec();
    let mut state = SecurityState::default();
    for (i, kid) in [KID.to_vec(), vec![9; 8]].into_iter().enumerate() {
        state.credentials.push(DeviceCredential {
            key_id: KeyId(kid),
            secret: [7; 32],
            name: "fuzz".into(),
            created_at: 1,
            status: if i == 0 {
                CredentialStatus::Active
            } else {
                CredentialStatus::Revoked { at: 2 }
            },
            last_counter: 0,
            last_used_at: None,
        });
    }
    let before = state.clone();
    let signed = flags & 1 == 1;
    let bytes = if signed { sign(&kp, rest) } else { rest.to_vec() };
    match apply_revocation(&mut state, &Config::default(), VIN, &pk, &bytes, NOW) {
        Ok(rev) => {
            assert_eq!(rev.vin, VIN);
            assert!(before.credential(&rev.key_id).is_some_and(|c| c.is_active()));
            assert_eq!(
                state.credential(&rev.key_id).map(|c| c.status),
                Some(CredentialStatus::Revoked { at: NOW })
            );
            assert_eq!(state.credentials.len(), before.credentials.len());
            let again = apply_revocation(&mut state, &Config::default(), VIN, &pk, &bytes, NOW);
            assert_eq!(again.map_err(|r| r.fault), Err(Fault::NonceReused));
        }
        Err(_) => assert_eq!(state, before, "a refusal changed the state"),
    }
});
