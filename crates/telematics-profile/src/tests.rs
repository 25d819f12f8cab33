use super::*;
use telematics_can::VssMapping;
use telematics_can::demo::{self, BodyCommand, DEMO_DBC, DEMO_PROFILE_TOML, DEMO_VSS_TOML};
use telematics_exec::{DEFAULT_CONFIRMATIONS, RULES};

fn demo_parts() -> (Dbc, Vec<String>) {
    let dbc = Dbc::parse(DEMO_DBC).expect("dbc");
    let m = VssMapping::from_toml(DEMO_VSS_TOML).expect("mapping");
    let (bound, _) = m.bind_lenient(&dbc);
    let paths = bound.entries().iter().map(|e| e.path.clone()).collect();
    (dbc, paths)
}

fn parse(text: &str) -> Result<VehicleProfile, ProfileError> {
    let (dbc, paths) = demo_parts();
    let p: Vec<&str> = paths.iter().map(String::as_str).collect();
    VehicleProfile::parse(text, &dbc, &p)
}

fn demo_profile() -> VehicleProfile {
    parse(DEMO_PROFILE_TOML).expect("demo profile")
}

/// The demo car's profile keeps the executor's historical rules and confirmations.
#[test]
fn demo_profile_is_the_demo_cars_rules() {
    let p = demo_profile();
    // Same checks in the same order for each action.
    for a in Actuate::ALL {
        let of = |r: &[(Actuate, Check)]| -> Vec<Check> {
            r.iter().filter(|(k, _)| *k == a).map(|(_, c)| *c).collect()
        };
        assert_eq!(of(&p.rules()), of(RULES), "{a:?}");
    }
    assert_eq!(p.rules().len(), RULES.len());
    let mut c = p.confirmations();
    c.sort_by_key(|c| Actuate::ALL.iter().position(|a| *a == c.actuate));
    assert_eq!(c, DEFAULT_CONFIRMATIONS.to_vec());
    assert_eq!(p.buses(), vec!["body"]);
    // The bound paths are the executor's defaults.
    for (kind, paths) in p.signal_paths() {
        assert_eq!(paths, kind.vss_paths().to_vec(), "{kind:?}");
    }
}

/// The profile's frames are byte for byte the frames the demo car's own encoder builds.
#[test]
fn demo_profile_frames_equal_the_demo_encoder() {
    let (dbc, _) = demo_parts();
    let p = demo_profile();
    for (a, cmd) in [
        (Actuate::Lock, BodyCommand::Lock),
        (Actuate::Unlock, BodyCommand::Unlock),
        (Actuate::EngineStart, BodyCommand::EngineStart),
        (Actuate::EngineStop, BodyCommand::EngineStop),
        (Actuate::FlashLights, BodyCommand::FlashLights(3)),
        (Actuate::Horn, BodyCommand::Horn),
    ] {
        let spec = &p.action(a).expect("action").frame;
        assert_eq!(spec.counter_modulus(&dbc), 16);
        for counter in [0u8, 7, 15] {
            let f = spec.encode(&dbc, counter).expect("encode");
            assert_eq!(
                f,
                demo::encode_body_command(&dbc, cmd, counter).expect("demo")
            );
            assert_eq!(spec.matches(&dbc, &f), Some(Some(counter)), "{a:?}");
            let mut bad = f.clone();
            bad.data[1] ^= 0x10;
            assert_eq!(spec.matches(&dbc, &bad), None, "checksum of {a:?}");
        }
    }
}

/// The simulator's built-in demo car is the demo profile (they cannot drift apart).
#[test]
fn simulator_demo_is_the_demo_profile() {
    assert_eq!(
        demo_profile().sim_profile(),
        Some(telematics_can::sim::SimProfile::demo())
    );
}

#[test]
fn ack_decodes_refusal_codes_to_reasons() {
    let (dbc, _) = demo_parts();
    let ack = demo_profile().ack.expect("ack").spec;
    let ok = ack.encode(&dbc, 5, None).expect("ok");
    assert_eq!(
        ack.decode(&dbc, &ok),
        Some(telematics_can::actuation::Ack {
            counter: Some(5),
            outcome: telematics_can::actuation::AckOutcome::Ok
        })
    );
    let code = ack.code_for("low_battery").expect("code");
    let refused = ack.encode(&dbc, 6, Some(code)).expect("refused");
    let d = ack.decode(&dbc, &refused).expect("decoded");
    assert_eq!(d.counter, Some(6));
    assert_eq!(
        d.outcome,
        telematics_can::actuation::AckOutcome::Refused {
            code,
            reason: Some("low_battery".into())
        }
    );
    let unknown = ack.encode(&dbc, 1, Some(200)).expect("unknown code");
    assert!(matches!(
        ack.decode(&dbc, &unknown).expect("decoded").outcome,
        telematics_can::actuation::AckOutcome::Refused {
            code: 200,
            reason: None
        }
    ));
}

fn error_of(from: &str, to: &str) -> String {
    assert!(DEMO_PROFILE_TOML.contains(from), "{from}");
    parse(&DEMO_PROFILE_TOML.replacen(from, to, 1))
        .expect_err(to)
        .to_string()
}

/// Every validation error names the key that is wrong.
#[test]
fn errors_name_the_key() {
    let cases = [
        (
            "[actions.unlock]\nbus = \"body\"\nmessage = \"TCU_BodyCommand\"",
            "[actions.unlock]\nbus = \"body\"\nmessage = \"X\"",
            "actions.unlock.message: no message \"X\" in the DBC",
        ),
        (
            "signals = { LockRequest = \"LOCK\" }",
            "signals = { LockRequest = \"NOPE\" }",
            "actions.lock: unknown label \"NOPE\" for signal LockRequest",
        ),
        (
            "signals = { Horn = 1 }",
            "signals = { Hupe = 1 }",
            "actions.horn.signals.Hupe: no signal \"Hupe\" in message \"TCU_BodyCommand\"",
        ),
        (
            "preconditions = [\"engine_on\"]",
            "preconditions = [\"engine_warm\"]",
            "actions.engine_stop.preconditions[0]: no check \"engine_warm\"",
        ),
        (
            "confirm = { on = \"signal\", signal = \"doors_locked\", equals = true }",
            "confirm = { on = \"signal\", signal = \"speed\", equals = true }",
            "actions.lock.confirm.signal: no boolean signal \"speed\"",
        ),
        (
            "hood_closed = { path = \"Vehicle.Body.Hood.IsOpen\"",
            "hood_closed = { path = \"Vehicle.Body.Bonnet.IsOpen\"",
            "signals.hood_closed.path: no VSS path \"Vehicle.Body.Bonnet.IsOpen\" in the mapping",
        ),
        (
            "1 = \"not_in_park\"",
            "one = \"not_in_park\"",
            "ack.refusals.one: the key must be the integer refusal code",
        ),
        (
            "outcome = \"AckResult\"",
            "outcome = \"AckOutcome\"",
            "ack.outcome: no signal \"AckOutcome\" in message \"BCM_CommandAck\"",
        ),
        (
            "protection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
            "protection = { scheme = \"xor\", checksum_byte = 9 }\npreconditions = [\"doors_closed\"]",
            "actions.lock.protection: ",
        ),
        (
            "protection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
            "protection = { scheme = \"e2e_p1\", data_id = 5, data_id_mode = \"both\", crc_offset = 56, counter_offset = 48 }\npreconditions = [\"doors_closed\"]",
            "actions.lock: invalid DBC: e2e_p1 owns the alive counter",
        ),
        (
            "[actions.horn]",
            "[actions.klaxon]",
            "actions.klaxon: no such action",
        ),
        // SecOC: only on an unprotected frame, its trailer clear of the signals, sent once.
        (
            "protection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
            "protection = { scheme = \"xor\", checksum_byte = 7 }\nsecoc = { data_id = 1 }\npreconditions = [\"doors_closed\"]",
            "actions.lock.secoc: invalid DBC: secoc authenticates the frame: protection must be none, not xor",
        ),
        (
            "counter = \"CommandCounter\"\nprotection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
            "counter = \"CommandCounter\"\nsecoc = { data_id = 1 }\npreconditions = [\"doors_closed\"]",
            "actions.lock.secoc: invalid DBC: signal CommandCounter reaches byte 7 but the SecOC trailer takes bytes 4..8",
        ),
        (
            "counter = \"CommandCounter\"\nprotection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
            "secoc = { data_id = 1, mac_bits = 64 }\npreconditions = [\"doors_closed\"]",
            "actions.lock.secoc: ",
        ),
        (
            "counter = \"CommandCounter\"\nprotection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
            "secoc = { data_id = 1 }\nrepeat = { count = 3, interval_ms = 50 }\npreconditions = [\"doors_closed\"]",
            "actions.lock.repeat.count: 1 with secoc",
        ),
    ];
    for (from, to, want) in cases {
        let got = error_of(from, to);
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
    let got = parse("[signals]\n").expect_err("no speed").to_string();
    assert!(got.starts_with("signals.speed: missing"), "{got}");
    let got = parse("bogus = 1\n").expect_err("unknown key");
    assert_eq!(got.code(), "profile.toml");
    assert!(got.to_string().contains("bogus"), "{got}");
}

#[test]
fn buses_are_checked_against_the_configured_ones() {
    let p = demo_profile();
    assert_eq!(p.check_buses(&["body"]), Ok(()));
    let e = p.check_buses(&["powertrain"]).expect_err("no body bus");
    assert!(e.to_string().starts_with("actions."), "{e}");
    assert!(e.to_string().contains("no bus \"body\""), "{e}");
}

#[test]
fn bindings_read_other_encodings() {
    let b = Binding {
        kind: SignalKind::InPark,
        paths: vec!["Gear".into()],
        test: Test::Equals(Expected::Text("P".into())),
    };
    let p = telematics_telemetry::SignalValue::Text("P".into());
    assert_eq!(
        b.eval(|_| Some(&p)),
        Some(telematics_exec::VehicleSignal::InPark(true))
    );
    let d = telematics_telemetry::SignalValue::Text("D".into());
    assert_eq!(
        b.eval(|_| Some(&d)),
        Some(telematics_exec::VehicleSignal::InPark(false))
    );
    assert_eq!(b.eval(|_| None), None);
}

/// An E2E profile 1 protection owns the alive counter: the frame the daemon builds verifies
/// and carries its counter, and any 1-bit change fails it.
#[test]
fn e2e_profile_1_frames_carry_their_counter_and_fail_on_any_bit_flip() {
    let text = DEMO_PROFILE_TOML.replace(
        "counter = \"CommandCounter\"\nprotection = { scheme = \"xor\", checksum_byte = 7 }",
        "protection = { scheme = \"e2e_p1\", data_id = 0x123, data_id_mode = \"both\", crc_offset = 56, counter_offset = 48 }",
    );
    assert_ne!(text, DEMO_PROFILE_TOML);
    let (dbc, _) = demo_parts();
    let p = parse(&text).expect("e2e profile");
    let spec = &p.action(Actuate::Unlock).expect("unlock").frame;
    assert_eq!(spec.counter_modulus(&dbc), 15);
    for counter in 0..15u8 {
        let f = spec.encode(&dbc, counter).expect("encode");
        assert_eq!(spec.matches(&dbc, &f), Some(Some(counter)));
        for bit in 0..64 {
            let mut bad = f.clone();
            bad.data[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                spec.matches(&dbc, &bad),
                None,
                "counter {counter} bit {bit}"
            );
        }
    }
}

/// Test car B played from its files: the status frames decode, through each bus's own
/// mapping, to the simulated car (locked, parked, engine off); E2E P1 commands change it and
/// are acknowledged on the ack's bus, a told refusal carries its code; each frame names the
/// bus it belongs on.
#[test]
fn the_simulator_plays_car_b_from_its_files() {
    use telematics_can::actuation::AckOutcome;
    use telematics_can::state::{Timestamp, VehicleState};
    use telematics_can::{DecodeOutcome, SignalValue};
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../telematics-can/data");
    let read = |f: &str| std::fs::read_to_string(format!("{data}/{f}")).expect(f);
    let (dbc, body_map, pt_map, profile) = (
        read("test_car_b.dbc"),
        read("test_car_b_body_vss.toml"),
        read("test_car_b_powertrain_vss.toml"),
        read("test_car_b_profile.toml"),
    );
    let buses = [
        crate::sim::BusFiles {
            name: "body",
            dbc: &dbc,
            mapping: &body_map,
        },
        crate::sim::BusFiles {
            name: "powertrain",
            dbc: &dbc,
            mapping: &pt_map,
        },
    ];
    let mut bcm = crate::sim::body_controller(&profile, &buses).expect("car B");
    let d = Dbc::parse(&dbc).expect("dbc");
    let maps: Vec<_> = [&body_map, &pt_map]
        .iter()
        .map(|m| {
            VssMapping::from_toml(m)
                .expect("map")
                .bind(&d)
                .expect("bind")
        })
        .collect();
    let mut state: Vec<VehicleState> = maps.iter().map(VehicleState::from_mapping).collect();
    let p = VehicleProfile::parse_on_buses(
        &profile,
        &[("body", &d), ("powertrain", &d)],
        &maps
            .iter()
            .flat_map(|m| m.entries().iter().map(|e| e.path.as_str()))
            .collect::<Vec<_>>(),
    )
    .expect("profile");
    let ack = p.ack.as_ref().expect("ack").spec.clone();
    let mut acks = Vec::new();
    let mut feed = |bcm: &telematics_can::sim::BodyController,
                    frames: &[telematics_can::CanFrame],
                    state: &mut Vec<VehicleState>| {
        for f in frames {
            let bus = bcm.bus_of(f).expect("every frame names its bus");
            if let Some(a) = ack.decode(&d, f) {
                assert_eq!(bus, "body", "the ack is on the ack's bus");
                acks.push(a.outcome);
                continue;
            }
            let i = usize::from(bus == "powertrain");
            assert!(maps[i].is_mapped(f.can_id()), "{f:?} on {bus}");
            if let DecodeOutcome::Decoded(m) = d.decode_frame(f).expect("decodes") {
                state[i].apply(&maps[i], &m, Timestamp(0));
            }
        }
    };
    let get = |state: &Vec<VehicleState>, path: &str| {
        state
            .iter()
            .find_map(|s| s.get_fresh(path, Timestamp(0)).cloned())
    };
    let frames = bcm.tick(0);
    assert_eq!(frames.len(), 2, "BodySts on body, PtSts on powertrain");
    feed(&bcm, &frames, &mut state);
    const LOCKED: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
    const RUNNING: &str = "Vehicle.Powertrain.CombustionEngine.IsRunning";
    assert_eq!(get(&state, LOCKED), Some(SignalValue::Bool(true)));
    assert_eq!(
        get(&state, "Vehicle.Powertrain.Transmission.SelectedGear"),
        Some(SignalValue::Text("PARK".into()))
    );
    assert_eq!(get(&state, RUNNING), Some(SignalValue::Bool(false)));
    assert_eq!(get(&state, "Vehicle.Speed"), Some(SignalValue::Float(0.0)));
    let send = |bcm: &mut telematics_can::sim::BodyController, a: Actuate, ctr: u8| {
        let f = p
            .action(a)
            .expect("action")
            .frame
            .encode(&d, ctr)
            .expect("encode");
        bcm.on_frame(&f, 1)
    };
    let out = send(&mut bcm, Actuate::Unlock, 3);
    feed(&bcm, &out, &mut state);
    assert_eq!(get(&state, LOCKED), Some(SignalValue::Bool(false)));
    let out = send(&mut bcm, Actuate::EngineStart, 4);
    feed(&bcm, &out, &mut state);
    assert_eq!(get(&state, RUNNING), Some(SignalValue::Bool(true)));
    let code = bcm.refusal_code("low_battery").expect("code");
    assert_eq!(code, 16);
    bcm.refuse(Some(("lock", code)));
    let out = send(&mut bcm, Actuate::Lock, 5);
    feed(&bcm, &out, &mut state);
    assert_eq!(
        get(&state, LOCKED),
        Some(SignalValue::Bool(false)),
        "refused"
    );
    assert_eq!(
        acks,
        vec![
            AckOutcome::Ok,
            AckOutcome::Ok,
            AckOutcome::Refused {
                code: 16,
                reason: Some("low_battery".into())
            }
        ]
    );
    // A frame with a broken E2E CRC is not a command.
    let mut bad = p
        .action(Actuate::Lock)
        .expect("lock")
        .frame
        .encode(&d, 6)
        .expect("encode");
    bad.data[0] ^= 1;
    assert!(bcm.on_frame(&bad, 2).is_empty());
    assert_eq!(bcm.invalid_commands(), 1);
}

/// A SecOC action parses (defaults: SecOC profile 1, 8-bit freshness and 24-bit MAC in the
/// last 4 bytes) and its frame verifies with the key and freshness it was built with.
#[test]
fn a_secoc_action_builds_frames_that_verify() {
    let text = DEMO_PROFILE_TOML.replacen(
        "counter = \"CommandCounter\"\nprotection = { scheme = \"xor\", checksum_byte = 7 }\npreconditions = [\"doors_closed\"]",
        "secoc = { data_id = 0x0200 }\npreconditions = [\"doors_closed\"]",
        1,
    );
    let p = parse(&text).expect("secoc profile");
    let spec = &p.action(Actuate::Lock).expect("lock").frame;
    let sec = spec.secoc.expect("secoc");
    assert_eq!(
        (sec.data_id, sec.freshness_tx_bits, sec.mac_bits),
        (0x0200, 8, 24)
    );
    let dbc = telematics_can::Dbc::parse(telematics_can::demo::DEMO_DBC).expect("dbc");
    let key = telematics_can::protection::SecOcKey::from_bytes(&[9; 16]).expect("key");
    let mut f = spec.encode(&dbc, 0).expect("frame");
    let plain = f.clone();
    spec.secure(&mut f, &key, 300).expect("secured");
    assert_eq!(f.data.len(), 8);
    assert_eq!(f.data[..4], plain.data[..4], "the signals are untouched");
    let v = sec.verify(&key, &f.data, Some(299)).expect("verifies");
    assert_eq!(v.freshness, 300);
    assert!(sec.verify(&key, &f.data, Some(300)).is_err(), "a replay");
    let other = telematics_can::protection::SecOcKey::from_bytes(&[8; 16]).expect("key");
    assert!(
        sec.verify(&other, &f.data, Some(299)).is_err(),
        "another key"
    );
    assert!(spec.matches(&dbc, &f).is_some(), "the command itself");
}

/// The demo car's SecOC variant parses: unlock carries SecOC (data id 0x0200, no protection,
/// no counter), every other action is as in the shipped profile.
#[test]
fn the_demo_secoc_variant_secures_unlock_only() {
    let text = demo::demo_profile_with_secoc_unlock();
    assert_ne!(text, DEMO_PROFILE_TOML);
    let p = parse(&text).expect("secoc variant");
    let plain = demo_profile();
    for a in &p.actions {
        let frame = &a.frame;
        if a.actuate == Actuate::Unlock {
            assert_eq!(frame.secoc.map(|s| s.data_id), Some(0x0200));
            assert_eq!(frame.protection, telematics_can::Protection::None);
            assert_eq!(frame.counter, None);
        } else {
            assert_eq!(Some(a), plain.action(a.actuate), "{:?}", a.actuate);
        }
    }
}
