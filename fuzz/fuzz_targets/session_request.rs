//! Session-info request decoder (`vehicles/{vin}/session/request`, unauthenticated input), and
//! the client-side session-info parser on the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematics_security::SessionRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = SessionRequest::from_cbor(data) {
        // A request that parses re-encodes to exactly the bytes received (deterministic CBOR).
        assert_eq!(req.to_cbor(), data);
    }
    let _ = telematics_security::session::parse_session_info(&[7; 32], b"kid", "1M8GDM9AXKP042788", data);
});
