//! Paired devices from the owner's side (issue 16): the retained device list, remote
//! revocation signed by the back end (with telematicsctl, and with the independent Python
//! pycose client), revocation by another paired device (`revoke_device`, code required), and
//! every refusal. The daemon binary against mosquitto with mTLS, as in main.rs.

use std::time::Duration;

use clap::Parser;
use telematics_it::{CODE, Device, Options, VIN, World};
use telematics_link::topics;
use telematics_security::Action;
use telematics_security::client::sign_revocation;
use telematics_telemetry::{DeviceList, DeviceStatus, ResultState, SignalValue};

use super::{DAEMON, now_s, python};

async fn world() -> World {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    w
}

fn kid(d: &Device) -> Vec<u8> {
    d.cred.key_id.0.clone()
}

/// Runs telematicsctl in-process with the back end's broker connection; returns its exit code.
async fn ctl(w: &World, args: &[&str]) -> u8 {
    let c = w.pki.client("backend").unwrap();
    let port = w.broker.port().to_string();
    let mut argv: Vec<String> = ["telematicsctl"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    for (k, v) in [
        ("--host", "localhost".to_string()),
        ("--port", port),
        ("--ca", w.pki.ca_cert().display().to_string()),
        ("--cert", c.cert.display().to_string()),
        ("--key", c.key.display().to_string()),
    ] {
        argv.push(k.into());
        argv.push(v);
    }
    let cli = telematicsctl::cli::Cli::try_parse_from(argv).unwrap();
    telematicsctl::cli::run(cli).await.unwrap()
}

fn conn(w: &World) -> telematicsctl::MqttConn {
    let c = w.pki.client("backend").unwrap();
    telematicsctl::MqttConn {
        host: "localhost".into(),
        port: w.broker.port(),
        tls: telematics_link::TlsFiles {
            cert_chain: c.cert.clone(),
            key: c.key.clone(),
            ca: w.pki.ca_cert().to_path_buf(),
        },
    }
}

/// Waits until the latest published list satisfies `pred`.
async fn list_where(w: &World, what: &str, pred: impl Fn(&DeviceList) -> bool) -> DeviceList {
    w.wait_for(what, 15, |inbox| {
        inbox.devices.last().filter(|l| pred(l)).cloned()
    })
    .await
}

fn status_of(l: &DeviceList, d: &Device) -> Option<DeviceStatus> {
    l.device(&kid(d)).map(|e| e.status)
}

fn active(l: &DeviceList, d: &Device) -> bool {
    status_of(l, d) == Some(DeviceStatus::Active)
}

fn revoked(l: &DeviceList, d: &Device) -> bool {
    matches!(status_of(l, d), Some(DeviceStatus::Revoked { .. }))
}

/// A command of `dev` changes the car's state and is executed.
async fn works(w: &World, dev: &mut Device) {
    let action = w.next_lock_action().await;
    let id = w.send(dev, action, CODE).await;
    let last = w.terminal(id, 15).await.last().map(|r| r.state);
    assert_eq!(last, Some(ResultState::Executed), "{}", w.log());
    tokio::time::sleep(Duration::from_millis(400)).await;
}

/// A command of a revoked `dev` is answered as any revoked key's: no result, and one more
/// `revoked_key` refusal in the audit trail (counted once the aggregate window closes or the
/// first of its window is recorded on its own).
async fn refused_revoked(w: &World, dev: &mut Device) {
    let id = w.send(dev, w.next_lock_action().await, CODE).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.results_of(id).is_empty(), "no result for a revoked key");
    let counts = w.refusal_counts().await;
    assert!(
        counts.get(&("command".into(), "revoked_key".into())) >= Some(&1),
        "{counts:?}"
    );
}

async fn revoked_alert_for(w: &World, dev: &Device) {
    let want = SignalValue::Text(hex::encode(kid(dev)));
    w.wait_for("a security_device_revoked alert", 15, |inbox| {
        inbox
            .alerts
            .iter()
            .any(|a| a.kind == "security_device_revoked" && a.value.as_ref() == Some(&want))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phones_one_revoked_by_the_back_end_with_telematicsctl_one_by_another_phone() {
    let w = world().await;
    let mut a = w.pair("phone-a", CODE).await;
    let mut b = w.pair("phone-b", CODE).await;
    // The list shows both, as telematicsctl reads it from the broker (the retained list).
    let list = telematicsctl::devices::fetch_devices(&conn(&w), VIN, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a device list");
    assert_eq!(list.devices.len(), 2, "{list:?}");
    assert!(active(&list, &a) && active(&list, &b), "{list:?}");
    assert_eq!(list.device(&kid(&a)).unwrap().name, "phone-a");
    assert_eq!(
        ctl(&w, &["devices", "--remote", "--vin", VIN, "--json"]).await,
        0
    );
    // A command of A shows up as its "last command" time.
    works(&w, &mut a).await;
    list_where(&w, "A's last command time", |l| {
        l.device(&kid(&a))
            .is_some_and(|d| d.last_command_at.is_some())
    })
    .await;

    // The back end revokes A with telematicsctl (signed with the back-end key).
    let key = w.backend_key_path.display().to_string();
    let a_id = hex::encode(kid(&a));
    let code = ctl(
        &w,
        &[
            "revoke-device",
            &a_id,
            "--remote",
            "--vin",
            VIN,
            "--backend-key",
            &key,
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "revoked; log:\n{}", w.log());
    revoked_alert_for(&w, &a).await;
    list_where(&w, "A revoked, B active", |l| {
        revoked(l, &a) && active(l, &b)
    })
    .await;
    refused_revoked(&w, &mut a).await;
    works(&w, &mut b).await;

    // Another phone revokes B with an ordinary authenticated command (code required).
    let mut c = w.pair("phone-c", CODE).await;
    let target = b.cred.key_id.clone();
    let id = w
        .send(&mut c, Action::RevokeDevice { key_id: target }, CODE)
        .await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(rs.last().map(|r| r.state), Some(ResultState::Executed));
    revoked_alert_for(&w, &b).await;
    let l = list_where(&w, "B revoked, C active", |l| {
        revoked(l, &b) && active(l, &c)
    })
    .await;
    assert!(revoked(&l, &a), "{l:?}");
    refused_revoked(&w, &mut b).await;
    works(&w, &mut c).await;
    let Ok(telematics_admin::Response::Audit { events }) = telematics_admin::call(
        &w.admin_socket,
        &telematics_admin::Request::Audit { limit: 512 },
    )
    .await
    else {
        panic!("audit");
    };
    let revocations: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "device.revoked")
        .map(|e| e.detail.clone())
        .collect();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    assert!(revocations[0].contains("by=backend"), "{revocations:?}");
    assert!(revocations[1].contains(&format!("by=device:{}", hex::encode(kid(&c)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_refusal_is_coded_audited_and_changes_nothing() {
    let w = world().await;
    let mut a = w.pair("phone-a", CODE).await;
    let b = w.pair("phone-b", CODE).await;
    let mut c = w.pair("phone-c", CODE).await;
    let now = now_s();
    let sign = |vin: &str, kid: &[u8], iat: u64, exp: u64| {
        sign_revocation(
            &w.backend_key,
            vin,
            kid,
            iat,
            exp,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
    };
    let send = |bytes: Vec<u8>| w.publish_to(topics::devices_revoke(VIN), bytes);
    let outcome_for = |code: &'static str| {
        w.wait_for(code, 15, move |inbox| {
            inbox
                .revocations
                .iter()
                .find(|o| o.refused.as_deref() == Some(code))
                .cloned()
        })
    };
    // Unknown key id, another VIN, an expired window: authentic, so answered with the code.
    send(sign(VIN, &[9; 8], now, now + 600)).await;
    assert_eq!(outcome_for("unknown_key").await.key_id, vec![9; 8]);
    send(sign("WBA3A5C51CF256985", &kid(&b), now, now + 600)).await;
    outcome_for("wrong_vin").await;
    send(sign(VIN, &kid(&b), now - 900, now - 300)).await;
    outcome_for("expired").await;
    // Signed by someone else: no answer (anyone could provoke one), audited.
    let forger = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let forged = sign_revocation(
        &forger,
        VIN,
        &kid(&b),
        now,
        now + 600,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    send(forged).await;
    // A good one, then its replay after use.
    let good = sign(VIN, &kid(&b), now, now + 600);
    send(good.clone()).await;
    w.wait_for("revoked", 15, |inbox| {
        inbox
            .revocations
            .iter()
            .find(|o| o.refused.is_none())
            .cloned()
    })
    .await;
    send(good).await;
    outcome_for("nonce_reused").await;
    // Only the good one answered "revoked"; the forged one nothing at all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.inbox.lock().unwrap().revocations.len(), 5);

    // From a device: a wrong code revokes nothing; an unknown target is refused.
    let target = c.cred.key_id.clone();
    let id = w
        .send(&mut a, Action::RevokeDevice { key_id: target }, "9753")
        .await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.last().and_then(|r| r.reason_code.clone()).as_deref(),
        Some("wrong_code")
    );
    let unknown = telematics_security::KeyId(vec![9; 8]);
    let id = w
        .send(&mut a, Action::RevokeDevice { key_id: unknown }, CODE)
        .await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.last().map(|r| (r.state, r.reason_code.clone())),
        Some((ResultState::Rejected, Some("unknown_key".into())))
    );
    // Every refusal audited with its code; only B was revoked.
    let counts = w.refusal_counts().await;
    for fault in [
        "unknown_key",
        "wrong_vin",
        "expired",
        "bad_signature",
        "nonce_reused",
    ] {
        assert_eq!(
            counts.get(&("revocation".into(), fault.into())),
            Some(&1),
            "{fault}: {counts:?}"
        );
    }
    // On request, the list comes again: A and C active, B revoked.
    let seen = w.inbox.lock().unwrap().devices.len();
    w.publish_to(topics::devices_request(VIN), Vec::new()).await;
    let l = w
        .wait_for("a requested list", 15, |inbox| {
            inbox.devices.get(seen).cloned()
        })
        .await;
    assert!(active(&l, &a) && active(&l, &c) && revoked(&l, &b), "{l:?}");
    works(&w, &mut a).await;
    works(&w, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_built_by_the_python_pycose_client_is_accepted_and_not_replayable() {
    let w = world().await;
    let mut a = w.pair("phone-a", CODE).await;
    let mut b = w.pair("phone-b", CODE).await;
    let now = now_s();
    let nonce = hex::encode(now.to_be_bytes()) + "a1b2c3d4e5f60718";
    let r = python(
        "sign_revocation",
        &serde_json::json!({"vin": VIN, "seed": hex::encode(w.backend_seed), "nonce": nonce,
                "issued_at": now, "expires_at": now + 600, "key_id": hex::encode(kid(&a))}),
    );
    let sign1 = hex::decode(r["sign1"].as_str().unwrap()).unwrap();
    w.publish_to(topics::devices_revoke(VIN), sign1.clone())
        .await;
    let o = w
        .wait_for("the outcome", 15, |inbox| {
            inbox.revocations.first().cloned()
        })
        .await;
    assert_eq!(o.refused, None, "{o:?}\n{}", w.log());
    assert_eq!(hex::encode(&o.nonce), nonce);
    list_where(&w, "A revoked", |l| revoked(l, &a) && active(l, &b)).await;
    refused_revoked(&w, &mut a).await;
    works(&w, &mut b).await;
    // Replayed after use: refused.
    w.publish_to(topics::devices_revoke(VIN), sign1).await;
    let o = w
        .wait_for("the replay's outcome", 15, |inbox| {
            inbox.revocations.get(1).cloned()
        })
        .await;
    assert_eq!(o.refused.as_deref(), Some("nonce_reused"));
}

/// Durability before effect for a remote revocation: a verified revocation whose security
/// state cannot be written stops the daemon with `store.write_failed` (as a command does),
/// and is not in force after the restart (the back end got no `revoked` outcome and resends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_cannot_be_persisted_stops_the_daemon() {
    use telematicsd::failpoint::{WRITE_ENV_VAR, Write};
    let mut w = world().await;
    let mut phone = w.pair("phone", CODE).await;
    assert_eq!(w.stop_daemon().await, Some(0));
    w.start_daemon_with(|c| {
        c.env(WRITE_ENV_VAR, Write::SecurityState.name());
    })
    .await;
    let now = now_s();
    let rev = sign_revocation(
        &w.backend_key,
        VIN,
        &kid(&phone),
        now,
        now + 600,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    w.publish_to(topics::devices_revoke(VIN), rev).await;
    let st = w
        .wait_daemon_exit(20)
        .await
        .unwrap_or_else(|| panic!("daemon did not stop; log:\n{}", w.log()));
    let log = w.log();
    assert_eq!(st.code(), Some(1), "exit 1; log:\n{log}");
    assert!(log.contains("error[store.write_failed]"), "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
    // Restarted without the fault: the revocation was never durable, the phone still works.
    w.start_daemon().await;
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    assert_eq!(
        w.terminal(id, 15).await.last().map(|r| r.state),
        Some(ResultState::Executed)
    );
}
