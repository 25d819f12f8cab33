use super::*;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn id(n: u8) -> CommandId {
    CommandId([n; 16])
}

fn req(n: u8, action: Action) -> CommandRequest {
    CommandRequest { id: id(n), action }
}

fn start(secs: Option<u32>) -> Action {
    Action::EngineStart { max_run_secs: secs }
}

/// A parked, closed, locked, engine-off vehicle with every signal fresh at `now`.
fn ready(now: u64) -> Executor {
    let mut e = Executor::new(ExecConfig::default()).expect("valid config");
    for s in [
        VehicleSignal::SpeedKmh(0.0),
        VehicleSignal::InPark(true),
        VehicleSignal::DoorsClosed(true),
        VehicleSignal::DoorsLocked(true),
        VehicleSignal::HoodClosed(true),
        VehicleSignal::KeyInCabin(false),
        VehicleSignal::EngineRunning(false),
        VehicleSignal::BrakePressed(false),
    ] {
        e.on_vehicle_update(s, now);
    }
    e
}

/// The outputs so far; every actuation frame is then reported written (as the daemon's
/// actuator does), so that vehicle signals can confirm its command.
fn drain(e: &mut Executor) -> Vec<Output> {
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    for o in &out {
        if let Output::SendFrames(ActuationRequest {
            command_id: Some(c),
            ..
        }) = o
        {
            e.on_frame_sent(*c, Ok(()), T0);
        }
    }
    out
}

/// Before its frame is on the bus, the vehicle already showing the target state does not
/// confirm a command (lock while locked): the state before the frame says nothing about it.
#[test]
fn a_signal_before_the_frame_is_written_does_not_confirm() {
    let mut e = ready(T0);
    e.on_vehicle_update(VehicleSignal::DoorsLocked(true), T0);
    drain(&mut e);
    e.submit_request(req(1, Action::Lock), T0 + 1);
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert_eq!(actuations(&out), vec![Actuate::Lock]);
    e.on_vehicle_update(VehicleSignal::DoorsLocked(true), T0 + 50);
    assert!(
        publishes(&drain(&mut e)).is_empty(),
        "not confirmed before the write"
    );
    assert!(e.is_busy());
    // The write fails: the command fails send_failed, it was never executed.
    e.on_frame_sent(id(1), Err("bus down".into()), T0 + 60);
    assert_eq!(
        publishes(&drain(&mut e)),
        vec![(ResultState::Failed, Some("send_failed"))]
    );
    // Written: the next report of the state confirms it.
    e.submit_request(req(2, Action::Lock), T0 + 100);
    let _ = std::iter::from_fn(|| e.poll_output()).count();
    e.on_frame_sent(id(2), Ok(()), T0 + 110);
    e.on_vehicle_update(VehicleSignal::DoorsLocked(true), T0 + 150);
    assert_eq!(
        publishes(&drain(&mut e)),
        vec![(ResultState::Executed, None)]
    );
}

fn publishes(out: &[Output]) -> Vec<(ResultState, Option<&str>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Publish(r) => Some((r.state, r.reason_code.as_deref())),
            _ => None,
        })
        .collect()
}

fn actuations(out: &[Output]) -> Vec<Actuate> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendFrames(a) => Some(a.actuate),
            _ => None,
        })
        .collect()
}

fn rejected_with(e: &mut Executor, action: Action, code: &str) {
    e.submit_request(req(99, action), T0 + 10);
    let out = drain(e);
    assert_eq!(publishes(&out), vec![(ResultState::Rejected, Some(code))]);
    assert!(
        actuations(&out).is_empty(),
        "a rejected command must not actuate"
    );
}

#[test]
fn invalid_config_is_refused_with_code() {
    let cfg = ExecConfig {
        confirm_timeout_ms: 0,
        ..ExecConfig::default()
    };
    let err = Executor::new(cfg).expect_err("must refuse");
    assert_eq!(err.code(), "exec_invalid_config");
}

#[test]
fn every_precondition_refusal_has_its_code() {
    let cases: Vec<(VehicleSignal, Action, &str)> = vec![
        (
            VehicleSignal::SpeedKmh(12.0),
            Action::Unlock,
            "not_stationary",
        ),
        (VehicleSignal::SpeedKmh(-3.0), start(None), "not_stationary"),
        (
            VehicleSignal::SpeedKmh(f64::NAN),
            Action::Unlock,
            "not_stationary",
        ),
        (VehicleSignal::InPark(false), start(None), "not_in_park"),
        (VehicleSignal::DoorsClosed(false), start(None), "door_open"),
        (VehicleSignal::DoorsClosed(false), Action::Lock, "door_open"),
        (VehicleSignal::HoodClosed(false), start(None), "hood_open"),
        (VehicleSignal::KeyInCabin(true), start(None), "key_in_cabin"),
        (
            VehicleSignal::EngineRunning(true),
            start(None),
            "engine_running",
        ),
        (
            VehicleSignal::EngineRunning(false),
            Action::EngineStop,
            "engine_not_running",
        ),
    ];
    for (sig, action, code) in cases {
        let mut e = ready(T0);
        drain(&mut e);
        e.on_vehicle_update(sig, T0 + 5);
        rejected_with(&mut e, action, code);
    }
}

#[test]
fn lock_with_open_door_allowed_when_configured() {
    let cfg = ExecConfig {
        lock_requires_doors_closed: false,
        ..ExecConfig::default()
    };
    let mut e = Executor::new(cfg).expect("valid");
    e.on_vehicle_update(VehicleSignal::DoorsClosed(false), T0);
    e.submit_request(req(1, Action::Lock), T0);
    let out = drain(&mut e);
    assert_eq!(actuations(&out), vec![Actuate::Lock]);
}

#[test]
fn stale_and_missing_state_refuse_naming_the_signal() {
    // Missing: nothing ever reported.
    let mut e = Executor::new(ExecConfig::default()).expect("valid");
    e.submit_request(req(1, Action::Unlock), T0);
    let out = drain(&mut e);
    let Some(Output::Publish(r)) = out.iter().find(|o| matches!(o, Output::Publish(_))) else {
        panic!("no publish");
    };
    assert_eq!(r.reason_code.as_deref(), Some("stale_state"));
    assert_eq!(r.detail.as_deref(), Some("Vehicle.Speed"));
    // Stale: reported, then left out of the daemon's fresh view (the gear aged out).
    let mut e = ready(T0);
    drain(&mut e);
    let late = T0 + 10_000;
    e.on_vehicle_state(&[VehicleSignal::SpeedKmh(0.0)], late);
    e.submit_request(req(2, start(None)), late);
    let out = drain(&mut e);
    let recs: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Publish(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reason_code.as_deref(), Some("stale_state"));
    assert_eq!(
        recs[0].detail.as_deref(),
        Some("Vehicle.Powertrain.Transmission.SelectedGear")
    );
    assert!(actuations(&out).is_empty());
    // A door signal names each door's path the daemon reads.
    let mut e = ready(T0);
    drain(&mut e);
    e.on_vehicle_state(
        &[
            VehicleSignal::SpeedKmh(0.0),
            VehicleSignal::DoorsLocked(false),
        ],
        late,
    );
    e.submit_request(req(3, Action::Lock), late);
    let out = drain(&mut e);
    let detail = out.iter().find_map(|o| match o {
        Output::Publish(r) if r.reason_code.as_deref() == Some("stale_state") => r.detail.clone(),
        _ => None,
    });
    assert_eq!(
        detail.as_deref(),
        Some(
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen,Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen,\
             Vehicle.Cabin.Door.Row2.DriverSide.IsOpen,Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen"
        )
    );
    assert!(actuations(&out).is_empty());
}

/// The exact paths, written out (not via `paths`): what the daemon's vehicle model reads and
/// the demo mapping provides.
#[test]
fn every_signal_names_the_paths_the_daemon_reads() {
    let door = |leaf: &str| -> Vec<String> {
        [
            "Row1.DriverSide",
            "Row1.PassengerSide",
            "Row2.DriverSide",
            "Row2.PassengerSide",
        ]
        .iter()
        .map(|d| format!("Vehicle.Cabin.Door.{d}.{leaf}"))
        .collect()
    };
    let expected: [(SignalKind, Vec<String>); 8] = [
        (SignalKind::Speed, vec!["Vehicle.Speed".into()]),
        (
            SignalKind::InPark,
            vec!["Vehicle.Powertrain.Transmission.SelectedGear".into()],
        ),
        (SignalKind::DoorsClosed, door("IsOpen")),
        (SignalKind::DoorsLocked, door("IsLocked")),
        (
            SignalKind::HoodClosed,
            vec!["Vehicle.Body.Hood.IsOpen".into()],
        ),
        (
            SignalKind::KeyInCabin,
            vec!["Vehicle.Cabin.IsKeyPresent".into()],
        ),
        (
            SignalKind::EngineRunning,
            vec!["Vehicle.Powertrain.CombustionEngine.IsRunning".into()],
        ),
        (
            SignalKind::BrakePressed,
            vec!["Vehicle.Chassis.Brake.PedalPosition".into()],
        ),
    ];
    for (kind, paths) in expected {
        assert_eq!(kind.vss_paths(), paths.as_slice(), "{kind:?}");
        assert_eq!(kind.vss_detail(), paths.join(","), "{kind:?}");
    }
}

#[test]
fn lock_lifecycle_accepted_then_executed_on_confirmation() {
    let mut e = ready(T0);
    e.on_vehicle_update(VehicleSignal::DoorsLocked(false), T0);
    drain(&mut e);
    e.submit_request(req(1, Action::Lock), T0 + 1);
    let out = drain(&mut e);
    assert_eq!(publishes(&out), vec![(ResultState::Accepted, None)]);
    assert_eq!(actuations(&out), vec![Actuate::Lock]);
    assert!(out.iter().any(|o| matches!(o, Output::JournalCommand(r)
        if r.command_id == id(1).0 && r.state == ResultState::Accepted)));
    assert!(e.is_busy());
    e.on_vehicle_update(VehicleSignal::DoorsLocked(true), T0 + 200);
    let out = drain(&mut e);
    assert_eq!(publishes(&out), vec![(ResultState::Executed, None)]);
    assert!(out.iter().any(|o| matches!(o, Output::JournalCommand(r)
        if r.command_id == id(1).0 && r.state == ResultState::Executed)));
    assert!(!e.is_busy());
}

#[test]
fn confirmation_timeout_fails() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, Action::Unlock), T0);
    drain(&mut e);
    let deadline = e.next_timeout().expect("armed");
    assert_eq!(deadline, T0 + ExecConfig::default().confirm_timeout_ms);
    e.handle_timeout(deadline - 1);
    assert!(drain(&mut e).is_empty());
    e.handle_timeout(deadline);
    let out = drain(&mut e);
    assert_eq!(
        publishes(&out),
        vec![(ResultState::Failed, Some("timeout"))]
    );
    assert_eq!(e.next_timeout(), None);
    // A late confirmation changes nothing.
    e.on_vehicle_update(VehicleSignal::DoorsLocked(false), deadline + 5);
    assert!(publishes(&drain(&mut e)).is_empty());
}

#[test]
fn same_id_twice_actuates_once_and_repeats_result() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(7, Action::Unlock), T0);
    e.submit_request(req(7, Action::Unlock), T0 + 1);
    let out = drain(&mut e);
    assert_eq!(actuations(&out), vec![Actuate::Unlock]);
    assert_eq!(
        publishes(&out),
        vec![(ResultState::Accepted, None), (ResultState::Accepted, None)]
    );
    e.on_vehicle_update(VehicleSignal::DoorsLocked(false), T0 + 50);
    drain(&mut e);
    e.submit_request(req(7, Action::Unlock), T0 + 100);
    let out = drain(&mut e);
    assert!(actuations(&out).is_empty());
    assert_eq!(publishes(&out), vec![(ResultState::Executed, None)]);
}

#[test]
fn second_command_while_actuating_is_rejected_busy() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, Action::Unlock), T0);
    drain(&mut e);
    e.submit_request(req(2, Action::Horn), T0 + 1);
    let out = drain(&mut e);
    assert_eq!(publishes(&out), vec![(ResultState::Rejected, Some("busy"))]);
    assert!(actuations(&out).is_empty());
}

#[test]
fn horn_and_lights_are_confirmed_by_the_acknowledgement() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, Action::FlashLights), T0);
    let out = drain(&mut e);
    assert_eq!(actuations(&out), vec![Actuate::FlashLights]);
    assert_eq!(publishes(&out), vec![(ResultState::Accepted, None)]);
    // Written to the bus: still waiting for the body controller.
    e.on_frame_sent(id(1), Ok(()), T0 + 1);
    assert!(e.is_busy());
    e.on_ack(Ok(()), T0 + 2);
    assert_eq!(
        publishes(&drain(&mut e)),
        vec![(ResultState::Executed, None)]
    );
    assert!(!e.is_busy());
}

#[test]
fn a_refusal_by_the_vehicle_fails_with_its_reason_not_timeout() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, start(None)), T0);
    drain(&mut e);
    e.on_ack(Err("low_battery".into()), T0 + 5);
    let out = drain(&mut e);
    let rec = out
        .iter()
        .find_map(|o| match o {
            Output::Publish(r) => Some(r.clone()),
            _ => None,
        })
        .expect("result");
    assert_eq!(rec.state, ResultState::Failed);
    assert_eq!(rec.reason_code.as_deref(), Some(REFUSED_BY_VEHICLE));
    assert_eq!(rec.detail.as_deref(), Some("low_battery"));
    assert!(!e.is_busy());
    // No run timer for a start that never happened, and no timeout later.
    assert_eq!(e.durable_run_timer(), None);
    e.handle_timeout(T0 + 60_000);
    assert!(publishes(&drain(&mut e)).is_empty());
}

#[test]
fn a_frame_that_cannot_be_written_fails_send_failed() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, Action::Lock), T0);
    drain(&mut e);
    // Another command's report changes nothing.
    e.on_frame_sent(id(2), Err("x".into()), T0 + 1);
    assert!(e.is_busy());
    e.on_frame_sent(id(1), Err("not connected".into()), T0 + 1);
    assert_eq!(
        publishes(&drain(&mut e)),
        vec![(ResultState::Failed, Some(SEND_FAILED))]
    );
}

#[test]
fn confirmation_sent_and_own_timeout_and_unsupported_action() {
    let cfg = ExecConfig {
        confirmations: vec![
            Confirmation {
                actuate: Actuate::Horn,
                confirm: Confirm::Sent,
                timeout_ms: None,
            },
            Confirmation {
                actuate: Actuate::Lock,
                confirm: Confirm::Signal {
                    kind: SignalKind::DoorsLocked,
                    equals: true,
                },
                timeout_ms: Some(300),
            },
        ],
        ..ExecConfig::default()
    };
    let mut e = Executor::new(cfg).expect("valid");
    e.on_vehicle_update(VehicleSignal::DoorsClosed(true), T0);
    e.submit_request(req(1, Action::Horn), T0);
    drain(&mut e);
    e.on_frame_sent(id(1), Ok(()), T0 + 1);
    assert_eq!(
        publishes(&drain(&mut e)),
        vec![(ResultState::Executed, None)]
    );
    e.submit_request(req(2, Action::Lock), T0 + 2);
    drain(&mut e);
    assert_eq!(e.next_timeout(), Some(T0 + 302));
    e.submit_request(req(3, Action::FlashLights), T0 + 3);
    assert_eq!(
        publishes(&drain(&mut e)),
        vec![(ResultState::Rejected, Some("not_supported"))]
    );
}

fn started(secs: Option<u32>) -> Executor {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, start(secs)), T0);
    drain(&mut e);
    e.on_vehicle_update(VehicleSignal::EngineRunning(true), T0 + 1_000);
    let out = drain(&mut e);
    assert_eq!(publishes(&out), vec![(ResultState::Executed, None)]);
    assert!(e.run_timer_active());
    e
}

#[test]
fn run_timer_auto_stops_at_capped_time() {
    // Requested 10 000 s, capped by the configured 900 s.
    let mut e = started(Some(10_000));
    let deadline = e.next_timeout().expect("run timer armed");
    assert_eq!(deadline, T0 + 1_000 + 900_000);
    e.handle_timeout(deadline - 1);
    assert!(drain(&mut e).is_empty());
    e.handle_timeout(deadline);
    let out = drain(&mut e);
    assert_eq!(actuations(&out), vec![Actuate::EngineStop]);
    assert!(out.contains(&Output::RunTimerEnded {
        command_id: id(1),
        reason: RunEnd::AutoStop
    }));
    assert!(!e.run_timer_active());
}

#[test]
fn run_timer_uses_shorter_requested_time() {
    let e = started(Some(60));
    assert_eq!(e.next_timeout(), Some(T0 + 1_000 + 60_000));
}

#[test]
fn driver_takeover_cancels_auto_stop() {
    let mut e = started(None);
    // Key alone is not a takeover.
    e.on_vehicle_update(VehicleSignal::KeyInCabin(true), T0 + 5_000);
    assert!(drain(&mut e).is_empty());
    assert!(e.run_timer_active());
    e.on_vehicle_update(VehicleSignal::BrakePressed(true), T0 + 6_000);
    let out = drain(&mut e);
    assert_eq!(
        out,
        vec![Output::RunTimerEnded {
            command_id: id(1),
            reason: RunEnd::DriverTakeover
        }]
    );
    assert_eq!(e.next_timeout(), None);
    e.handle_timeout(T0 + 10_000_000);
    assert!(actuations(&drain(&mut e)).is_empty());
}

#[test]
fn engine_stop_command_cancels_timer() {
    let mut e = started(None);
    e.submit_request(req(2, Action::EngineStop), T0 + 2_000);
    let out = drain(&mut e);
    assert!(out.contains(&Output::RunTimerEnded {
        command_id: id(1),
        reason: RunEnd::StopCommand
    }));
    assert_eq!(actuations(&out), vec![Actuate::EngineStop]);
    e.on_vehicle_update(VehicleSignal::EngineRunning(false), T0 + 3_000);
    let out = drain(&mut e);
    assert_eq!(publishes(&out), vec![(ResultState::Executed, None)]);
    assert_eq!(e.next_timeout(), None);
}

#[test]
fn restart_mid_command_reports_interrupted_and_never_reexecutes() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(req(1, Action::Unlock), T0);
    let journal: Vec<_> = drain(&mut e)
        .into_iter()
        .filter_map(|o| match o {
            Output::JournalCommand(r) => Some(r),
            _ => None,
        })
        .collect();
    // Daemon dies; a new executor is restored from the journal.
    let mut e2 = ready(T0 + 60_000);
    drain(&mut e2);
    e2.restore(journal, T0 + 60_000);
    let out = drain(&mut e2);
    assert_eq!(
        publishes(&out),
        vec![(ResultState::Failed, Some("interrupted"))]
    );
    assert!(out.iter().any(|o| matches!(o, Output::JournalCommand(r)
        if r.command_id == id(1).0 && r.state == ResultState::Failed && r.reason_code.as_deref() == Some("interrupted"))));
    e2.submit_request(req(1, Action::Unlock), T0 + 61_000);
    let out = drain(&mut e2);
    assert!(actuations(&out).is_empty());
    assert_eq!(
        publishes(&out),
        vec![(ResultState::Failed, Some("interrupted"))]
    );
}

#[test]
fn idempotency_memory_is_bounded() {
    let cfg = ExecConfig {
        idempotency_capacity: 4,
        ..ExecConfig::default()
    };
    let mut e = Executor::new(cfg).expect("valid");
    for n in 0..20 {
        e.submit_request(req(n, Action::Horn), T0);
    }
    assert!(e.recent.len() <= 4);
}

#[derive(Clone, Debug)]
enum Ev {
    Submit(u8, u8),
    Update(u8, bool, u8),
    Advance(u32),
    Timeout,
    Restart,
}

fn action_of(n: u8) -> Action {
    match n % 6 {
        0 => Action::Lock,
        1 => Action::Unlock,
        2 => start(Some(u32::from(n) * 7)),
        3 => Action::EngineStop,
        4 => Action::FlashLights,
        _ => Action::Horn,
    }
}

fn signal_of(k: u8, b: bool, v: u8) -> VehicleSignal {
    match k % 8 {
        0 => VehicleSignal::SpeedKmh(if b { 0.0 } else { f64::from(v) }),
        1 => VehicleSignal::InPark(b),
        2 => VehicleSignal::DoorsClosed(b),
        3 => VehicleSignal::DoorsLocked(b),
        4 => VehicleSignal::HoodClosed(b),
        5 => VehicleSignal::KeyInCabin(!b),
        6 => VehicleSignal::EngineRunning(b),
        _ => VehicleSignal::BrakePressed(!b),
    }
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0u8..6, any::<u8>()).prop_map(|(i, a)| Ev::Submit(i, a)),
        6 => (any::<u8>(), prop::bool::weighted(0.8), any::<u8>())
            .prop_map(|(k, b, v)| Ev::Update(k, b, v)),
        3 => (0u32..20_000).prop_map(Ev::Advance),
        2 => Just(Ev::Timeout),
        1 => Just(Ev::Restart),
    ]
}

proptest! {
    #[test]
    fn random_sequences_keep_invariants(events in prop::collection::vec(ev(), 1..80)) {
        let mut now = T0;
        let mut e = ready(now);
        drain(&mut e);
        let mut journal: HashMap<CommandId, CommandResult> = HashMap::new();
        let mut actuated: HashMap<CommandId, u32> = HashMap::new();
        let mut terminal: HashMap<CommandId, u32> = HashMap::new();
        let mut accepted: Vec<CommandId> = Vec::new();
        let handle = |out: Vec<Output>,
                          journal: &mut HashMap<CommandId, CommandResult>,
                          actuated: &mut HashMap<CommandId, u32>,
                          terminal: &mut HashMap<CommandId, u32>,
                          accepted: &mut Vec<CommandId>| {
            for o in out {
                match o {
                    Output::SendFrames(ActuationRequest { command_id: Some(i), .. }) => {
                        *actuated.entry(i).or_default() += 1;
                    }
                    Output::JournalCommand(r) => {
                        if r.state == ResultState::Accepted {
                            accepted.push(CommandId(r.command_id));
                        } else {
                            *terminal.entry(CommandId(r.command_id)).or_default() += 1;
                        }
                        journal.insert(CommandId(r.command_id), r);
                    }
                    _ => {}
                }
            }
        };
        for ev in events {
            match ev {
                Ev::Submit(i, a) => e.submit_request(req(i, action_of(a)), now),
                Ev::Update(k, b, v) => e.on_vehicle_update(signal_of(k, b, v), now),
                Ev::Advance(ms) => now += u64::from(ms),
                Ev::Timeout => e.handle_timeout(now),
                Ev::Restart => {
                    let out = drain(&mut e);
                    handle(out, &mut journal, &mut actuated, &mut terminal, &mut accepted);
                    e = ready(now);
                    drain(&mut e);
                    e.restore(journal.values().cloned().collect::<Vec<_>>(), now);
                }
            }
            let out = drain(&mut e);
            handle(out, &mut journal, &mut actuated, &mut terminal, &mut accepted);
        }
        // Let every pending timer fire.
        now += 10_000_000;
        e.handle_timeout(now);
        let out = drain(&mut e);
        handle(out, &mut journal, &mut actuated, &mut terminal, &mut accepted);
        for (i, n) in &actuated {
            prop_assert_eq!(*n, 1, "command {:?} actuated {} times", i, n);
        }
        for i in &accepted {
            prop_assert_eq!(terminal.get(i).copied(), Some(1), "accepted {:?} not terminated exactly once", i);
        }
        for (i, n) in &terminal {
            prop_assert_eq!(*n, 1, "command {:?} has {} terminal states", i, n);
        }
    }
}

#[test]
fn restored_result_keeps_reason_code_and_is_repeated_for_the_same_id() {
    let mut e = ready(T0);
    drain(&mut e);
    e.on_vehicle_update(VehicleSignal::SpeedKmh(40.0), T0);
    e.submit_request(req(7, Action::Unlock), T0);
    let journal: Vec<CommandResult> = drain(&mut e)
        .into_iter()
        .filter_map(|o| match o {
            Output::JournalCommand(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].reason_code.as_deref(), Some("not_stationary"));
    let mut e2 = ready(T0 + 1_000);
    drain(&mut e2);
    e2.restore(journal, T0 + 1_000);
    assert!(
        drain(&mut e2).is_empty(),
        "terminal entries are only remembered"
    );
    let prior = e2.result_of(&id(7)).expect("remembered");
    assert_eq!(prior.reason_code.as_deref(), Some("not_stationary"));
    e2.submit_request(req(7, Action::Unlock), T0 + 2_000);
    assert_eq!(
        publishes(&drain(&mut e2)),
        vec![(ResultState::Rejected, Some("not_stationary"))]
    );
}

#[test]
fn reason_codes_table_covers_every_reject() {
    for r in [
        Reject::NotStationary,
        Reject::NotInPark,
        Reject::DoorOpen,
        Reject::HoodOpen,
        Reject::KeyInCabin,
        Reject::EngineRunning,
        Reject::EngineNotRunning,
        Reject::StaleState(SignalKind::Speed),
        Reject::Busy,
    ] {
        assert!(
            REASON_CODES.contains(&r.code()),
            "{} not in the table",
            r.code()
        );
    }
    for code in ["timeout", "interrupted"] {
        assert!(REASON_CODES.contains(&code));
    }
    assert!(!REASON_CODES.contains(&"bogus"));
}

#[test]
fn run_timer_survives_restart_and_stops_the_engine() {
    let mut e = ready(T0);
    drain(&mut e);
    e.submit_request(
        req(
            3,
            Action::EngineStart {
                max_run_secs: Some(60),
            },
        ),
        T0,
    );
    drain(&mut e);
    // Before the confirmation the durable timer already covers the whole possible run.
    assert_eq!(e.run_timer(), None);
    let confirm = ExecConfig::default().confirm_timeout_ms;
    assert_eq!(
        e.durable_run_timer(),
        Some((id(3), T0 + confirm + 60_000)),
        "persisted before the start frame"
    );
    e.on_vehicle_update(VehicleSignal::EngineRunning(true), T0 + 100);
    drain(&mut e);
    assert_eq!(e.durable_run_timer(), e.run_timer());
    let (rid, deadline) = e.run_timer().expect("run timer armed");
    assert_eq!(rid, id(3));
    assert_eq!(deadline, T0 + 100 + 60_000);
    // Restart: a fresh executor re-arms from the persisted timer.
    let mut e2 = ready(T0 + 30_000);
    drain(&mut e2);
    e2.restore_run_timer(rid, deadline);
    assert_eq!(e2.next_timeout(), Some(deadline));
    e2.handle_timeout(deadline);
    let out = drain(&mut e2);
    assert!(actuations(&out).contains(&Actuate::EngineStop), "{out:?}");
}
