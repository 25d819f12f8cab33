//! End-to-end tests: the real daemon binary, a real mosquitto with mutual TLS and ACLs, the
//! simulated body controller on a TCP virtual CAN bus, and a back end that sends COSE commands.
//! Needs mosquitto (`scripts/install-test-deps.sh`). Fault injection lives in `faults.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod abuse;
mod admin;
mod ctl;
mod devices;
mod doctor;
mod durability;
mod events;
mod faults;
mod renewal;
mod sealing;
mod vehicles;

use std::time::Duration;

use telematics_admin::{Request, Response, Secret};
use telematics_can::demo::{Gear, LockState};
use telematics_it::{CODE, Options, VIN, World};
use telematics_security::Action;
use telematics_telemetry::ResultState;

const DAEMON: &str = env!("CARGO_BIN_EXE_it-telematicsd");

fn states(rs: &[telematics_telemetry::CommandResult]) -> Vec<(ResultState, Option<String>)> {
    rs.iter()
        .map(|r| (r.state, r.reason_code.clone()))
        .collect()
}

async fn world() -> World {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    w
}

/// Lets the car's new state reach the daemon (status frames every 100 ms).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_then_lock_are_executed_and_confirmed_on_the_bus() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    assert!(
        w.car
            .lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == LockState::Locked),
        "demo car starts locked"
    );
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Accepted, None), (ResultState::Executed, None)]
    );
    assert!(
        w.car
            .lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l != LockState::Locked)
    );
    let id = w.send(&mut phone, Action::Lock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(rs.last().map(|r| r.state), Some(ResultState::Executed));
    assert!(
        w.car
            .lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == LockState::Locked)
    );
    // Telemetry flows too: the lock change is published on change.
    w.wait_for("lock state telemetry", 10, |inbox| {
        inbox
            .telemetry
            .iter()
            .any(|t| {
                t.signals
                    .contains_key("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_start_runs_until_the_run_timer_stops_the_engine() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    let id = w
        .send(
            &mut phone,
            Action::EngineStart {
                max_run_secs: Some(2),
            },
            CODE,
        )
        .await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.last().map(|r| r.state),
        Some(ResultState::Executed),
        "{rs:?}"
    );
    assert!(w.car.lock().await.car().engine_running, "engine started");
    // Nobody touches the car: the daemon stops it after 2 s.
    let t0 = std::time::Instant::now();
    loop {
        if !w.car.lock().await.car().engine_running {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "engine still running after 8 s; log:\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ran = t0.elapsed();
    assert!(
        ran >= Duration::from_millis(1_000),
        "stopped too early: {ran:?}"
    );
    assert!(w.log().contains("AutoStop"), "run end logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_start_then_driver_takes_over_keeps_the_engine_running() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    let id = w
        .send(
            &mut phone,
            Action::EngineStart {
                max_run_secs: Some(2),
            },
            CODE,
        )
        .await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
    {
        let mut car = w.car.lock().await;
        car.car_mut().key_in_cabin = true;
        car.car_mut().gear = Gear::D;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        w.car.lock().await.car().engine_running,
        "driver took over: no auto-stop; log:\n{}",
        w.log()
    );
    assert!(w.log().contains("DriverTakeover"));
}

/// Every precondition refusal, each with its stable reason code; nothing is actuated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_precondition_refusal_has_its_reason_code() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    type Setup = fn(&mut telematics_can::demo::CarState);
    let cases: Vec<(&str, Action, Setup)> = vec![
        ("not_stationary", Action::Unlock, |c| c.speed_kmh = 25.0),
        (
            "not_stationary",
            Action::EngineStart { max_run_secs: None },
            |c| c.speed_kmh = 8.0,
        ),
        (
            "not_in_park",
            Action::EngineStart { max_run_secs: None },
            |c| c.gear = Gear::N,
        ),
        (
            "door_open",
            Action::EngineStart { max_run_secs: None },
            |c| c.doors_open[1] = true,
        ),
        (
            "hood_open",
            Action::EngineStart { max_run_secs: None },
            |c| c.hood_open = true,
        ),
        (
            "key_in_cabin",
            Action::EngineStart { max_run_secs: None },
            |c| c.key_in_cabin = true,
        ),
        ("door_open", Action::Lock, |c| c.doors_open[3] = true),
        ("engine_not_running", Action::EngineStop, |_| {}),
        (
            "engine_running",
            Action::EngineStart { max_run_secs: None },
            |c| {
                c.engine_running = true;
            },
        ),
    ];
    for (code, action, setup) in cases {
        let before = w.car.lock().await.commands_received();
        {
            let mut car = w.car.lock().await;
            *car.car_mut() = telematics_can::demo::CarState::default();
            setup(car.car_mut());
        }
        settle().await;
        let id = w.send(&mut phone, action.clone(), CODE).await;
        let rs = w.terminal(id, 15).await;
        assert_eq!(
            states(&rs),
            vec![(ResultState::Rejected, Some(code.to_string()))],
            "{action:?}"
        );
        assert_eq!(
            w.car.lock().await.commands_received(),
            before,
            "{code}: nothing may reach the body controller"
        );
    }
    // Stale state: the bus goes silent, the state ages out, commands are refused.
    w.car.lock().await.silent = true;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Rejected, Some("stale_state".into()))]
    );
    // Unlock's first check reads the speed: the detail is exactly the path the daemon reads.
    assert_eq!(rs[0].detail.as_deref(), Some("Vehicle.Speed"), "{rs:?}");
    // Body controller alive but not actuating: accepted, then failed(timeout).
    {
        let mut car = w.car.lock().await;
        car.silent = false;
        car.ignore_commands = true;
    }
    settle().await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![
            (ResultState::Accepted, None),
            (ResultState::Failed, Some("timeout".into()))
        ]
    );
    // A refusal by the body controller with its code: tests/it/vehicles.rs (both vehicles).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_lock_out_and_recovery_restores_access() {
    // Eight digits: a 4-digit code can occur by chance in the hex ids and hashes of the log.
    const NEW_CODE: &str = "86420975";
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    // Threshold 3: the third wrong code starts a 30 s back-off.
    for i in 1..=3 {
        let id = w.send(&mut phone, Action::Unlock, "9999").await;
        let rs = w.terminal(id, 15).await;
        assert_eq!(
            states(&rs),
            vec![(ResultState::Rejected, Some("wrong_code".into()))]
        );
        if i == 3 {
            assert_eq!(rs[0].retry_after_s, Some(30), "{rs:?}");
            assert_eq!(rs[0].detail, None, "the wait is a number, not text: {rs:?}");
        }
    }
    // Even the right code is refused during the back-off, without a code check.
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Rejected, Some("locked_out".into()))]
    );
    assert!(
        rs[0].retry_after_s.is_some_and(|s| (1..=30).contains(&s)),
        "{rs:?}"
    );
    assert!(
        w.car
            .lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == LockState::Locked)
    );
    // The back end is alerted.
    w.wait_for("lockout alert", 10, |inbox| {
        inbox
            .alerts
            .iter()
            .any(|a| a.kind == "security_lockout")
            .then_some(())
    })
    .await;
    match w.admin(Request::Lockout).await {
        Response::Lockout {
            failures,
            locked_until,
        } => {
            assert_eq!(failures, 3);
            assert!(locked_until.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Customer service signs a reset authorization; the owner confirms in the car.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let auth = telematics_security::client::sign_reset(
        &w.backend_key,
        VIN,
        now,
        now + 3600,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    // Arm with the authorization, then confirm the new code in the car; the authorization
    // cannot be used twice afterwards.
    let r = w
        .admin(Request::ArmRecovery {
            authorization: auth.clone(),
        })
        .await;
    assert!(matches!(r, Response::RecoveryArmed { .. }), "{r:?}");
    let r = w
        .admin(Request::ConfirmRecovery {
            new_code: Secret(NEW_CODE.into()),
        })
        .await;
    assert_eq!(r, Response::Done, "recovery");
    let r = w
        .admin(Request::ArmRecovery {
            authorization: auth,
        })
        .await;
    assert!(
        matches!(r, Response::Error { ref code, .. } if code == "security.nonce_reused"),
        "{r:?}"
    );
    // Old credentials are void (no result: the vehicle cannot authenticate the command).
    let id = w.send(&mut phone, Action::Unlock, NEW_CODE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.results_of(id).is_empty());
    let audit = match w.admin(Request::Audit { limit: 50 }).await {
        Response::Audit { events } => events,
        other => panic!("{other:?}"),
    };
    assert!(
        audit.iter().any(|e| e.detail.contains("fault=revoked_key")),
        "{audit:?}"
    );
    assert!(audit.iter().any(|e| e.kind == "recovery.completed"));
    assert!(
        audit
            .iter()
            .all(|e| !e.detail.contains(NEW_CODE) && !e.detail.contains(CODE)),
        "no codes in the audit trail"
    );
    // Re-pair with the new code: access is back.
    let mut phone2 = w.pair("phone", NEW_CODE).await;
    let id = w.send(&mut phone2, Action::Unlock, NEW_CODE).await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
    assert!(
        !w.log().contains(NEW_CODE),
        "the code never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_commands_are_refused_and_never_reexecuted() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
    let after_first = w.car.lock().await.commands_received();
    // A captured command with an old counter but a fresh id: refused `replay`.
    let old = phone.counter;
    let id2 = w.send_with(&phone, Action::Lock, CODE, old, 0).await;
    let rs = w.terminal(id2, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Rejected, Some("replay".into()))]
    );
    // An expired command (issued 10 minutes ago).
    phone.counter += 1;
    let id3 = w
        .send_with(&phone, Action::Lock, CODE, phone.counter, 600)
        .await;
    let rs = w.terminal(id3, 15).await;
    assert_eq!(
        states(&rs),
        vec![(ResultState::Rejected, Some("expired".into()))]
    );
    assert_eq!(w.car.lock().await.commands_received(), after_first);
    assert!(
        w.car
            .lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l != LockState::Locked)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_identical_redelivery_gets_the_original_result_not_a_second_actuation() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    phone.counter += 1;
    let bytes = {
        let req = telematics_security::client::CommandRequest {
            command_id: telematics_security::CommandId([7; 16]),
            action: Action::Unlock,
            counter: phone.counter,
            issued_at: now_s(),
            expires_at: now_s() + 60,
            code: CODE.into(),
        };
        telematics_security::client::build_command(
            &phone.cred,
            &req,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
    };
    let id = telematics_security::CommandId([7; 16]);
    w.publish_raw(bytes.clone()).await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
    let n = w.car.lock().await.commands_received();
    w.publish_raw(bytes).await;
    w.wait_for("re-published result", 15, |inbox| {
        (inbox
            .results
            .iter()
            .filter(|r| r.command_id == id.0)
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    let rs = w.results_of(id);
    assert_eq!(
        rs.last().map(|r| r.state),
        Some(ResultState::Executed),
        "{rs:?}"
    );
    assert_eq!(
        w.car.lock().await.commands_received(),
        n,
        "not actuated twice"
    );
}

const INTEROP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/telematics-security/tests/interop/interop.py"
);

/// Runs the independent Python implementation (pycose + cbor2) in `mode` on `req`.
pub(crate) fn python(mode: &str, req: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([INTEROP, mode])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-test-deps.sh installs pycose and cbor2)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_command_reports_interrupted_and_never_reexecutes() {
    let mut w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    // The body controller swallows the command: the daemon waits for confirmation...
    w.car.lock().await.ignore_commands = true;
    settle().await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    w.wait_for("accepted", 15, |inbox| {
        inbox
            .results
            .iter()
            .any(|r| r.command_id == id.0 && r.state == ResultState::Accepted)
            .then_some(())
    })
    .await;
    // ...and is killed mid-command.
    w.kill9();
    let received = w.car.lock().await.commands_received();
    w.car.lock().await.ignore_commands = false;
    w.start_daemon().await;
    let rs = w.terminal(id, 15).await;
    // The crash may come before the broker's PUBACK of `accepted` reached the outbox: QoS 1
    // then re-sends it after the restart (at-least-once; duplicates, never loss).
    let mut seen = states(&rs);
    seen.dedup();
    assert_eq!(
        seen,
        vec![
            (ResultState::Accepted, None),
            (ResultState::Failed, Some("interrupted".into()))
        ]
    );
    settle().await;
    assert_eq!(
        w.car.lock().await.commands_received(),
        received,
        "never re-executed"
    );
    // The counter was persisted before the crash: the same counter is a replay now.
    let id2 = w
        .send_with(&phone, Action::Unlock, CODE, phone.counter, 0)
        .await;
    assert_eq!(
        states(&w.terminal(id2, 15).await),
        vec![(ResultState::Rejected, Some("replay".into()))]
    );
    // Graceful stop exits 0.
    assert_eq!(w.stop_daemon().await, Some(0));
}
