//! Decode arbitrary frames with the demo DBC. Input: 4-byte id (bit 31 = extended) + data.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use telematics_can::{CanFrame, CanId, Dbc};

static DBC: OnceLock<Dbc> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dbc = DBC.get_or_init(|| {
        Dbc::parse(telematics_can::demo::DEMO_DBC).unwrap_or_else(|e| panic!("demo DBC: {e}"))
    });
    let Some((head, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let raw = u32::from_be_bytes(*head);
    let id = if raw & 0x8000_0000 != 0 {
        CanId::extended(raw)
    } else {
        // Bias towards the (standard-id) demo messages.
        CanId::standard((raw & 0x7FF) as u16)
    };
    let _ = dbc.decode(id, payload);
    let frame = CanFrame::new(id, payload);
    let _ = dbc.decode_frame(&frame);
    let _ = telematics_can::demo::decode_body_command(dbc, &frame);
});
