//! Payload decoders of what the vehicle publishes (telemetry, alert, command result, and the
//! link's retained status).
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematics_link::Status;
use telematics_telemetry::{Alert, CommandResult, Telemetry};

fuzz_target!(|data: &[u8]| {
    let _ = Telemetry::decode(data);
    let _ = Alert::decode(data);
    let _ = CommandResult::decode(data);
    let _ = Status::from_cbor(data);
});
