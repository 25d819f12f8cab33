use super::*;
use crate::payload::text;
use proptest::prelude::*;
use std::collections::BTreeMap;

const T0: u64 = 1_700_000_000_000;
const VIN: &str = "WVWZZZ1JZXW000001";

fn f(x: f64) -> SignalValue {
    SignalValue::Float(x)
}

#[test]
fn telemetry_roundtrip() {
    let mut signals = BTreeMap::new();
    signals.insert("Vehicle.Speed".to_string(), f(12.5));
    signals.insert(
        "Vehicle.Cabin.Door.IsLocked".to_string(),
        SignalValue::Bool(true),
    );
    signals.insert("Vehicle.OBD.RPM".to_string(), SignalValue::Int(-3));
    signals.insert(
        "Vehicle.VehicleIdentification.Model".to_string(),
        SignalValue::Text("M3".into()),
    );
    let t = Telemetry {
        kind: TelemetryKind::Snapshot,
        vin: VIN.into(),
        seq: 7,
        at: T0,
        signals,
        stale: vec!["Vehicle.Speed".into()],
    };
    let bytes = t.encode().expect("encode");
    assert_eq!(Telemetry::decode(&bytes).expect("decode"), t);
}

/// A result without detail.
fn result(id: u8, state: ResultState, reason: Option<&str>, at: u64) -> CommandResult {
    CommandResult {
        command_id: [id; 16],
        state,
        reason_code: reason.map(str::to_string),
        detail: None,
        at,
        retry_after_s: None,
    }
}

#[test]
fn result_alert_status_roundtrip() {
    let r = result(9, ResultState::Rejected, Some("not_stationary"), T0);
    assert_eq!(
        CommandResult::decode(&r.encode().expect("enc")).expect("dec"),
        r
    );
    let a = Alert {
        vin: VIN.into(),
        at: T0,
        kind: "low_fuel".into(),
        signal: Some("Vehicle.Powertrain.FuelSystem.RelativeLevel".into()),
        state: AlertState::Raised,
        value: Some(f(9.0)),
        threshold: Some(10.0),
        count: None,
        device: None,
        until: None,
    };
    assert_eq!(Alert::decode(&a.encode().expect("enc")).expect("dec"), a);
}

#[test]
fn security_event_fields_roundtrip_and_wrong_types_are_refused() {
    let mut a = Alert::event(VIN, "security_wrong_code", T0);
    a.count = Some(3);
    a.device = Some("a1b2".into());
    a.until = Some(T0 + 30_000);
    assert_eq!(Alert::decode(&a.encode().expect("enc")).expect("dec"), a);
    // An old consumer's view: the known fields decode as before, the new ones are optional.
    let plain = Alert::event(VIN, "security_device_paired", T0);
    let back = Alert::decode(&plain.encode().expect("enc")).expect("dec");
    assert_eq!((back.count, back.device, back.until), (None, None, None));
    let mut m = Vec::new();
    ciborium::ser::into_writer(
        &ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("vin".into()),
                ciborium::Value::Text(VIN.into()),
            ),
            (
                ciborium::Value::Text("at".into()),
                ciborium::Value::Integer(1.into()),
            ),
            (
                ciborium::Value::Text("kind".into()),
                ciborium::Value::Text("k".into()),
            ),
            (
                ciborium::Value::Text("state".into()),
                ciborium::Value::Text("raised".into()),
            ),
            (
                ciborium::Value::Text("count".into()),
                ciborium::Value::Integer((-1).into()),
            ),
        ]),
        &mut m,
    )
    .expect("cbor");
    assert!(matches!(
        Alert::decode(&m),
        Err(TelemetryError::Schema { field: "count", .. })
    ));
}

#[test]
fn command_id_is_a_16_byte_bstr_on_the_wire() {
    let r = CommandResult {
        command_id: [0xAB; 16],
        state: ResultState::Executed,
        reason_code: None,
        detail: None,
        at: 1,
        retry_after_s: None,
    };
    let bytes = r.encode().expect("enc");
    // 0x50 = major type 2 (bstr), length 16.
    let needle = [&[0x50u8][..], &[0xAB; 16][..]].concat();
    assert!(bytes.windows(17).any(|w| w == needle.as_slice()));
}

/// The published bytes of a result, pinned (`command-result` of docs/payloads.cddl: text keys in
/// this order, `command_id` a 16-byte bstr, absent optionals left out).
#[test]
fn result_wire_bytes_are_pinned() {
    let r = CommandResult {
        command_id: [0xAB; 16],
        state: ResultState::Rejected,
        reason_code: Some("door_open".into()),
        detail: Some("x".into()),
        at: 1_000,
        retry_after_s: None,
    };
    let mut want = vec![0xA5, 0x6A];
    want.extend_from_slice(b"command_id");
    want.push(0x50);
    want.extend_from_slice(&[0xAB; 16]);
    for (k, v) in [
        ("state", "rejected"),
        ("reason_code", "door_open"),
        ("detail", "x"),
    ] {
        want.push(0x60 + u8::try_from(k.len()).expect("short"));
        want.extend_from_slice(k.as_bytes());
        want.push(0x60 + u8::try_from(v.len()).expect("short"));
        want.extend_from_slice(v.as_bytes());
    }
    want.extend_from_slice(&[0x62, b'a', b't', 0x19, 0x03, 0xE8]);
    assert_eq!(r.encode().expect("enc"), want);
    let bare = CommandResult {
        reason_code: None,
        detail: None,
        state: ResultState::Executed,
        ..r
    };
    let bytes = bare.encode().expect("enc");
    assert_eq!(bytes[0], 0xA3, "absent optionals are left out");
    assert_eq!(CommandResult::decode(&bytes).expect("dec"), bare);
}

/// The serde form (the daemon's journal entry) keeps the record whole and reads entries that
/// predate the stored id (id from the journal key) with the legacy `reason` key and nulls.
#[test]
fn result_serde_form_round_trips_and_reads_legacy_entries() {
    let r = result(7, ResultState::Failed, Some("timeout"), T0);
    let mut buf = Vec::new();
    ciborium::into_writer(&r, &mut buf).expect("enc");
    let back: CommandResult = ciborium::from_reader(buf.as_slice()).expect("dec");
    assert_eq!(back, r);
    let legacy = ciborium::Value::Map(vec![
        (text("state"), text("rejected")),
        (text("reason"), text("busy")),
        (text("detail"), ciborium::Value::Null),
        (text("at"), ciborium::Value::Integer(5.into())),
    ]);
    let mut buf = Vec::new();
    ciborium::into_writer(&legacy, &mut buf).expect("enc");
    let old: CommandResult = ciborium::from_reader(buf.as_slice()).expect("legacy entry");
    assert_eq!(old, result(0, ResultState::Rejected, Some("busy"), 5));
}

#[test]
fn bad_bytes_are_errors_with_codes() {
    assert_eq!(
        Telemetry::decode(&[0xff, 0x00]).expect_err("bad").code(),
        "telemetry_decode"
    );
    assert_eq!(
        CommandResult::decode(&[]).expect_err("empty").code(),
        "telemetry_decode"
    );
    // Valid CBOR, wrong shape: an integer.
    assert_eq!(
        Alert::decode(&[0x01]).expect_err("int").code(),
        "telemetry_schema"
    );
    // command_id of 15 bytes.
    let mut bytes = Vec::new();
    let v = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("command_id".into()),
            ciborium::Value::Bytes(vec![1; 15]),
        ),
        (
            ciborium::Value::Text("state".into()),
            ciborium::Value::Text("executed".into()),
        ),
        (
            ciborium::Value::Text("at".into()),
            ciborium::Value::Integer(1.into()),
        ),
    ]);
    ciborium::ser::into_writer(&v, &mut bytes).expect("enc");
    let err = CommandResult::decode(&bytes).expect_err("short id");
    assert_eq!(
        err,
        TelemetryError::Schema {
            field: "command_id",
            why: "expected 16 bytes"
        }
    );
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Telemetry::decode(&bytes);
        let _ = Alert::decode(&bytes);
        let _ = CommandResult::decode(&bytes);
    }

    /// The security-event fields with values of any CBOR type: a typed error or the value,
    /// never a panic; well-typed ones round-trip.
    #[test]
    fn security_event_fields_of_any_type_decode_or_fail_typed(
        picks in prop::collection::vec((0usize..3, 0u8..6, any::<i64>(), ".{0,8}"), 0..4)
    ) {
        let keys = ["count", "device", "until"];
        let mut m = vec![
            (text("vin"), text(VIN)),
            (text("at"), ciborium::Value::Integer(1.into())),
            (text("kind"), text("security_unknown_key")),
            (text("state"), text("raised")),
        ];
        for (k, ty, n, t) in &picks {
            let v = match ty {
                0 => ciborium::Value::Integer((*n).into()),
                1 => text(t),
                2 => ciborium::Value::Bytes(t.as_bytes().to_vec()),
                3 => ciborium::Value::Float(*n as f64),
                4 => ciborium::Value::Null,
                _ => ciborium::Value::Array(vec![]),
            };
            m.push((text(keys[*k]), v));
        }
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&ciborium::Value::Map(m), &mut bytes).expect("cbor");
        match Alert::decode(&bytes) {
            Ok(a) => {
                prop_assert_eq!(Alert::decode(&a.encode().expect("enc")).expect("dec"), a);
            }
            Err(e) => prop_assert_eq!(e.code(), "telemetry_schema"),
        }
    }
}

// ---- alerts ----

fn fuel_engine(hold: u64) -> AlertEngine {
    let mut r = ThresholdRule::low_fuel("Vehicle.Powertrain.FuelSystem.RelativeLevel", 10.0, 3.0);
    r.min_hold_ms = hold;
    AlertEngine::new(VIN, vec![r]).expect("valid")
}

const FUEL: &str = "Vehicle.Powertrain.FuelSystem.RelativeLevel";

#[test]
fn low_fuel_raises_once_and_clears_once() {
    let mut e = fuel_engine(0);
    assert!(e.on_signal(FUEL, &f(50.0), T0).is_empty());
    let a = e.on_signal(FUEL, &f(9.5), T0 + 1);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].state, AlertState::Raised);
    assert_eq!(a[0].threshold, Some(10.0));
    assert!(e.on_signal(FUEL, &f(8.0), T0 + 2).is_empty());
    assert!(
        e.on_signal(FUEL, &f(12.9), T0 + 3).is_empty(),
        "inside band: no clear"
    );
    assert!(
        e.on_signal(FUEL, &f(13.0), T0 + 4).is_empty(),
        "at clear threshold: no clear"
    );
    let c = e.on_signal(FUEL, &f(13.1), T0 + 5);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].state, AlertState::Cleared);
    assert!(e.on_signal(FUEL, &f(40.0), T0 + 6).is_empty());
}

#[test]
fn min_hold_delays_clear() {
    let mut e = fuel_engine(60_000);
    assert_eq!(e.on_signal(FUEL, &f(5.0), T0).len(), 1);
    assert!(e.on_signal(FUEL, &f(50.0), T0 + 1_000).is_empty());
    let c = e.on_signal(FUEL, &f(50.0), T0 + 60_000);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].state, AlertState::Cleared);
}

#[test]
fn tire_pressure_rules_are_per_tire_and_service_due_works() {
    let fl = "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure";
    let fr = "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure";
    let svc = "Vehicle.Service.DistanceToService";
    let mut e = AlertEngine::new(
        VIN,
        vec![
            ThresholdRule::low_tire_pressure(fl, 180.0, 15.0),
            ThresholdRule::low_tire_pressure(fr, 180.0, 15.0),
            ThresholdRule::service_due(svc, 1000.0, 500.0),
        ],
    )
    .expect("valid");
    let a = e.on_signal(fl, &f(150.0), T0);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].signal.as_deref(), Some(fl));
    assert!(e.on_signal(fr, &f(230.0), T0).is_empty());
    let s = e.on_signal(svc, &SignalValue::Int(900), T0);
    assert_eq!(s[0].kind, "service_due");
    assert_eq!(e.active().len(), 2);
}

#[test]
fn lockout_alert_follows_security_events() {
    let mut e = fuel_engine(0);
    assert!(e.on_lockout(false, T0).is_none());
    let a = e.on_lockout(true, T0 + 1).expect("raised");
    assert_eq!(
        (a.kind.as_str(), a.state),
        ("security_lockout", AlertState::Raised)
    );
    assert!(e.on_lockout(true, T0 + 2).is_none());
    let c = e.on_lockout(false, T0 + 3).expect("cleared");
    assert_eq!(c.state, AlertState::Cleared);
}

#[test]
fn inverted_thresholds_refused_naming_rule() {
    let mut r = ThresholdRule::low_fuel(FUEL, 10.0, 3.0);
    r.clear_above = 5.0;
    let err = AlertEngine::new(VIN, vec![r]).expect_err("invalid");
    assert_eq!(err.code(), "telemetry_invalid_config");
    assert!(err.to_string().contains(FUEL));
}

proptest! {
    /// Oscillating inside the hysteresis band never raises or clears; each full crossing of the
    /// band produces at most one raise and one clear, alternating.
    #[test]
    fn no_flapping_inside_band(
        steps in prop::collection::vec((any::<bool>(), 0.0f64..1.0), 1..200),
    ) {
        let (lo, hi) = (10.0, 13.0);
        let mut e = fuel_engine(0);
        let mut now = T0;
        let mut raised = false;
        let mut crossings_down = 0u32;
        let mut raises = 0u32;
        let mut last_state: Option<AlertState> = None;
        let mut prev_zone = 1i8; // 1 = above hi, 0 = band, -1 = below lo
        for (outside, frac) in steps {
            let x = if outside {
                if frac < 0.5 { lo - 1.0 - frac * 10.0 } else { hi + 0.01 + frac * 10.0 }
            } else {
                lo + (hi - lo) * frac
            };
            let zone = if x < lo { -1 } else if x > hi { 1 } else { 0 };
            if zone == -1 && prev_zone != -1 && !raised { crossings_down += 1; }
            now += 1000;
            let alerts = e.on_signal(FUEL, &f(x), now);
            prop_assert!(alerts.len() <= 1);
            for a in &alerts {
                prop_assert_ne!(Some(a.state), last_state, "two identical transitions in a row");
                last_state = Some(a.state);
                if a.state == AlertState::Raised { raises += 1; raised = true; } else { raised = false; }
            }
            if zone == 0 { prop_assert!(alerts.is_empty(), "transition inside band at {}", x); }
            if zone != 0 { prev_zone = zone; }
        }
        prop_assert!(raises <= crossings_down);
    }
}

// ---- schedule ----

const SPEED: &str = "Vehicle.Speed";
const LOCKED: &str = "Vehicle.Cabin.Door.IsLocked";

fn sched() -> Schedule {
    Schedule::new(
        ScheduleConfig {
            vin: VIN.into(),
            periodic_ms: 60_000,
            on_change: vec![
                OnChange {
                    path: SPEED.into(),
                    deadband: 2.0,
                    min_interval_ms: 1_000,
                },
                OnChange {
                    path: LOCKED.into(),
                    deadband: 0.0,
                    min_interval_ms: 0,
                },
            ],
        },
        T0,
    )
    .expect("valid")
}

fn upd(path: &str, v: SignalValue) -> Vec<(String, SignalValue)> {
    vec![(path.to_string(), v)]
}

#[test]
fn periodic_snapshot_with_virtual_time_and_stale_list() {
    let mut s = sched();
    s.on_update(&upd("Vehicle.OBD.EngineLoad", f(20.0)), T0);
    let out = s.poll(T0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, TelemetryKind::Snapshot);
    assert_eq!(s.next_deadline(), T0 + 60_000);
    assert!(s.poll(T0 + 59_999).is_empty());
    // The signal store reports the engine load stale: the next snapshot lists it.
    assert!(s.snapshot_due(T0 + 60_000));
    s.set_stale(vec!["Vehicle.OBD.EngineLoad".into()]);
    let out = s.poll(T0 + 60_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].stale, vec!["Vehicle.OBD.EngineLoad".to_string()]);
    assert!(out[0].seq > 1);
    // A long pause yields one snapshot, not a burst, and stays on the grid.
    let out = s.poll(T0 + 300_500);
    assert_eq!(out.len(), 1);
    assert_eq!(s.next_deadline(), T0 + 360_000);
}

#[test]
fn on_change_respects_deadband_and_min_interval() {
    let mut s = sched();
    s.poll(T0);
    let d = s.on_update(&upd(SPEED, f(10.0)), T0 + 10);
    assert_eq!(d.len(), 1, "first value is a change");
    assert_eq!(d[0].kind, TelemetryKind::Delta);
    assert!(
        s.on_update(&upd(SPEED, f(11.5)), T0 + 2_000).is_empty(),
        "within deadband"
    );
    // Beyond deadband but inside min interval: deferred to poll.
    let d = s.on_update(&upd(SPEED, f(20.0)), T0 + 2_100);
    assert_eq!(d.len(), 1);
    assert!(s.on_update(&upd(SPEED, f(30.0)), T0 + 2_500).is_empty());
    assert_eq!(s.next_deadline(), T0 + 3_100);
    assert!(s.poll(T0 + 3_000).is_empty());
    let d = s.poll(T0 + 3_100);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].signals.get(SPEED), Some(&f(30.0)));
    // Non-numeric/boolean signals: any change counts, no rate limit.
    assert_eq!(
        s.on_update(&upd(LOCKED, SignalValue::Bool(true)), T0 + 3_200)
            .len(),
        1
    );
    assert_eq!(
        s.on_update(&upd(LOCKED, SignalValue::Bool(false)), T0 + 3_201)
            .len(),
        1
    );
    assert!(
        s.on_update(&upd(LOCKED, SignalValue::Bool(false)), T0 + 3_202)
            .is_empty()
    );
}

#[test]
fn schedule_config_validation_names_key() {
    let err = Schedule::new(
        ScheduleConfig {
            vin: VIN.into(),
            periodic_ms: 0,
            on_change: vec![],
        },
        T0,
    )
    .expect_err("invalid");
    assert!(err.to_string().contains("telemetry.periodic_ms"));
}

proptest! {
    /// Deltas for a signal are never closer than its min interval, and seq strictly increases.
    #[test]
    fn deltas_respect_min_interval(
        evs in prop::collection::vec((0u64..3_000, -50.0f64..50.0, any::<bool>()), 1..100),
    ) {
        let mut s = sched();
        let mut now = T0;
        let mut last_speed_delta: Option<u64> = None;
        let mut last_seq = 0;
        for (dt, v, is_poll) in evs {
            now += dt;
            let out = if is_poll { s.poll(now) } else { s.on_update(&upd(SPEED, f(v)), now) };
            for m in out {
                prop_assert!(m.seq > last_seq);
                last_seq = m.seq;
                if m.kind == TelemetryKind::Delta && m.signals.contains_key(SPEED) {
                    if let Some(prev) = last_speed_delta {
                        prop_assert!(now >= prev + 1_000);
                    }
                    last_speed_delta = Some(now);
                }
            }
            if is_poll {
                prop_assert!(s.next_deadline() > now, "poll left a due deadline behind");
            }
        }
    }
}
