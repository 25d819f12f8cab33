//! The deterministic-CBOR check (docs/protocol.md §4) against an independent decoder: it never
//! panics, and whatever it accepts is well-formed CBOR that re-encodes to the identical bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if telematics_security::is_deterministic(data) {
        let v: ciborium::Value =
            ciborium::de::from_reader(data).expect("accepted bytes are well-formed CBOR");
        let mut out = Vec::new();
        ciborium::ser::into_writer(&v, &mut out).expect("re-encodes");
        assert_eq!(out, data, "accepted bytes are their own deterministic encoding");
    }
});
