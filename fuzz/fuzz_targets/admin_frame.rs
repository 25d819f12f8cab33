//! Admin socket frame payload decoder (CBOR `Request`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematics_admin::{Request, decode_payload, decode_request};

fuzz_target!(|data: &[u8]| {
    let _ = decode_payload::<Request>(data);
    let _ = decode_request(data);
});
