//! Demo car: DBC + mapping load, generated candump logs, decode -> VSS -> state store.

use telematics_can::demo::{self, BodyCommand, DEMO_DBC, DEMO_VSS_TOML};
use telematics_can::{
    CanId, CandumpReader, Dbc, DecodeOutcome, DecodeStats, SignalValue, Timestamp, VehicleState,
    VssMapping,
};

fn dbc() -> Dbc {
    Dbc::parse(DEMO_DBC).expect("demo DBC loads")
}

fn data_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The checked-in logs are exactly what the generator produces (set TELEMATICS_REGEN_LOGS=1 to rewrite).
#[test]
fn demo_logs_match_generator() {
    let dbc = dbc();
    for (name, text) in [
        ("demo_drive.log", demo::drive_log(&dbc).expect("drive log")),
        ("demo_park.log", demo::park_log(&dbc).expect("park log")),
    ] {
        let path = data_path(name);
        if std::env::var_os("TELEMATICS_REGEN_LOGS").is_some() {
            std::fs::write(&path, &text).expect("write log");
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} missing: {e}", path.display()));
        assert_eq!(on_disk, text, "{name} differs from generator output");
    }
}

#[test]
fn demo_dbc_has_no_warnings_and_all_kinds() {
    let dbc = dbc();
    assert!(dbc.warnings().is_empty(), "{:?}", dbc.warnings());
    let pt = dbc.message_by_name("PT_Status").expect("PT_Status");
    assert_eq!(
        pt.signal("VehicleSpeed").map(|s| s.byte_order),
        Some(telematics_can::ByteOrder::BigEndian)
    );
    let tpms = dbc.message_by_name("TPMS_Status").expect("TPMS");
    assert!(tpms.id.extended);
    assert_eq!(tpms.id.id, 0x18FF_1020);
    let fuel = dbc.message_by_name("PT_Fuel").expect("fuel");
    assert_eq!(
        fuel.signal("BatteryVoltage").map(|s| s.kind),
        Some(telematics_can::ValueKind::Float32)
    );
    let nav = dbc.message_by_name("NAV_Position").expect("nav");
    assert_eq!(
        nav.signal("Latitude").map(|s| s.kind),
        Some(telematics_can::ValueKind::Float64)
    );
    assert_eq!(
        dbc.message_by_name("BMS_FdSnapshot").map(|m| m.size),
        Some(64)
    );
}

#[test]
fn unset_signals_take_gen_sig_start_value() {
    let dbc = dbc();
    // BA_ "GenSigStartValue" SG_ 256 KeyInCabin 3 (SNA): bits 16..17 of byte 2
    let f = dbc
        .encode(
            "BCM_DoorStatus",
            &[(
                "DoorFL_Open",
                telematics_can::EncodeValue::Raw(telematics_can::RawValue::Unsigned(1)),
            )],
        )
        .expect("encode");
    assert_eq!(f.data, vec![0x01, 0x00, 0x03, 0, 0, 0, 0, 0]);
    let DecodeOutcome::Decoded(d) = dbc.decode_frame(&f).expect("decode") else {
        panic!("unknown")
    };
    assert_eq!(d.get("KeyInCabin").and_then(|s| s.label), Some("SNA"));
    let pt = dbc.message_by_name("PT_Status").expect("pt");
    assert_eq!(
        pt.signal("GearPosition").and_then(|s| s.start_bits),
        Some(7)
    );
    assert_eq!(pt.default_data[4] & 0x07, 7);
}

#[test]
fn speed_motorola_bits_by_hand() {
    let dbc = dbc();
    let f = dbc
        .encode(
            "PT_Status",
            &[(
                "VehicleSpeed",
                telematics_can::EncodeValue::Physical(123.45),
            )],
        )
        .expect("encode");
    // 12345 = 0x3039, Motorola start bit 7: MSB in byte 0
    assert_eq!(&f.data[0..2], &[0x30, 0x39]);
    let DecodeOutcome::Decoded(d) = dbc.decode(CanId::standard(0x101), &f.data).expect("decode")
    else {
        panic!("unknown id")
    };
    let s = d.get("VehicleSpeed").expect("speed");
    assert!((s.physical - 123.45).abs() < 1e-9);
}

#[test]
fn body_command_roundtrip_and_checksum() {
    let dbc = dbc();
    for (i, cmd) in [
        BodyCommand::Lock,
        BodyCommand::Unlock,
        BodyCommand::EngineStart,
        BodyCommand::EngineStop,
        BodyCommand::FlashLights(3),
        BodyCommand::Horn,
    ]
    .into_iter()
    .enumerate()
    {
        let counter = (i as u8) * 5 + 14; // wraps past 15
        let f = demo::encode_body_command(&dbc, cmd, counter).expect("encode");
        assert_eq!(f.id, 0x200);
        assert_eq!(
            f.data[6] & 0x0F,
            counter & 0x0F,
            "counter in byte 6 low nibble"
        );
        assert_eq!(f.data[7], f.data[..7].iter().fold(0, |a, b| a ^ b));
        assert_eq!(
            demo::decode_body_command(&dbc, &f),
            Some((cmd, counter & 0xF))
        );
        let mut bad = f.clone();
        bad.data[0] ^= 0x40;
        assert_eq!(
            demo::decode_body_command(&dbc, &bad),
            None,
            "checksum must be verified"
        );
    }
}

struct Replay {
    state: VehicleState,
    stats: DecodeStats,
    last_ms: u64,
    garbage: u64,
    changes: usize,
}

fn replay(log: &str) -> Replay {
    let dbc = dbc();
    let mapping = VssMapping::from_toml(DEMO_VSS_TOML)
        .expect("mapping")
        .bind(&dbc)
        .expect("bind");
    let mut state = VehicleState::from_mapping(&mapping);
    let mut stats = DecodeStats::default();
    let mut reader = CandumpReader::from_text(log);
    let mut last_ms = 0;
    let mut changes = 0;
    for lf in reader.by_ref() {
        let now = Timestamp(lf.timestamp_us / 1000 - demo::DEMO_EPOCH_US / 1000);
        last_ms = now.0;
        let r = dbc.decode_frame(&lf.frame);
        stats.record(&r);
        if let Ok(DecodeOutcome::Decoded(d)) = r {
            changes += state.apply(&mapping, &d, now).len();
        }
    }
    Replay {
        state,
        stats,
        last_ms,
        garbage: reader.garbage_count(),
        changes,
    }
}

fn val(r: &Replay, path: &str) -> SignalValue {
    r.state
        .get(path, Timestamp(r.last_ms))
        .unwrap_or_else(|| panic!("{path} missing"))
        .value
        .clone()
}

#[test]
fn drive_log_decodes_to_known_vss_values() {
    let log = std::fs::read_to_string(data_path("demo_drive.log")).expect("drive log present");
    let r = replay(&log);
    assert_eq!(r.garbage, 0);
    assert_eq!(r.stats.unknown_id, 20, "one 0x7DF frame per second");
    assert_eq!(r.stats.short_frame, 0);
    // 200 cycles x 4 frames + 20 x 2 slow frames + 1 FD BMS frame
    assert_eq!(r.stats.decoded, 200 * 4 + 20 * 2 + 1);
    // end of drive: 50 km/h in D, engine running, doors closed and locked, key present
    assert_eq!(val(&r, "Vehicle.Speed"), SignalValue::Float(50.0));
    assert_eq!(
        val(&r, "Vehicle.Powertrain.Transmission.SelectedGear"),
        SignalValue::Int(127)
    );
    assert_eq!(
        val(&r, "Vehicle.Powertrain.CombustionEngine.IsRunning"),
        SignalValue::Bool(true)
    );
    assert_eq!(
        val(&r, "Vehicle.Powertrain.CombustionEngine.Speed"),
        SignalValue::Int(2800)
    );
    assert_eq!(
        val(&r, "Vehicle.LowVoltageSystemState"),
        SignalValue::Text("ON".into())
    );
    assert_eq!(
        val(&r, "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"),
        SignalValue::Bool(false)
    );
    assert_eq!(
        val(&r, "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked"),
        SignalValue::Bool(true)
    );
    assert_eq!(
        val(&r, "Vehicle.Cabin.IsKeyPresent"),
        SignalValue::Bool(true)
    );
    assert_eq!(
        val(&r, "Vehicle.Body.Hood.IsOpen"),
        SignalValue::Bool(false)
    );
    // 62 % - 0.4 % = 61.6 %, encoded in 0.4 % steps -> 154 * 0.4 = 61.6 -> rounds to 62
    assert_eq!(
        val(&r, "Vehicle.Powertrain.FuelSystem.RelativeLevel"),
        SignalValue::Int(62)
    );
    assert_eq!(
        val(&r, "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure"),
        SignalValue::Int(242)
    ); // 241.5 -> 242
    assert_eq!(
        val(&r, "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure"),
        SignalValue::Int(234)
    );
    let v = val(&r, "Vehicle.LowVoltageBattery.CurrentVoltage")
        .as_f64()
        .expect("float");
    assert!((v - 14.2).abs() < 1e-5, "{v}");
    // Odometer: 12345.6 km + 50/7*7^2/2/3600 (ramp) + 50*4.9/3600 (cruise, last cycle at 19.9 s)
    let km = 12_345.6 + 50.0 / 7.0 * 49.0 / 2.0 / 3600.0 + 50.0 * 4.9 / 3600.0;
    let odo = val(&r, "Vehicle.TraveledDistance").as_f64().expect("float");
    assert!((odo - km).abs() <= 0.05 + 1e-9, "odometer {odo} vs {km}");
    assert!(r.changes > 40, "changes {}", r.changes);
    // the CAN FD frame (64 bytes, signals in bytes 60..64) decodes
    let fd = log.lines().find(|l| l.contains(" 600##")).expect("FD line");
    let lf = telematics_can::parse_line(fd).expect("FD frame parses");
    assert!(lf.frame.fd && lf.frame.data.len() == 64);
    let dbc = dbc();
    let Ok(DecodeOutcome::Decoded(d)) = dbc.decode_frame(&lf.frame) else {
        panic!("FD decode")
    };
    let max = d.get("CellVoltageMax").expect("max").physical;
    assert!((max - 3.342).abs() < 1e-9, "{max}");
    // a remote frame is a counted drop
    let mut stats = DecodeStats::default();
    let rtr = telematics_can::parse_line("(1.0) can0 100#R").expect("rtr");
    stats.record(&dbc.decode_frame(&rtr.frame));
    assert_eq!(stats.remote, 1);
    // staleness: speed has max age 500 ms
    let upd = r
        .state
        .get("Vehicle.Speed", Timestamp(r.last_ms))
        .expect("speed")
        .updated;
    assert_eq!(
        upd,
        Timestamp(19_901),
        "last PT_Status frame at 19.9 s + 1 ms"
    );
    assert!(
        !r.state
            .get("Vehicle.Speed", Timestamp(upd.0 + 500))
            .expect("speed")
            .is_stale
    );
    assert!(
        r.state
            .get("Vehicle.Speed", Timestamp(upd.0 + 501))
            .expect("speed")
            .is_stale
    );
}

#[test]
fn park_log_decodes_to_known_vss_values() {
    let log = std::fs::read_to_string(data_path("demo_park.log")).expect("park log present");
    let r = replay(&log);
    assert_eq!(val(&r, "Vehicle.Speed"), SignalValue::Float(0.0));
    assert_eq!(
        val(&r, "Vehicle.Powertrain.Transmission.SelectedGear"),
        SignalValue::Int(126)
    );
    assert_eq!(
        val(&r, "Vehicle.Powertrain.CombustionEngine.IsRunning"),
        SignalValue::Bool(false)
    );
    assert_eq!(
        val(&r, "Vehicle.LowVoltageSystemState"),
        SignalValue::Text("OFF".into())
    );
    assert_eq!(
        val(&r, "Vehicle.Cabin.IsKeyPresent"),
        SignalValue::Bool(false)
    );
    assert_eq!(
        val(&r, "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"),
        SignalValue::Bool(true)
    );
    assert_eq!(
        val(&r, "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure"),
        SignalValue::Int(180)
    );
    assert_eq!(
        val(&r, "Vehicle.Service.IsServiceDue"),
        SignalValue::Bool(true)
    );
    assert_eq!(
        val(&r, "Vehicle.Service.DistanceToService"),
        SignalValue::Float(-120.0)
    );
    assert_eq!(
        val(&r, "Vehicle.Powertrain.CombustionEngine.ECT"),
        SignalValue::Int(88)
    );
    assert_eq!(
        val(&r, "Vehicle.Powertrain.FuelSystem.RelativeLevel"),
        SignalValue::Int(18)
    );
    assert_eq!(
        val(&r, "Vehicle.TraveledDistance"),
        SignalValue::Float(20_000.0)
    );
    let lat = val(&r, "Vehicle.CurrentLocation.Latitude")
        .as_f64()
        .expect("lat");
    assert_eq!(lat, 48.137_154, "float64 signal is bit-exact");
}

#[test]
fn mapping_validation_names_bad_entry() {
    let dbc = dbc();
    let bad_signal = "[[signal]]\npath = \"Vehicle.Speed\"\nsignal = \"NoSuchSignal\"\n";
    let e = VssMapping::from_toml(bad_signal)
        .expect("parses")
        .bind(&dbc)
        .expect_err("unknown signal");
    assert_eq!(e.code(), "mapping_invalid");
    assert!(e.to_string().contains("entry #1 (Vehicle.Speed)"), "{e}");
    let bad_label = "[[signal]]\npath = \"Vehicle.Cabin.IsKeyPresent\"\nsignal = \"KeyInCabin\"\ntransform = { mapping = [{ from = \"NOPE\", to = true }] }\n";
    let e = VssMapping::from_toml(bad_label)
        .expect("parses")
        .bind(&dbc)
        .expect_err("bad label");
    assert!(e.to_string().contains("NOPE"), "{e}");
    let dup = "[[signal]]\npath = \"Vehicle.Speed\"\nsignal = \"VehicleSpeed\"\n[[signal]]\npath = \"Vehicle.Speed\"\nsignal = \"EngineRPM\"\n";
    let e = VssMapping::from_toml(dup).expect_err("dup");
    assert!(e.to_string().contains("entry #2"), "{e}");
    let bad_path = "[[signal]]\npath = \"Speed\"\nsignal = \"VehicleSpeed\"\n";
    assert!(VssMapping::from_toml(bad_path).is_err());
    let bad_type =
        "[[signal]]\npath = \"Vehicle.Speed\"\nsignal = \"VehicleSpeed\"\ndatatype = \"complex\"\n";
    assert!(
        VssMapping::from_toml(bad_type)
            .expect_err("type")
            .to_string()
            .contains("complex")
    );
    let bad_math = "[[signal]]\npath = \"Vehicle.Speed\"\nsignal = \"VehicleSpeed\"\ntransform = { math = \"x +\" }\n";
    assert!(VssMapping::from_toml(bad_math).is_err());
    let unknown_key =
        "[[signal]]\npath = \"Vehicle.Speed\"\nsignal = \"VehicleSpeed\"\nmax_age = 3\n";
    assert!(VssMapping::from_toml(unknown_key).is_err());
}
