//! Admin socket frame payload decoder (CBOR `Request`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematicsd::admin::{Request, decode_payload};

fuzz_target!(|data: &[u8]| {
    let _ = decode_payload::<Request>(data);
});
