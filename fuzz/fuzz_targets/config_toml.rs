//! telematicsd configuration: TOML parse + env overrides (none) + validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = telematicsd::Config::from_toml_with_env(&text, std::iter::empty());
});
