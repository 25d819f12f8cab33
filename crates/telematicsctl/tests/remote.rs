//! Remote commands and `watch` against a REAL mosquitto (mTLS, require_certificate, pattern
//! ACL) with a minimal vehicle responder that runs the real `telematics_security::Verifier`.
//! Needs /usr/sbin/mosquitto (scripts/install-test-deps.sh).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use telematics_link::{TlsFiles, client_config, topics};
use telematics_security::{
    Action, Config, ExportedCredential, Fault, RetryAfter, SecurityState, Verifier,
};
use telematics_telemetry::{CommandResult, ResultState, SignalValue, Telemetry, TelemetryKind};
use telematics_testkit::{Mosquitto, TestPki};
use telematicsctl::watch::{WatchSpec, WatchTopic, watch};
use telematicsctl::{CommandOutcome, CommandSpec, MqttConn, counter, send_command};
use tokio::sync::oneshot;

const VIN: &str = "WBA3A5C51CF256985";
const CODE: &str = "2580";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn cfg() -> Config {
    Config {
        pbkdf2_iterations: 1000,
        min_pbkdf2_iterations: 1000,
        ..Config::default()
    }
}

struct Env {
    pki: TestPki,
    broker: Mosquitto,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let pki = TestPki::generate().unwrap();
        let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
        Env {
            pki,
            broker,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The back end's connection (certificate CN "backend").
    fn conn(&self) -> MqttConn {
        let c = self.pki.client("backend").unwrap();
        MqttConn {
            host: "localhost".into(),
            port: self.broker.port(),
            tls: TlsFiles {
                cert_chain: c.cert,
                key: c.key,
                ca: self.pki.ca_cert().to_path_buf(),
            },
        }
    }

    /// A paired vehicle state and the credential file of one device.
    fn paired(&self) -> (SecurityState, ExportedCredential, PathBuf) {
        let rng = SystemRandom::new();
        let mut state = SecurityState::default();
        let proof = state
            .set_initial_code(&cfg(), CODE, &rng, now() - 1000)
            .unwrap();
        let cred = state
            .add_device(proof, VIN, "phone", &rng, now() - 900)
            .unwrap();
        let file = self.dir.path().join("phone.cred");
        std::fs::write(&file, cred.to_text() + "\n").unwrap();
        (state, cred, file)
    }
}

/// A minimal vehicle: certificate CN = VIN, subscribes to its commands, runs the two-phase
/// verifier and publishes `accepted` + `executed` or `rejected(<fault>)`. Faults before the
/// AEAD opened (no authenticated command id) publish nothing, like the daemon.
struct Vehicle {
    client: AsyncClient,
    state: Arc<Mutex<SecurityState>>,
}

async fn start_vehicle(env: &Env, state: SecurityState) -> Vehicle {
    let c = env.pki.client(VIN).unwrap();
    let tls = client_config(&TlsFiles {
        cert_chain: c.cert,
        key: c.key,
        ca: env.pki.ca_cert().to_path_buf(),
    })
    .unwrap();
    let mut o = MqttOptions::new(VIN, "localhost", env.broker.port());
    o.set_clean_session(true);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 64);
    client
        .subscribe(topics::commands(VIN), QoS::AtLeastOnce)
        .await
        .unwrap();
    let state = Arc::new(Mutex::new(state));
    let (ready_tx, ready_rx) = oneshot::channel();
    let (st, pubc) = (state.clone(), client.clone());
    tokio::spawn(async move {
        let verifier = Verifier::new(cfg(), VIN).unwrap();
        let mut ready = Some(ready_tx);
        loop {
            let p = match ev.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => p,
                Ok(_) => continue,
                Err(_) => return,
            };
            let mut results = Vec::new();
            {
                let mut state = st.lock().unwrap();
                let t = now();
                match verifier.begin(&mut state, &p.payload, t) {
                    Err(rej) => {
                        if let Some(id) = rej.audit.command_id {
                            results.push((
                                id.0,
                                ResultState::Rejected,
                                Some(rej.fault),
                                rej.retry_after,
                            ));
                        }
                    }
                    Ok(pending) => {
                        let f = pending.finish(&mut state, t);
                        match f.result {
                            Ok(cmd) => {
                                let id = cmd.command_id().0;
                                results.push((id, ResultState::Accepted, None, None));
                                results.push((id, ResultState::Executed, None, None));
                            }
                            Err(fault) => {
                                let id = f.audit.command_id.unwrap().0;
                                results.push((id, ResultState::Rejected, Some(fault), None));
                            }
                        }
                    }
                }
            }
            for (command_id, state, fault, retry_after) in results {
                // As the daemon answers a wait: a number, or `until_recovery` in `detail`.
                let r = CommandResult {
                    command_id,
                    state,
                    reason_code: fault.map(|f: Fault| f.code().to_string()),
                    detail: matches!(retry_after, Some(RetryAfter::UntilRecovery))
                        .then(|| "until_recovery".to_string()),
                    at: now() * 1000,
                    retry_after_s: match retry_after {
                        Some(RetryAfter::Seconds(s)) => Some(s),
                        _ => None,
                    },
                };
                pubc.publish(
                    topics::results(VIN),
                    QoS::AtLeastOnce,
                    false,
                    r.encode().unwrap(),
                )
                .await
                .unwrap();
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("vehicle subscription")
        .unwrap();
    Vehicle { client, state }
}

impl Vehicle {
    fn last_counter(&self) -> u64 {
        let s = self.state.lock().unwrap();
        s.credentials[0].last_counter
    }
}

fn spec(action: Action, code: &str, timeout_s: u64) -> CommandSpec {
    CommandSpec {
        action,
        code: code.into(),
        ttl_s: 60,
        timeout: Duration::from_secs(timeout_s),
    }
}

async fn send(
    env: &Env,
    cred: &ExportedCredential,
    file: &Path,
    spec: &CommandSpec,
) -> (CommandOutcome, Vec<String>) {
    let mut lines = Vec::new();
    let (outcome, _sent) =
        send_command(&env.conn(), cred, &counter::counter_path(file), spec, |r| {
            lines.push(telematicsctl::remote::format_result(r))
        })
        .await
        .unwrap();
    (outcome, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_executes_wrong_code_is_rejected_and_the_counter_survives() {
    let env = Env::new();
    let (state, cred, file) = env.paired();
    let vehicle = start_vehicle(&env, state).await;
    let counter_file = counter::counter_path(&file);

    let (o, lines) = send(&env, &cred, &file, &spec(Action::Lock, CODE, 20)).await;
    assert_eq!(o, CommandOutcome::Executed, "{}", env.broker.log());
    assert_eq!(o.exit_code(), 0);
    assert_eq!(lines, ["accepted", "executed"]);
    assert_eq!(std::fs::read_to_string(&counter_file).unwrap(), "1\n");
    assert_eq!(vehicle.last_counter(), 1);

    let (o, lines) = send(&env, &cred, &file, &spec(Action::Unlock, "9731", 20)).await;
    assert_eq!(
        o,
        CommandOutcome::Rejected {
            reason: "wrong_code".into(),
            detail: None,
            retry_after_s: None,
        }
    );
    assert_eq!(o.exit_code(), 3);
    assert_eq!(lines, ["rejected: wrong_code"]);
    assert_eq!(
        counter::read(&counter_file).unwrap(),
        2,
        "spent even when rejected"
    );
    assert_eq!(vehicle.last_counter(), 2);

    let start = Action::EngineStart {
        max_run_secs: Some(120),
    };
    let (o, _) = send(&env, &cred, &file, &spec(start, CODE, 20)).await;
    assert_eq!(o, CommandOutcome::Executed);
    assert_eq!(counter::read(&counter_file).unwrap(), 3);

    // The counter survives a restart of the tool (it is only a file) ...
    assert_eq!(std::fs::read_to_string(&counter_file).unwrap(), "3\n");
    // ... and losing it makes the vehicle refuse a reused counter (replay), proving that
    // counters really are checked and that the file is what prevents reuse.
    std::fs::remove_file(&counter_file).unwrap();
    let (o, lines) = send(&env, &cred, &file, &spec(Action::Horn, CODE, 20)).await;
    assert_eq!(o.exit_code(), 3);
    assert_eq!(lines, ["rejected: replay"]);
    assert_eq!(vehicle.last_counter(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_result_shows_the_wait() {
    let env = Env::new();
    let (state, cred, file) = env.paired();
    let _vehicle = start_vehicle(&env, state).await;
    // Default threshold 3: the third wrong code locks; the next attempt is locked_out.
    for _ in 0..3 {
        let (o, _) = send(&env, &cred, &file, &spec(Action::Lock, "9731", 20)).await;
        assert_eq!(o.exit_code(), 3);
    }
    let (o, lines) = send(&env, &cred, &file, &spec(Action::Lock, CODE, 20)).await;
    let CommandOutcome::Rejected {
        reason,
        detail,
        retry_after_s,
    } = &o
    else {
        panic!("{o:?}")
    };
    assert_eq!(reason, "locked_out");
    assert!(retry_after_s.is_some_and(|s| s > 0), "{o:?}");
    assert_eq!(*detail, None, "the wait is a number, not text");
    assert!(
        lines[0].starts_with("rejected: locked_out (retry in ") && lines[0].ends_with(" s)"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_result_is_a_timeout_offline_or_unknown_credential() {
    let env = Env::new();
    let (state, cred, file) = env.paired();
    // Nobody is connected for this VIN.
    let t0 = std::time::Instant::now();
    let (o, lines) = send(&env, &cred, &file, &spec(Action::Lock, CODE, 2)).await;
    assert_eq!(
        o,
        CommandOutcome::Timeout {
            published: true,
            accepted: false
        }
    );
    assert_eq!(o.exit_code(), 5);
    assert!(lines.is_empty());
    assert!(t0.elapsed() >= Duration::from_secs(2) && t0.elapsed() < Duration::from_secs(8));
    assert_eq!(
        telematicsctl::remote::timeout_message(&o, Duration::from_secs(2)).unwrap(),
        "no result within 2 s (vehicle offline, or credential unknown/revoked)"
    );
    assert_eq!(counter::read(&counter::counter_path(&file)).unwrap(), 1);

    // The vehicle is online but the credential was revoked: it cannot authenticate the command
    // id, so it stays silent too.
    let mut state = state;
    state.revoke_device(&cred.key_id.0, now()).unwrap();
    let _vehicle = start_vehicle(&env, state).await;
    let (o, lines) = send(&env, &cred, &file, &spec(Action::Lock, CODE, 2)).await;
    assert_eq!(o.exit_code(), 5, "{o:?}");
    assert!(lines.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_decoded_telemetry_and_survives_garbage() {
    let env = Env::new();
    let (state, _cred, _file) = env.paired();
    let vehicle = start_vehicle(&env, state).await;
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let conn = env.conn();
    let watcher = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut ready = Some(ready_tx);
        let spec = WatchSpec {
            vin: VIN.into(),
            topics: vec![WatchTopic::Telemetry, WatchTopic::Alerts],
            count: Some(3),
            json: false,
        };
        watch(
            &conn,
            &spec,
            || {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            },
            |l| lines.push(l.to_string()),
        )
        .await
        .map(|()| lines)
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("watch subscribed")
        .unwrap();
    let mut signals = BTreeMap::new();
    signals.insert("Vehicle.Speed".to_string(), SignalValue::Float(12.5));
    signals.insert(
        "Vehicle.Cabin.Door.IsLocked".into(),
        SignalValue::Bool(false),
    );
    let t = Telemetry {
        kind: TelemetryKind::Snapshot,
        vin: VIN.into(),
        seq: 41,
        at: 1_700_000_000_000,
        signals,
        stale: vec!["Vehicle.Powertrain.FuelSystem.Level".into()],
    };
    let mut delta = t.clone();
    delta.kind = TelemetryKind::Delta;
    delta.seq = 42;
    delta.stale.clear();
    delta.signals.remove("Vehicle.Speed");
    for payload in [
        t.encode().unwrap(),
        b"garbage".to_vec(),
        delta.encode().unwrap(),
    ] {
        vehicle
            .client
            .publish(topics::telemetry(VIN), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let lines = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("watch ended after 3 messages")
        .unwrap()
        .unwrap();
    assert_eq!(
        lines,
        [
            "telemetry snapshot seq=41 at=2023-11-14T22:13:20.000Z Vehicle.Cabin.Door.IsLocked=false \
             Vehicle.Speed=12.5 stale=[Vehicle.Powertrain.FuelSystem.Level]"
                .to_string(),
            format!("{}: undecodable (telemetry_decode)", topics::telemetry(VIN)),
            "telemetry delta seq=42 at=2023-11-14T22:13:20.000Z Vehicle.Cabin.Door.IsLocked=false".to_string(),
        ]
    );
}

/// The real binary: code from stdin, TLS options from the environment, exit codes 0 / 3 / 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_binary_exit_codes() {
    let env = Env::new();
    let (state, _cred, file) = env.paired();
    let _vehicle = start_vehicle(&env, state).await;
    let conn = env.conn();
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_telematicsctl"))
            .args(args)
            .env("TELEMATICSCTL_HOST", &conn.host)
            .env("TELEMATICSCTL_PORT", conn.port.to_string())
            .env("TELEMATICSCTL_CA", &conn.tls.ca)
            .env("TELEMATICSCTL_CERT", &conn.tls.cert_chain)
            .env("TELEMATICSCTL_KEY", &conn.tls.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        // The tool may exit before reading stdin (usage / credential errors): ignore EPIPE.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let cred = file.to_str().unwrap().to_string();
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(&["lock", "-c", &cred, "--code-stdin"], &format!("{CODE}\n"))
    });
    assert_eq!((code, out.as_str()), (0, "accepted\nexecuted\n"), "{err}");
    let (code, out, err) =
        tokio::task::block_in_place(|| run(&["flash", "-c", &cred, "--code-stdin"], "9731\n"));
    assert_eq!((code, out.as_str()), (3, "rejected: wrong_code\n"), "{err}");
    assert!(
        !err.contains("9731") && !out.contains("9731"),
        "code never echoed"
    );
    let (code, _, err) = tokio::task::block_in_place(|| run(&["lock"], ""));
    assert_eq!(code, 2, "{err}");
    // A bogus credential is an error (1) and spends no counter.
    let bogus = env.dir.path().join("bogus.cred");
    std::fs::write(&bogus, "TMDC1:AAAA\n").unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| {
        run(
            &["lock", "-c", bogus.to_str().unwrap(), "--code-stdin"],
            "2580\n",
        )
    });
    assert_eq!(code, 1, "{err}");
    assert!(!counter::counter_path(&bogus).exists());
    assert_eq!(counter::read(&counter::counter_path(&file)).unwrap(), 2);
}
