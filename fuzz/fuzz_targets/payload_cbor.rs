//! Telemetry payload decoders (telemetry, alert, command result, status).
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematics_telemetry::{Alert, CommandResult, Status, Telemetry};

fuzz_target!(|data: &[u8]| {
    let _ = Telemetry::decode(data);
    let _ = Alert::decode(data);
    let _ = CommandResult::decode(data);
    let _ = Status::decode(data);
});
