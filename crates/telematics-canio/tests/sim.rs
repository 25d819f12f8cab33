//! The body-controller loop on a TCP virtual bus, driven by a client like the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use telematics_can::demo::{self, BodyCommand, LockState};
use telematics_can::sim::{BodyController, Outcome, SimEvent};
use telematics_can::{
    CanFrame, Dbc, DecodeOutcome, SignalValue, Timestamp, VehicleState, VssMapping,
};
use telematics_canio::tcpbus::{TcpBusClient, TcpBusHub, TcpBusPort};
use telematics_canio::{
    CanBus, CanIoError, CanSink, CanSource, run_body_controller, run_body_controller_with,
};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const LOCKED_FL: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
const LOCKED_RR: &str = "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked";

async fn next(port: &mut TcpBusPort) -> CanFrame {
    timeout(Duration::from_secs(5), port.recv())
        .await
        .expect("frame in time")
        .expect("bus open")
        .expect("frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_command_over_tcp_is_acked_and_confirmed_by_status() {
    let dbc = Dbc::parse(demo::DEMO_DBC).unwrap();
    let mapping = VssMapping::from_toml(demo::DEMO_VSS_TOML)
        .unwrap()
        .bind(&dbc)
        .unwrap();
    let hub = TcpBusHub::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let car = Arc::new(Mutex::new(BodyController::demo()));
    car.lock().await.car_mut().locks = [LockState::Unlocked; 4];
    let stop = CancellationToken::new();
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let sim = tokio::spawn(run_body_controller_with(
        car.clone(),
        hub.local_node(),
        stop.clone(),
        move |e: &SimEvent| {
            let _ = ev_tx.send(e.clone());
        },
    ));
    let mut daemon = TcpBusClient::connect(hub.local_addr()).await.unwrap();

    // periodic status arrives: unlocked
    let mut state = VehicleState::from_mapping(&mapping);
    let t0 = Instant::now();
    let now = || Timestamp(t0.elapsed().as_millis() as u64);
    while state.get_fresh(LOCKED_FL, now()).is_none() {
        let f = next(&mut daemon).await;
        if let Ok(DecodeOutcome::Decoded(d)) = dbc.decode_frame(&f) {
            state.apply(&mapping, &d, now());
        }
    }
    assert_eq!(
        state.get_fresh(LOCKED_FL, now()),
        Some(&SignalValue::Bool(false))
    );

    // LOCK with counter 3: the ack and the status showing the doors locked follow at once
    let cmd = demo::encode_body_command(&dbc, BodyCommand::Lock, 3).unwrap();
    let sent_at = Instant::now();
    daemon.send(&cmd).await.unwrap();
    let mut ack = None;
    let mut confirmed = None;
    while ack.is_none() || confirmed.is_none() {
        let f = next(&mut daemon).await;
        let Ok(DecodeOutcome::Decoded(d)) = dbc.decode_frame(&f) else {
            continue;
        };
        if d.message.name == demo::COMMAND_ACK {
            ack = Some((
                d.get("AckCounter").and_then(|s| s.raw.as_i64()),
                d.get("AckResult").and_then(|s| s.label).map(str::to_string),
            ));
            continue;
        }
        state.apply(&mapping, &d, now());
        if state.get_fresh(LOCKED_FL, now()) == Some(&SignalValue::Bool(true)) {
            confirmed = Some(sent_at.elapsed());
        }
    }
    assert_eq!(ack, Some((Some(3), Some("OK".to_string()))));
    assert_eq!(
        state.get_fresh(LOCKED_RR, now()),
        Some(&SignalValue::Bool(true))
    );
    let rtt = confirmed.unwrap();
    assert!(
        rtt < Duration::from_millis(100),
        "confirmed within one round trip: {rtt:?}"
    );
    assert!(
        car.lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == LockState::Locked)
    );
    assert_eq!(car.lock().await.commands_received(), 1);
    assert_eq!(
        ev_rx.recv().await,
        Some(SimEvent::Command {
            command: BodyCommand::Lock,
            counter: 3,
            outcome: Outcome::Executed,
        })
    );
    eprintln!("LOCK confirmed over TCP in {rtt:?}");

    // the controller can be changed while it runs: silent stops the periodic frames
    car.lock().await.silent = true;
    tokio::time::sleep(Duration::from_millis(150)).await;
    while timeout(Duration::from_millis(10), daemon.recv())
        .await
        .is_ok()
    {}
    assert!(
        timeout(Duration::from_millis(400), daemon.recv())
            .await
            .is_err(),
        "silent"
    );

    // shutdown: the loop returns Ok
    stop.cancel();
    assert_eq!(sim.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn loop_ends_with_closed_when_the_hub_goes_away() {
    let hub = TcpBusHub::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = hub.local_addr();
    let car = Arc::new(Mutex::new(BodyController::demo()));
    // the controller runs as a client of a hub hosted elsewhere
    let port = TcpBusClient::connect(addr).await.unwrap();
    let sim = tokio::spawn(run_body_controller(car, port, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    hub.shutdown();
    let r = timeout(Duration::from_secs(5), sim).await.unwrap().unwrap();
    assert_eq!(r, Err(CanIoError::Closed));
}

#[tokio::test(start_paused = true)]
async fn in_process_bus_with_virtual_time() {
    let bus = CanBus::new(1024);
    let mut daemon = bus.node();
    let car = Arc::new(Mutex::new(BodyController::demo()));
    car.lock().await.actuation_delay_ms = 500;
    let stop = CancellationToken::new();
    tokio::spawn(run_body_controller(car.clone(), bus.node(), stop.clone()));
    let dbc = Dbc::parse(demo::DEMO_DBC).unwrap();
    // 1 s of virtual time: 11 fast cycles (t = 0..=1000) and 2 slow sets
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() <= Duration::from_millis(1_000) {
        match timeout(Duration::from_millis(1), daemon.recv()).await {
            Ok(r) => {
                r.unwrap().unwrap();
                n += 1;
            }
            Err(_) => continue,
        }
    }
    assert_eq!(n, 11 * 4 + 2 * 2, "frames in the first second");
    // a delayed unlock: acked now, executed 500 ms later
    daemon
        .send(&demo::encode_body_command(&dbc, BodyCommand::Unlock, 1).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(car.lock().await.pending_actuations(), 1);
    assert!(
        car.lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == LockState::Locked)
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(car.lock().await.pending_actuations(), 0);
    assert!(
        car.lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == LockState::Unlocked)
    );
    stop.cancel();
}
