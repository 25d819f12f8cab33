//! DBC text loader: arbitrary (lossy UTF-8) text into `Dbc::parse`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(dbc) = telematics_can::Dbc::parse(&text) {
        // Exercise the loaded model: decoding zeros must not panic either.
        for m in dbc.messages() {
            let _ = dbc.decode(m.id, &[0u8; 64]);
        }
    }
});
