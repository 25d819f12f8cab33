//! The project's own small DBC cases in `tests/data/`: message ids read as written (standard,
//! extended with and without bit 31, Vector's placeholder), exact 64-bit raw values, long
//! names through the VSS mapping path, and load warnings for value tables without a signal.

use telematics_can::{
    CanId, Dbc, DecodeOutcome, DecodedMessage, EncodeValue, LoadWarningKind, RawValue, SignalValue,
    Timestamp, VehicleState, VssMapping,
};

fn data(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(name: &str) -> Dbc {
    Dbc::parse(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decoded<'a>(dbc: &'a Dbc, id: CanId, payload: &[u8]) -> DecodedMessage<'a> {
    match dbc.decode(id, payload) {
        Ok(DecodeOutcome::Decoded(d)) => d,
        other => panic!("{id:?}: {other:?}"),
    }
}

#[test]
fn ids_are_read_as_written() {
    let dbc = load("message_ids.dbc");
    let name = |id: CanId| dbc.message_by_id(id).map(|m| m.name.as_str());
    // standard
    assert_eq!(name(CanId::standard(0x057)), Some("Std_057"));
    assert_eq!(name(CanId::standard(0x000)), Some("Std_000"));
    // 29-bit id written without bit 31 (opendbc vw_meb: BO_ 401604695 = 0x17F00057)
    assert_eq!(name(CanId::extended(0x17F0_0057)), Some("MEB_PACC_01"));
    // 29-bit id written with bit 31 (2566844672 = 0x80000000 | 0x18FEF100)
    assert_eq!(name(CanId::extended(0x18FE_F100)), Some("EEC1_Flagged"));
    // BO_ 274923520 (0x10630000) is extended, not standard 0
    assert_eq!(name(CanId::extended(0x1063_0000)), Some("DriverDoorStatus"));
    // nothing landed on an id it was not written with
    assert_eq!(name(CanId::extended(0x057)), None);
    assert_eq!(
        name(CanId::extended(0)),
        None,
        "0xC0000000 placeholder is no message"
    );
    assert_eq!(name(CanId::standard(0x100)), None);
    assert!(dbc.message_by_name("VECTOR__INDEPENDENT_SIG_MSG").is_none());
    assert!(dbc.message_by_name("NotAnId").is_none());
    let mut names: Vec<&str> = dbc.messages().iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "DriverDoorStatus",
            "EEC1_Flagged",
            "MEB_PACC_01",
            "Std_000",
            "Std_057"
        ]
    );
    // 0x40000000 without bit 31 is no CAN id: refused with a typed warning; no false
    // duplicate_message_id, no warning for the placeholder.
    let warnings: Vec<(&str, LoadWarningKind)> = dbc
        .warnings()
        .iter()
        .map(|w| (w.message.as_str(), w.kind))
        .collect();
    assert_eq!(
        warnings,
        [("NotAnId", LoadWarningKind::MessageIdOutOfRange)],
        "{:?}",
        dbc.warnings()
    );
    assert_eq!(
        dbc.warnings().first().map(|w| w.code()),
        Some("message_id_out_of_range")
    );
}

#[test]
fn frames_decode_against_the_id_they_were_written_with() {
    let dbc = load("message_ids.dbc");
    // The real extended frame 0x17F00057 decodes, with its own value table.
    let d = decoded(
        &dbc,
        CanId::extended(0x17F0_0057),
        &[0, 0x25, 0, 0, 0, 0, 0, 0],
    );
    assert_eq!(d.message.name, "MEB_PACC_01");
    assert_eq!(
        d.get("PACC_Counter").map(|s| s.raw),
        Some(RawValue::Unsigned(5))
    );
    assert_eq!(
        d.get("PACC_Status").and_then(|s| s.label),
        Some("PACC_ACTIVE")
    );
    // The standard frame 0x057 is the standard message, not MEB_PACC_01.
    let d = decoded(&dbc, CanId::standard(0x057), &[0; 8]);
    assert_eq!(d.message.name, "Std_057");
    assert_eq!(d.get("StdCounter").and_then(|s| s.label), Some("STD_ZERO"));
    // Standard 0 is Std_000; the door status is on extended 0x10630000.
    let d = decoded(&dbc, CanId::standard(0), &[7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(d.message.name, "Std_000");
    let d = decoded(
        &dbc,
        CanId::extended(0x1063_0000),
        &[1, 0, 0, 0, 0, 0, 0, 0],
    );
    assert_eq!(d.get("DriverDoorOpen").and_then(|s| s.label), Some("OPEN"));
    // EEC1 (bit 31 written): 0.125 rpm/bit
    let d = decoded(
        &dbc,
        CanId::extended(0x18FE_F100),
        &[0, 0, 0, 0x40, 0x1F, 0, 0, 0],
    );
    assert_eq!(d.get("EngineSpeed").map(|s| s.physical), Some(1000.0));
    // The placeholder's id (masked to 29 bits: 0) decodes nothing.
    assert_eq!(
        dbc.decode(CanId::extended(0), &[0; 8]),
        Ok(DecodeOutcome::UnknownId)
    );
    // Encoding sends on the id as written.
    let f = dbc
        .encode(
            "MEB_PACC_01",
            &[("PACC_Status", EncodeValue::Label("PACC_READY"))],
        )
        .expect("encode");
    assert_eq!(f.can_id(), CanId::extended(0x17F0_0057));
    assert_eq!(f.data[1], 1 << 4);
}

#[test]
fn wide_signals_decode_exactly() {
    let dbc = load("wide_signals.dbc");
    assert!(dbc.warnings().is_empty(), "{:?}", dbc.warnings());
    // 64-bit unsigned serial number: every bit, up to u64::MAX.
    for serial in [
        u64::MAX,
        (1 << 63) + 1,
        (1 << 53) + 1,
        0x0123_4567_89AB_CDEF,
    ] {
        let d = decoded(&dbc, CanId::standard(0x701), &serial.to_le_bytes());
        let s = d.get("EcuSerialNumber").expect("serial");
        assert_eq!(s.raw, RawValue::Unsigned(serial));
        assert_eq!(s.raw.as_u64(), Some(serial));
        let m = dbc.message_by_name("Diag_Serials").expect("msg");
        let back = m
            .encode(&[(
                "EcuSerialNumber",
                EncodeValue::Raw(RawValue::Unsigned(serial)),
            )])
            .expect("encode");
        assert_eq!(back, serial.to_le_bytes());
    }
    // 64-bit signed Motorola: big-endian bytes.
    for v in [i64::MIN, -1, i64::MAX, -(1 << 53) - 1] {
        let d = decoded(&dbc, CanId::standard(0x702), &v.to_be_bytes());
        assert_eq!(
            d.get("SignedCounter64").map(|s| s.raw),
            Some(RawValue::Signed(v))
        );
        let m = dbc.message_by_name("Diag_Signed").expect("msg");
        let back = m
            .encode(&[("SignedCounter64", EncodeValue::Raw(RawValue::Signed(v)))])
            .expect("encode");
        assert_eq!(back, v.to_be_bytes());
    }
    // 56-bit VIN chunk ("1HGCM82" as 7 ASCII bytes).
    let mut payload = [0u8; 8];
    payload[1..].copy_from_slice(b"1HGCM82");
    let d = decoded(&dbc, CanId::standard(0x703), &payload);
    let chars = d.get("VinChars").and_then(|s| s.raw.as_u64()).expect("vin");
    let mut le = chars.to_le_bytes();
    le.rotate_right(1);
    assert_eq!(&le[1..], b"1HGCM82");
}

#[test]
fn wide_values_refused_instead_of_saturated() {
    let dbc = load("wide_signals.dbc");
    let serial = dbc.message_by_name("Diag_Serials").expect("msg");
    let signed = dbc.message_by_name("Diag_Signed").expect("msg");
    let enc = |m: &telematics_can::MessageDef, s: &str, v: EncodeValue<'_>| {
        m.encode(&[(s, v)]).map_err(|e| e.code())
    };
    // 2^64 is not u64::MAX; 2^63 is not i64::MAX (f64 cannot hold either maximum).
    assert_eq!(
        enc(
            serial,
            "EcuSerialNumber",
            EncodeValue::Physical(2f64.powi(64))
        ),
        Err("value_out_of_range")
    );
    assert_eq!(
        enc(
            signed,
            "SignedCounter64",
            EncodeValue::Physical(2f64.powi(63))
        ),
        Err("value_out_of_range")
    );
    // The largest f64 below the bound is exact.
    let below = 2f64.powi(64) - 2048.0;
    assert_eq!(
        enc(serial, "EcuSerialNumber", EncodeValue::Physical(below)),
        Ok((u64::MAX - 2047).to_le_bytes().to_vec())
    );
    assert_eq!(
        enc(
            signed,
            "SignedCounter64",
            EncodeValue::Physical(-(2f64.powi(63)))
        ),
        Ok(i64::MIN.to_be_bytes().to_vec())
    );
    // Raw values by numeric value, not by bit pattern.
    assert_eq!(
        enc(
            signed,
            "SignedCounter64",
            EncodeValue::Raw(RawValue::Unsigned(u64::MAX))
        ),
        Err("value_out_of_range")
    );
    assert_eq!(
        enc(
            serial,
            "EcuSerialNumber",
            EncodeValue::Raw(RawValue::Signed(-1))
        ),
        Err("value_out_of_range")
    );
    assert_eq!(
        enc(
            serial,
            "EcuSerialNumber",
            EncodeValue::Raw(RawValue::Float(1.0))
        ),
        Err("value_out_of_range")
    );
}

#[test]
fn wide_unscaled_signals_reach_vss_exactly() {
    let dbc = load("wide_signals.dbc");
    let mapping = VssMapping::from_toml(
        r#"
[[signal]]
path = "Vehicle.Diagnostics.EcuSerial"
signal = "EcuSerialNumber"
datatype = "string"

[[signal]]
path = "Vehicle.Diagnostics.Counter"
signal = "SignedCounter64"
datatype = "int64"
"#,
    )
    .expect("mapping");
    let (bound, skipped) = mapping.bind_lenient(&dbc);
    assert!(skipped.is_empty(), "{skipped:?}");
    let mut state = VehicleState::from_mapping(&bound);
    let now = Timestamp(10);
    let serial = u64::MAX - 1;
    state.apply(
        &bound,
        &decoded(&dbc, CanId::standard(0x701), &serial.to_le_bytes()),
        now,
    );
    let counter = (1i64 << 53) + 1; // not an f64
    state.apply(
        &bound,
        &decoded(&dbc, CanId::standard(0x702), &counter.to_be_bytes()),
        now,
    );
    let value = |p: &str| state.get(p, now).map(|r| r.value.clone());
    assert_eq!(
        value("Vehicle.Diagnostics.EcuSerial"),
        Some(SignalValue::Text("18446744073709551614".into()))
    );
    assert_eq!(
        value("Vehicle.Diagnostics.Counter"),
        Some(SignalValue::Int(counter))
    );
}

#[test]
fn long_names_replace_short_names() {
    let dbc = load("long_names.dbc");
    let m = dbc
        .message_by_id(CanId::standard(801))
        .expect("message 801");
    assert_eq!(m.name, "BMS_CellVoltageStatisticsMessage_HighVoltagePack");
    let names: Vec<&str> = m.signals.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "BMS_HighestCellVoltageInTheWholePack",
            "BMS_LowestCellVoltageInTheWholePack",
            "BMS_CellBalancingStateOfTheWholePack",
            "BMS_StatsCounter"
        ]
    );
    // Things keyed by the short name in the file stay attached: value table, start value.
    let bal = m
        .signal("BMS_CellBalancingStateOfTheWholePack")
        .expect("long name");
    assert_eq!(bal.label(1), Some("BALANCING"));
    let hi = m
        .signal("BMS_HighestCellVoltageInTheWholePack")
        .expect("long name");
    assert_eq!(hi.start_bits, Some(3300));
    assert_eq!(&m.default_data[..2], &3300u16.to_le_bytes());
    assert!(m.signal("BMS_HighestCellVoltageInTheWhole").is_none());
    assert!(
        dbc.message_by_name("BMS_CellVoltageStatisticsMessage_HighVoltagePack")
            .is_some()
    );
    assert_eq!(
        dbc.find_signal("BMS_LowestCellVoltageInTheWholePack"),
        &[(0, 1)]
    );
}

#[test]
fn value_table_for_missing_signal_is_a_load_warning() {
    let dbc = load("long_names.dbc");
    let warnings: Vec<(&str, &str, LoadWarningKind)> = dbc
        .warnings()
        .iter()
        .map(|w| (w.message.as_str(), w.signal.as_str(), w.kind))
        .collect();
    assert_eq!(
        warnings,
        [
            // signal name misspelt in VAL_
            (
                "BMS_CellVoltageStatisticsMessag",
                "BMS_CellBalancingStat",
                LoadWarningKind::ValueTableUnknownSignal
            ),
            // message 802 is not declared at all
            (
                "802",
                "BMS_PackIsolationState",
                LoadWarningKind::ValueTableUnknownSignal
            ),
        ]
    );
    assert_eq!(
        dbc.warnings().first().map(ToString::to_string),
        Some(
            "BMS_CellVoltageStatisticsMessag.BMS_CellBalancingStat: value_table_unknown_signal"
                .to_string()
        )
    );
}

#[test]
fn long_names_through_the_vss_mapping_path() {
    let dbc = load("long_names.dbc");
    let mapping = VssMapping::from_toml(&data("long_names_vss.toml")).expect("mapping");
    // strict bind (labels checked against the value table) and the daemon's lenient bind
    let strict = mapping.bind(&dbc).expect("every long name binds");
    let (bound, skipped) = mapping.bind_lenient(&dbc);
    assert!(skipped.is_empty(), "{skipped:?}");
    let id = CanId::standard(801);
    assert!(strict.is_mapped(id) && bound.is_mapped(id));
    let mut state = VehicleState::from_mapping(&bound);
    let now = Timestamp(500);
    let mut payload = [0u8; 8];
    payload[..2].copy_from_slice(&4123u16.to_le_bytes());
    payload[2..4].copy_from_slice(&3987u16.to_le_bytes());
    payload[4] = 1; // BALANCING
    let changes = state.apply(&bound, &decoded(&dbc, id, &payload), now);
    assert_eq!(changes.len(), 3, "{changes:?}");
    let value = |p: &str| state.get(p, now).map(|r| r.value.clone());
    let max = value("Vehicle.Powertrain.TractionBattery.CellVoltage.Max")
        .and_then(|v| v.as_f64())
        .expect("max");
    assert!((max - 4.123).abs() < 1e-9, "{max}");
    let min = value("Vehicle.Powertrain.TractionBattery.CellVoltage.Min")
        .and_then(|v| v.as_f64())
        .expect("min");
    assert!((min - 3.987).abs() < 1e-9, "{min}");
    assert_eq!(
        value("Vehicle.Powertrain.TractionBattery.CellVoltage.IsBalancing"),
        Some(SignalValue::Bool(true))
    );
    // The Kuksa dbc2vss JSON format (the daemon's other mapping format) binds long names too.
    let kuksa = VssMapping::from_kuksa_json(
        r#"{"Vehicle": {"children": {"Powertrain": {"children": {"TractionBattery": {"children":
            {"CellVoltage": {"children": {"Min": {"datatype": "float", "type": "sensor",
            "dbc2vss": {"signal": "BMS_LowestCellVoltageInTheWholePack"}}}}}}}}}}}"#,
        1000,
    )
    .expect("kuksa mapping");
    let (bound, skipped) = kuksa.bind_lenient(&dbc);
    assert!(skipped.is_empty(), "{skipped:?}");
    let mut state = VehicleState::from_mapping(&bound);
    state.apply(&bound, &decoded(&dbc, id, &payload), now);
    let min = state
        .get("Vehicle.Powertrain.TractionBattery.CellVoltage.Min", now)
        .and_then(|r| r.value.as_f64())
        .expect("min");
    assert!((min - 3.987).abs() < 1e-9, "{min}");
}
