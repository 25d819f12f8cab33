//! Command envelope: strict COSE_Encrypt0 decode, then AEAD open with a fixed device secret
//! (the `command-1` vector of docs/protocol.md, so the seeded vector envelopes open) and the
//! plaintext parse. Random bytes rarely pass the AEAD; `cose_plaintext` fuzzes past it.
#![no_main]
use libfuzzer_sys::fuzz_target;

const SECRET: [u8; 32] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = telematics_security::Envelope::decode(data)
        && let Ok(plain) = env.open(&SECRET)
    {
        let _ = telematics_security::CommandPayload::from_cbor(&plain);
    }
});
