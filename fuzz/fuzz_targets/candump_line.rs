//! candump log parser: one line via `parse_line`, the whole input via `CandumpReader`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = telematics_can::parse_line(line);
    }
    let reader = telematics_can::CandumpReader::from_text(&text);
    for _ in reader {}
});
