//! Command envelope: strict COSE_Encrypt0 decode, then AEAD open with a fixed device secret.
#![no_main]
use libfuzzer_sys::fuzz_target;

const SECRET: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = telematics_security::Envelope::decode(data) {
        if let Ok(plain) = env.open(&SECRET) {
            let _ = telematics_security::CommandPayload::from_cbor(&plain);
        }
    }
});
