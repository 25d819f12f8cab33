//! The same end-to-end scenarios for both vehicles of issue 12, the daemon binary against
//! mosquitto and the simulated body controller: the demo car (one bus, XOR-checked commands)
//! and test car B from its data files alone (two buses `[[can.bus]]` body and powertrain, one
//! TCP hub each, Motorola signals, E2E profile 1 commands checked by the simulator, an ack
//! with refusal codes). Lock, unlock and engine start are confirmed on the bus; a refusal by
//! the body controller arrives as `failed(refused_by_vehicle)` with its reason; a message whose
//! last frame is older than its max age by its own timestamp (the receive time on the TCP bus)
//! refuses `stale_state`, while a frame its sender stamped long ago but that just arrived is
//! fresh.

use std::time::Duration;

use telematics_can::demo::{CarState, LockState};
use telematics_canio::CanSource;
use telematics_it::{CODE, Options, Vehicle, World};
use telematics_security::Action;
use telematics_telemetry::ResultState;

use super::{DAEMON, settle, states};

/// Car B's engine command (`TcuEngCmd`, 0x6E0), sent on the powertrain bus.
const CAR_B_ENGINE_COMMAND: u32 = 0x6E0;

async fn world_of(vehicle: Vehicle) -> World {
    let opts = Options {
        vehicle,
        ..Options::default()
    };
    let mut w = World::new(opts, DAEMON.as_ref()).await;
    w.start_daemon().await;
    w
}

/// Sends `action` and asserts it was accepted, then executed (the confirmation seen on the
/// bus), by valid command frames only (every one passed its protection at the simulator).
async fn executed(w: &World, phone: &mut telematics_it::Device, action: Action, v: Vehicle) {
    let before = w.car.lock().await.commands_received();
    let id = w.send(phone, action.clone(), CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Accepted, None), (ResultState::Executed, None)],
        "{v:?} {action:?}: {rs:?}"
    );
    let car = w.car.lock().await;
    assert!(car.commands_received() > before, "{v:?} {action:?}");
    assert_eq!(car.invalid_commands(), 0, "{v:?} {action:?}");
}

async fn scenarios(v: Vehicle) {
    let w = world_of(v).await;
    let mut phone = w.pair("phone", CODE).await;
    let locked = |c: &CarState| c.locks.iter().all(|l| *l == LockState::Locked);

    // Unlock, lock, engine start: executed and confirmed on the bus.
    assert!(locked(w.car.lock().await.car()), "{v:?} starts locked");
    executed(&w, &mut phone, Action::Unlock, v).await;
    assert!(!locked(w.car.lock().await.car()), "{v:?}");
    executed(&w, &mut phone, Action::Lock, v).await;
    assert!(locked(w.car.lock().await.car()), "{v:?}");
    let mut powertrain = w.bus_node_of("powertrain");
    executed(
        &w,
        &mut phone,
        Action::EngineStart { max_run_secs: None },
        v,
    )
    .await;
    assert!(w.car.lock().await.car().engine_running, "{v:?}");
    if v == Vehicle::CarB {
        // The action names its bus: the engine command went out on the powertrain bus.
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match powertrain.recv().await {
                    Ok(Some(f)) if f.id == CAR_B_ENGINE_COMMAND => return true,
                    Ok(Some(_)) => {}
                    _ => return false,
                }
            }
        })
        .await;
        assert_eq!(seen, Ok(true), "engine command on the powertrain bus");
    }
    drop(powertrain);

    // The body controller refuses with its code: failed(refused_by_vehicle) with the
    // profile's reason for that code, not a timeout.
    {
        let mut car = w.car.lock().await;
        *car.car_mut() = CarState::default();
        let code = car.refusal_code("low_battery").expect("a low_battery code");
        car.refuse(Some(("engine_start", code)));
    }
    settle().await;
    let id = w
        .send(&mut phone, Action::EngineStart { max_run_secs: None }, CODE)
        .await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![
            (ResultState::Accepted, None),
            (ResultState::Failed, Some("refused_by_vehicle".into()))
        ],
        "{v:?}"
    );
    assert_eq!(rs[1].detail.as_deref(), Some("low_battery"), "{v:?} {rs:?}");
    assert!(!w.car.lock().await.car().engine_running, "{v:?}");
    w.car.lock().await.refuse(None);

    // The message carrying Vehicle.Speed goes silent while every other status message keeps
    // its cycle, on the bus each belongs on: the speed's last frame, by its own (receive)
    // timestamp, is older than its max age: stale_state naming it. The frames of the silent
    // message are found as the ones that change with the speed.
    let (status, speed_ids) = {
        let mut car = w.car.lock().await;
        car.silent = true;
        let frames = car.status_frames().expect("status frames");
        car.car_mut().speed_kmh += 7.0;
        let moved = car.status_frames().expect("status frames");
        car.car_mut().speed_kmh -= 7.0;
        let speed_ids: Vec<u32> = frames
            .iter()
            .zip(&moved)
            .filter(|(a, b)| a.data != b.data)
            .map(|(a, _)| a.id)
            .collect();
        let status = frames
            .into_iter()
            .map(|f| (car.bus_of(&f).unwrap_or("body").to_string(), f))
            .collect::<Vec<_>>();
        (status, speed_ids)
    };
    assert!(
        !speed_ids.is_empty(),
        "{v:?}: a status frame carries the speed"
    );
    assert!(
        speed_ids.len() < status.len(),
        "{v:?}: other status messages keep their cycle"
    );
    let nodes = [
        ("body", w.bus_node_of("body")),
        ("powertrain", w.bus_node_of("powertrain")),
    ];
    let sender = |bus: &str| {
        let (_, node) = nodes.iter().find(|(n, _)| *n == bus).unwrap_or(&nodes[0]);
        node.sender()
    };
    // Every status frame but the speed's (or all, each stamped `stamp_us` by its sender),
    // every 100 ms for 3 s.
    let feed = |with_speed: bool, stamp_us: Option<u64>| {
        let frames: Vec<_> = status
            .iter()
            .filter(|(_, f)| with_speed || !speed_ids.contains(&f.id))
            .map(|(bus, f)| (sender(bus), f.clone()))
            .collect();
        tokio::spawn(async move {
            for _ in 0..30 {
                for (sender, f) in &frames {
                    let mut f = f.clone();
                    f.timestamp_us = stamp_us;
                    sender.send_frame(&f).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let without_speed = feed(false, None);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Rejected, Some("stale_state".into()))],
        "{v:?} {rs:?}"
    );
    assert_eq!(
        rs[0].detail.as_deref(),
        Some("Vehicle.Speed"),
        "{v:?} {rs:?}"
    );
    without_speed.abort();
    // A frame stamped by its sender years ago is fresh: its age is its receive time (the TCP
    // bus's rule, as the kernel's on SocketCAN), so the speed is back.
    let recent = feed(true, Some(1_000_000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.first().map(|r| r.state),
        Some(ResultState::Accepted),
        "{v:?} {rs:?}"
    );
    recent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_car_lock_unlock_start_refusal_and_stale_state() {
    scenarios(Vehicle::Demo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn car_b_on_two_buses_lock_unlock_start_refusal_and_stale_state() {
    scenarios(Vehicle::CarB).await;
}

/// The demo profile with AUTOSAR SecOC on unlock (the frame's last 4 bytes: 8 freshness bits
/// and a 24-bit MAC; no XOR checksum or counter signal there).
fn secured_demo_profile() -> String {
    let p = telematics_can::demo::demo_profile_with_secoc_unlock();
    assert_ne!(p, telematics_can::demo::DEMO_PROFILE_TOML);
    p
}

/// SecOC end to end: the daemon binary authenticates its unlock frames with the key of
/// `[can] secoc_key` (a 0600 file), the simulated body controller verifies MAC and freshness
/// with the same key; after a kill -9 the freshness continues (the car, which keeps its last
/// accepted value, accepts the next unlock); a key file others can read refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secoc_unlock_end_to_end_and_its_freshness_across_a_kill_9() {
    use std::os::unix::fs::PermissionsExt;
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    let profile = secured_demo_profile();
    std::fs::write(w.dir.path().join("profile.toml"), &profile).unwrap();
    let key_file = w.dir.path().join("secoc.key");
    std::fs::write(&key_file, "2b7e151628aed2a6abf7158809cf4f3c\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    w.edit_config(|c| {
        c.replacen(
            "max_age_ms = 2000",
            &format!("max_age_ms = 2000\nsecoc_key = {{ file = {key_file:?} }}"),
            1,
        )
    });
    // The body controller of the same profile, verifying with the same key.
    {
        let (model, _) = telematicsd::vehicle::VehicleModel::from_text(
            telematics_can::demo::DEMO_DBC,
            telematics_can::demo::DEMO_VSS_TOML,
            &profile,
            false,
            2_000,
        )
        .unwrap();
        let mut car = telematics_can::sim::BodyController::new(
            telematics_can::Dbc::parse(telematics_can::demo::DEMO_DBC).unwrap(),
            CarState::default(),
            model.profile().sim_profile().unwrap(),
        )
        .unwrap();
        car.set_secoc_key(
            telematics_can::protection::SecOcKey::from_file_bytes(
                &std::fs::read(&key_file).unwrap(),
            )
            .unwrap(),
        );
        *w.car.lock().await = car;
    }
    w.start_daemon().await;
    let mut phone = w.pair("phone", CODE).await;
    let v = Vehicle::Demo;
    executed(&w, &mut phone, Action::Unlock, v).await;
    executed(&w, &mut phone, Action::Lock, v).await;
    assert_eq!(
        w.car.lock().await.secoc_freshness("TCU_BodyCommand"),
        Some(0)
    );
    w.kill9();
    w.start_daemon().await;
    executed(&w, &mut phone, Action::Unlock, v).await;
    {
        let car = w.car.lock().await;
        assert_eq!(car.secoc_freshness("TCU_BodyCommand"), Some(1), "continued");
        assert_eq!(car.invalid_commands(), 0);
    }
    w.stop_daemon().await;
    // Readable by others: refused at start, naming the key.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.spawn_daemon_with(|_| {});
    let st = w.wait_daemon_exit(20).await.expect("refuses to start");
    assert!(!st.success(), "{st}");
    assert!(w.log().contains("can.secoc_key"), "{}", w.log());
}
