//! What a hostile or buggy back end can send: oversize commands, floods of replays, and the
//! session info a client uses to resynchronise (verified by the independent Python COSE
//! implementation). The daemon binary against mosquitto with mTLS, as in main.rs.

use std::time::Duration;

use telematics_it::{CODE, Device, Options, VIN, World};
use telematics_link::topics;
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId};
use telematics_telemetry::ResultState;

use super::{DAEMON, now_s, python};

async fn world() -> World {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    w
}

/// A command envelope from `dev` with the next counter and the given id (not sent).
fn envelope(dev: &mut Device, id: [u8; 16], action: Action) -> Vec<u8> {
    dev.counter += 1;
    let req = CommandRequest {
        command_id: CommandId(id),
        action,
        counter: dev.counter,
        issued_at: now_s(),
        expires_at: now_s() + 60,
        code: CODE.into(),
    };
    build_command(&dev.cred, &req, &ring::rand::SystemRandom::new()).unwrap()
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_commands_are_refused_too_large_once_each_and_the_link_stays_up() {
    let mut w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    let connects = w.mqtt_connects();
    // 12 KB, 64 KB and 1 MB (all above the 4 KiB protocol limit), then 1 000 x 12 KB.
    for (i, len) in [12_000usize, 65_536, 1_000_000].into_iter().enumerate() {
        w.publish_raw(noise(len, i as u8)).await;
    }
    for i in 0..1_000u32 {
        w.publish_raw(noise(12_000, (i % 251) as u8)).await;
    }
    // A valid command behind them executes.
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 60).await;
    assert_eq!(
        rs.last().map(|r| r.state),
        Some(ResultState::Executed),
        "{rs:?}"
    );
    assert_eq!(
        w.mqtt_connects(),
        connects,
        "the link never reconnected; log:\n{}",
        w.log()
    );
    // Stopping closes the aggregate window; each message was counted once, and nothing was
    // redelivered to the restarted daemon (all were acknowledged).
    assert_eq!(w.stop_daemon().await, Some(0));
    w.start_daemon().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.stop_daemon().await, Some(0));
    w.start_daemon().await;
    let counts = w.refusal_counts().await;
    assert_eq!(
        counts.get(&("command".into(), "too_large".into())),
        Some(&1_003),
        "{counts:?}"
    );
    // Unauthenticated refusals publish no result and no audit line per message.
    let lines = w.log().matches("command refused").count();
    assert!(lines < 10, "{lines} per-message log lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_replays_of_one_command_get_at_most_one_resent_result() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    let bytes = envelope(&mut phone, [0x42; 16], Action::Unlock);
    let id = CommandId([0x42; 16]);
    w.publish_raw(bytes.clone()).await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
    let original = w.results_of(id).len();
    let actuations = w.car.lock().await.commands_received();
    for _ in 0..2_000 {
        w.publish_raw(bytes.clone()).await;
    }
    // The next real command is not pushed out of the broker's queue and executes.
    let next = w.send(&mut phone, Action::Lock, CODE).await;
    let rs = w.terminal(next, 60).await;
    assert_eq!(
        rs.last().map(|r| r.state),
        Some(ResultState::Executed),
        "{rs:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replayed = w.results_of(id);
    assert!(
        replayed.len() <= original + 1,
        "{} results for one command id after 2 000 replays",
        replayed.len()
    );
    assert_eq!(
        replayed.last().map(|r| r.state),
        Some(ResultState::Executed),
        "a re-sent result is the original one"
    );
    assert_eq!(
        w.car.lock().await.commands_received(),
        actuations + 1,
        "replays never actuate; the next command does, once"
    );
    // Session info is rate limited too: not one per replay.
    let sessions = w.inbox.lock().unwrap().session.len();
    assert!(sessions <= 2, "{sessions} session infos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_info_after_a_replay_and_on_request_verifies_in_python() {
    let w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    let bytes = envelope(&mut phone, [0x51; 16], Action::Unlock);
    let id = CommandId([0x51; 16]);
    w.publish_raw(bytes.clone()).await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
    // The replay is refused and the client gets an authenticated session info whose echo is
    // the command id of the refused command.
    w.publish_raw(bytes).await;
    let info = w
        .wait_for("session info after a replay", 15, |inbox| {
            inbox.session.first().cloned()
        })
        .await;
    let verify = |info: &[u8]| {
        python(
            "parse_session",
            &serde_json::json!({
                "vin": VIN,
                "key_id": hex::encode(&phone.cred.key_id.0),
                "secret": hex::encode(phone.cred.secret),
                "session_info": hex::encode(info),
            }),
        )
    };
    let fields = verify(&info);
    assert_eq!(fields["last_counter"], phone.counter, "{fields}");
    assert_eq!(fields["echo"], hex::encode([0x51; 16]), "{fields}");
    assert_eq!(fields["lockout"], "none", "{fields}");
    let clock = fields["clock"].as_u64().unwrap();
    assert!(clock.abs_diff(now_s()) < 30, "{fields}");

    // On request: a request built by the Python client (cbor2) with its own challenge.
    tokio::time::sleep(Duration::from_secs(
        telematicsd::security::SESSION_INFO_MIN_INTERVAL_S + 1,
    ))
    .await;
    let req = python(
        "session_request",
        &serde_json::json!({"key_id": hex::encode(&phone.cred.key_id.0), "challenge": "c0ffee00"}),
    );
    let req = hex::decode(req["request"].as_str().unwrap()).unwrap();
    w.publish_to(topics::session_request(VIN), req).await;
    let info = w
        .wait_for("session info on request", 15, |inbox| {
            inbox.session.get(1).cloned()
        })
        .await;
    let fields = verify(&info);
    assert_eq!(fields["echo"], "c0ffee00", "{fields}");

    // A request for an unknown key id and a malformed one get no answer.
    let unknown = python(
        "session_request",
        &serde_json::json!({"key_id": "0011223344556677", "challenge": "01"}),
    );
    w.publish_to(
        topics::session_request(VIN),
        hex::decode(unknown["request"].as_str().unwrap()).unwrap(),
    )
    .await;
    w.publish_to(topics::session_request(VIN), b"garbage".to_vec())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.inbox.lock().unwrap().session.len(), 2);
}
