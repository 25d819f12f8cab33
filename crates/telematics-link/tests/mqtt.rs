//! Integration tests against a REAL mosquitto (require_certificate + pattern ACL), started by
//! the testkit. Needs /usr/sbin/mosquitto (`apt-get install -y mosquitto`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use telematics_link::{
    Incoming, Link, LinkConfig, LinkHandle, LinkState, Presence, Status, TlsFiles, client_config,
    topics,
};
use telematics_store::{OutboxMessage, Priority, Store};
use telematics_testkit::{BrokerOptions, CertFiles, Mosquitto, TestPki, limits};
use tokio::sync::{mpsc, watch};

const VIN: &str = "WBA00000000000001";

fn tls_files(pki: &TestPki, c: &CertFiles) -> TlsFiles {
    TlsFiles {
        cert_chain: c.cert.clone(),
        key: c.key.clone(),
        ca: pki.ca_cert().to_path_buf(),
    }
}

fn link_config(pki: &TestPki, broker: &Mosquitto, c: &CertFiles) -> LinkConfig {
    let mut cfg = LinkConfig::new(VIN, "localhost", broker.port(), tls_files(pki, c));
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(800);
    cfg.keep_alive = Duration::from_secs(5);
    cfg.agent_version = "9.9.9".into();
    cfg.config_version = "cfg-42".into();
    cfg
}

/// A back-end subscriber (own certificate, CN "backend", persistent session) forwarding every
/// publish it receives.
fn backend(
    pki: &TestPki,
    port: u16,
    filters: &[&str],
) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let c = pki.client("backend").unwrap();
    let tls = client_config(&tls_files(pki, &c)).unwrap();
    let mut o = MqttOptions::new("backend", "localhost", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 64);
    let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = client.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for f in &filters {
                        sub.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic, p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, rx)
}

async fn wait_for(
    rx: &mut watch::Receiver<LinkState>,
    what: &str,
    secs: u64,
    pred: impl Fn(&LinkState) -> bool,
) {
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|s| pred(s))).await,
        Ok(Ok(_))
    );
    assert!(
        ok,
        "timed out waiting for {what}; state = {:?}",
        *rx.borrow()
    );
}

fn numbered(i: u32) -> OutboxMessage {
    OutboxMessage::new(
        topics::telemetry(VIN),
        i.to_be_bytes().to_vec(),
        Priority::Telemetry,
    )
}

/// Collects telemetry numbers until `want` distinct ones arrived (or timeout). Returns
/// (distinct set, total received including duplicates).
async fn collect_numbers(
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    want: usize,
    secs: u64,
) -> (BTreeSet<u32>, usize) {
    let mut set = BTreeSet::new();
    let mut total = 0;
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        while set.len() < want {
            let Some((topic, p)) = rx.recv().await else {
                break;
            };
            if topic == topics::telemetry(VIN) {
                let n = u32::from_be_bytes(p.as_slice().try_into().unwrap());
                set.insert(n);
                total += 1;
            }
        }
    })
    .await;
    (set, total)
}

async fn backend_ready(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    // The vehicle's birth message (retained) proves the subscription is active.
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (t, p) = rx.recv().await.unwrap();
            if t == topics::status(VIN) {
                return Status::from_cbor(&p).unwrap();
            }
        }
    })
    .await
    .expect("no status message received by the back end");
    assert_eq!(got.agent_version, "9.9.9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_publishes_telemetry_status_and_receives_commands() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let (link, mut incoming) =
        Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let mut state = link.state();
    wait_for(&mut state, "Connected", 10, |s| *s == LinkState::Connected).await;

    let (backend_client, mut rx) = backend(
        &pki,
        broker.port(),
        &["vehicles/+/telemetry", "vehicles/+/status"],
    );
    // Birth message: retained, online, versions.
    let birth = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (t, p) = rx.recv().await.unwrap();
            if t == topics::status(VIN) {
                return Status::from_cbor(&p).unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(birth.state, Presence::Online);
    assert_eq!(birth.config_version, "cfg-42");

    for i in 0..50 {
        link.publish(&numbered(i)).unwrap();
    }
    let (set, _) = collect_numbers(&mut rx, 50, 15).await;
    assert_eq!(set, (0..50).collect::<BTreeSet<u32>>(), "{}", broker.log());
    // Removed from the outbox only after PUBACK: eventually empty.
    for _ in 0..100 {
        if store.outbox().is_empty().unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.outbox().is_empty().unwrap());

    // A command from the back end reaches the daemon's channel as raw bytes.
    backend_client
        .publish(
            topics::commands(VIN),
            QoS::AtLeastOnce,
            false,
            vec![0xd2, 1, 2],
        )
        .await
        .unwrap();
    let cmd: Incoming = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cmd.topic, topics::commands(VIN));
    assert_eq!(cmd.payload, vec![0xd2, 1, 2]);

    // Graceful shutdown drains the outbox (bounded) and publishes the retained offline status.
    for i in 50..250 {
        link.publish(&numbered(i)).unwrap();
    }
    link.shutdown(Duration::from_secs(10)).await;
    assert!(
        store.outbox().is_empty().unwrap(),
        "graceful shutdown must drain the outbox"
    );
    let (set, _) = collect_numbers(&mut rx, 200, 10).await;
    assert_eq!(set, (50..250).collect::<BTreeSet<u32>>());
    assert_eq!(*link.state().borrow(), LinkState::Stopped);
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (t, p) = rx.recv().await.unwrap();
            if t == topics::status(VIN) {
                return Status::from_cbor(&p).unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(last.state, Presence::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_cert_with_rogue_cert_and_bad_files() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();

    // 1. No client certificate at all (plain rustls client trusting our CA).
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(pki.ca_cert()).unwrap();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls_pki_types::pem::PemObject;
    let no_cert = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut o = MqttOptions::new(VIN, "localhost", broker.port());
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        std::sync::Arc::new(no_cert),
    )));
    let (_c, mut ev) = AsyncClient::new(o, 8);
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap();
    assert!(r.is_err(), "a client without certificate must be refused");

    // 2. Certificate from another CA (same CN).
    let rogue = pki.rogue_client(VIN).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let (link, _rx) = Link::start(link_config(&pki, &broker, &rogue), store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "a refused attempt", 10, |s| {
        matches!(s, LinkState::Disconnected { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(*st.borrow(), LinkState::Connected);
    link.abort().await;

    // 3. Missing / invalid files: refuse to start, the error names the file.
    let good = pki.client(VIN).unwrap();
    let mut cfg = link_config(&pki, &broker, &good);
    cfg.tls.key = dir.path().join("missing.key");
    let e = Link::start(cfg, store.outbox()).unwrap_err();
    assert_eq!(e.code(), "link.tls_file_unreadable");
    assert!(e.to_string().contains("missing.key"), "{e}");
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a pem").unwrap();
    let mut cfg = link_config(&pki, &broker, &good);
    cfg.tls.ca = garbage.clone();
    let e = Link::start(cfg, store.outbox()).unwrap_err();
    assert_eq!(e.code(), "link.tls_file_invalid");
    assert!(e.to_string().contains("garbage.crt"), "{e}");
    // Key that does not match the certificate.
    let other = pki.client(VIN).unwrap();
    let mut cfg = link_config(&pki, &broker, &good);
    cfg.tls.key = other.key.clone();
    assert_eq!(
        Link::start(cfg, store.outbox()).unwrap_err().code(),
        "link.tls_config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_mid_stream_loses_nothing() {
    let pki = TestPki::generate().unwrap();
    let mut broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "Connected", 10, |s| *s == LinkState::Connected).await;
    let (_b, mut rx) = backend(
        &pki,
        broker.port(),
        &["vehicles/+/telemetry", "vehicles/+/status"],
    );
    backend_ready(&mut rx).await;

    // Record the state transitions to prove the outage really interrupted the session.
    let mut watcher = link.state();
    let outage_seen = tokio::spawn(async move {
        let mut disconnected = false;
        while watcher.changed().await.is_ok() {
            let s = watcher.borrow_and_update().clone();
            if matches!(s, LinkState::Disconnected { .. }) {
                disconnected = true;
            }
            if disconnected && s == LinkState::Connected {
                return true;
            }
        }
        false
    });

    const N: u32 = 300;
    for i in 0..N {
        link.publish(&numbered(i)).unwrap();
        if i == 100 {
            // Outage mid-stream (SIGTERM so that mosquitto persists the back end's queue; the
            // vehicle side does not depend on it: unacked messages stay in our outbox).
            broker.stop_graceful();
        }
        if i == 200 {
            broker.restart().unwrap();
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (set, total) = collect_numbers(&mut rx, N as usize, 30).await;
    let reconnected = tokio::time::timeout(Duration::from_secs(5), outage_seen).await;
    assert!(
        matches!(reconnected, Ok(Ok(true))),
        "the link must have seen Disconnected then Connected again"
    );
    let missing: Vec<u32> = (0..N).filter(|i| !set.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages: {missing:?}",
        missing.len()
    );
    assert!(set.iter().all(|n| *n < N));
    eprintln!(
        "received {total} publishes for {N} messages ({} QoS 1 duplicates)",
        total - N as usize
    );
    for _ in 0..100 {
        if store.outbox().is_empty().unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.outbox().is_empty().unwrap());
    link.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_and_restarted_delivers_the_outbox() {
    let pki = TestPki::generate().unwrap();
    let mut broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let (_b, mut rx) = backend(&pki, broker.port(), &["vehicles/+/telemetry"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop_graceful(); // vehicle offline: everything goes to the outbox
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cert = pki.client(VIN).unwrap();
    {
        let store = Store::open(&path).unwrap();
        let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
        for i in 0..40 {
            link.publish(&numbered(i)).unwrap();
        }
        // "kill -9": no graceful shutdown, the link task and the store are just dropped.
        link.abort().await;
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.outbox().len().unwrap(),
        40,
        "outbox intact after the crash"
    );
    broker.restart().unwrap();
    let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let (set, _) = collect_numbers(&mut rx, 40, 20).await;
    assert_eq!(set, (0..40).collect::<BTreeSet<u32>>());
    link.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_mid_stream_while_connected_loses_nothing() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let (_b, mut rx) = backend(
        &pki,
        broker.port(),
        &["vehicles/+/telemetry", "vehicles/+/status"],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cert = pki.client(VIN).unwrap();
    const N: u32 = 200;
    {
        let store = Store::open(&path).unwrap();
        let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
        let mut st = link.state();
        wait_for(&mut st, "Connected", 10, |s| *s == LinkState::Connected).await;
        backend_ready(&mut rx).await;
        for i in 0..N {
            link.publish(&numbered(i)).unwrap();
        }
        // Crash while messages are in flight.
        link.abort().await;
    }
    let store = Store::open(&path).unwrap();
    let left = store.outbox().len().unwrap();
    let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let (set, total) = collect_numbers(&mut rx, N as usize, 20).await;
    assert_eq!(set, (0..N).collect::<BTreeSet<u32>>());
    eprintln!("{left} messages left in the outbox at the crash; {total} publishes received");
    link.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denies_another_vins_topics_and_tls_reload_takes_effect() {
    let pki = TestPki::generate().unwrap();
    let mut broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let (_b, mut rx) = backend(&pki, broker.port(), &["vehicles/#"]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    // The link's files live at fixed paths that rotation overwrites.
    let live = CertFiles {
        cert: dir.path().join("live.crt"),
        key: dir.path().join("live.key"),
    };
    std::fs::copy(&cert.cert, &live.cert).unwrap();
    std::fs::copy(&cert.key, &live.key).unwrap();
    let (link, _in) = Link::start(link_config(&pki, &broker, &live), store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "Connected", 10, |s| *s == LinkState::Connected).await;
    backend_ready(&mut rx).await;

    // Publishing to another vehicle's topic: mosquitto acks (MQTT 3.1.1) but drops it.
    let other = "WBA00000000000002";
    link.publish(&OutboxMessage::new(
        topics::alerts(other),
        b"spoof".to_vec(),
        Priority::Alert,
    ))
    .unwrap();
    link.publish(&numbered(7)).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some((t, _)) = rx.recv().await {
            *seen.entry(t).or_default() += 1;
        }
    })
    .await;
    assert_eq!(seen.get(&topics::telemetry(VIN)), Some(&1), "{seen:?}");
    assert!(
        !seen.contains_key(&topics::alerts(other)),
        "ACL must deny: {seen:?}"
    );

    // Rotation: a broken file is refused and the old config stays.
    std::fs::write(&live.key, "garbage").unwrap();
    assert_eq!(
        link.reload_tls().unwrap_err().code(),
        "link.tls_file_invalid"
    );
    // Rotate to a rogue certificate: the next connection uses it and is refused...
    let rogue = pki.rogue_client(VIN).unwrap();
    std::fs::copy(&rogue.cert, &live.cert).unwrap();
    std::fs::copy(&rogue.key, &live.key).unwrap();
    link.reload_tls().unwrap();
    assert_eq!(
        *st.borrow(),
        LinkState::Connected,
        "reload keeps the current connection"
    );
    broker.restart().unwrap();
    wait_for(
        &mut st,
        "refused after rotation to a rogue cert",
        10,
        |s| matches!(s, LinkState::Disconnected { error, .. } if !error.is_empty()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(*st.borrow(), LinkState::Connected);
    // ...and rotating to a fresh valid certificate reconnects without restarting the link.
    let fresh = pki.client(VIN).unwrap();
    std::fs::copy(&fresh.cert, &live.cert).unwrap();
    std::fs::copy(&fresh.key, &live.key).unwrap();
    link.reload_tls().unwrap();
    wait_for(&mut st, "Connected with the rotated cert", 10, |s| {
        *s == LinkState::Connected
    })
    .await;
    link.abort().await;
}

/// A back-end publisher (CN "backend", clean session) allowed to send packets up to 2 MiB.
fn publisher(pki: &TestPki, port: u16) -> AsyncClient {
    let c = pki.client("backend").unwrap();
    let tls = client_config(&tls_files(pki, &c)).unwrap();
    let mut o = MqttOptions::new("backend-publisher", "localhost", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(2 << 20, 2 << 20);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        loop {
            if ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

/// Command payload number `i` of `len` bytes: the number, then a filler derived from it.
fn command_payload(i: u32, len: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; len];
    v[..4].copy_from_slice(&i.to_be_bytes());
    v
}

fn command_number(m: &Incoming) -> u32 {
    assert_eq!(m.topic, topics::commands(VIN));
    let i = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
    assert!(
        m.payload[4..].iter().all(|b| *b == (i % 251) as u8),
        "payload {i} corrupted"
    );
    i
}

/// Receives `n` commands (or fails after `secs`), returning their numbers in arrival order and
/// checking each payload's length against `sizes`.
async fn receive_commands(
    incoming: &mut mpsc::Receiver<Incoming>,
    sizes: &[usize],
    secs: u64,
) -> Vec<u32> {
    let mut got = Vec::with_capacity(sizes.len());
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        while got.len() < sizes.len() {
            let Some(m) = incoming.recv().await else {
                break;
            };
            let i = command_number(&m);
            assert_eq!(m.payload.len(), sizes[i as usize], "command {i}");
            got.push(i);
        }
    })
    .await;
    got
}

async fn wait_until(what: &str, secs: u64, pred: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>, secs: u64) -> Status {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let (t, p) = rx.recv().await.unwrap();
            if t == topics::status(VIN) {
                return Status::from_cbor(&p).unwrap();
            }
        }
    })
    .await
    .expect("no status message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_subscription_is_reported_retried_and_recovers() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start_with(
        &pki,
        &BrokerOptions {
            backend_users: vec!["backend".into()],
            subscribe_acl: vec![VIN.into()],
        },
    )
    .unwrap();
    // The broker's ACL refuses this vehicle's commands subscription.
    broker.deny_commands_subscription(VIN).unwrap();
    let (backend_client, mut rx) = backend(&pki, broker.port(), &["vehicles/+/status"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let (link, mut incoming) =
        Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "SubscribeRefused", 10, |s| {
        matches!(s, LinkState::SubscribeRefused { .. })
    })
    .await;
    // The retained status says so: the vehicle is connected but does not hear commands.
    let status = status_of(&mut rx, 10).await;
    assert_eq!(status.state, Presence::CommandsRefused, "{status:?}");
    // Telemetry still flows while refused (the outbox drains).
    link.publish(&numbered(1)).unwrap();
    wait_until("outbox drained while refused", 10, || {
        store.outbox().is_empty().unwrap()
    })
    .await;
    // Retried with backoff while connected: refused again, never `Connected`, no reconnect.
    wait_until("a second refusal", 10, || {
        link.stats().subscribe_refusals >= 2
    })
    .await;
    assert!(
        matches!(*st.borrow(), LinkState::SubscribeRefused { attempt, .. } if attempt >= 2),
        "{:?}",
        *st.borrow()
    );
    assert_eq!(link.stats().connects, 1);

    // The operator fixes the ACL. (The dynamic-security plugin disconnects a client whose roles
    // change, so the grant comes on the reconnection or on a retry, whichever is first.)
    broker.allow_commands_subscription(VIN).unwrap();
    wait_for(&mut st, "Connected after the ACL fix", 10, |s| {
        *s == LinkState::Connected
    })
    .await;
    assert!(link.stats().connects <= 2, "{:?}", link.stats());
    let status = status_of(&mut rx, 10).await;
    assert_eq!(status.state, Presence::Online);
    backend_client
        .publish(topics::commands(VIN), QoS::AtLeastOnce, false, vec![7, 7])
        .await
        .unwrap();
    let cmd = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .expect("the command arrives once the subscription is granted")
        .unwrap();
    assert_eq!(cmd.payload, vec![7, 7]);
    link.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commands_and_a_flood_keep_the_link_up_and_arrive_exactly_once() {
    let pki = TestPki::generate().unwrap();
    let mut broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let (link, mut incoming) =
        Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "Connected", 10, |s| *s == LinkState::Connected).await;
    let pubc = publisher(&pki, broker.port());

    // 12 KB, 64 KB and 1 MB (all above rumqttc's 10 KiB default), then a flood of 1 000.
    let mut sizes = vec![12_000, 64_000, 1_000_000];
    for i in 0..1000 {
        sizes.push(match i % 100 {
            99 => 1_000_000,
            k if k % 2 == 0 => 12_000,
            _ => 64_000,
        });
    }
    let n = sizes.len();
    {
        let (pubc, sizes) = (pubc.clone(), sizes.clone());
        tokio::spawn(async move {
            for (i, len) in sizes.iter().enumerate() {
                pubc.publish(
                    topics::commands(VIN),
                    QoS::AtLeastOnce,
                    false,
                    command_payload(i as u32, *len),
                )
                .await
                .unwrap();
            }
        });
    }
    let got = receive_commands(&mut incoming, &sizes, 120).await;
    assert_eq!(got.len(), n, "{}", broker.log());
    assert_eq!(
        got,
        (0..n as u32).collect::<Vec<_>>(),
        "in order, each once"
    );
    let stats = link.stats();
    assert_eq!(stats.connects, 1, "no reconnect: {stats:?}");
    assert_eq!(stats.commands_received, n as u64, "{stats:?}");
    assert_eq!(stats.commands_handed_over, n as u64, "{stats:?}");
    assert_eq!(*st.borrow(), LinkState::Connected);

    // Acknowledged after hand-over: after a reconnect (persistent session) nothing comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop_graceful();
    broker.restart().unwrap();
    wait_until("the reconnection", 15, || link.stats().connects == 2).await;
    wait_for(&mut st, "Connected again", 10, |s| {
        *s == LinkState::Connected
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        incoming.try_recv().is_err(),
        "a command was redelivered after the reconnect"
    );
    assert_eq!(link.stats().commands_received, n as u64);
    link.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_does_not_stop_keep_alives_and_loses_nothing() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let mut cfg = link_config(&pki, &broker, &cert);
    // mosquitto drops a client silent for 1.5 keep-alives (3 s here).
    cfg.keep_alive = Duration::from_secs(2);
    cfg.incoming_capacity = 4;
    let (link, mut incoming) = Link::start(cfg, store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "Connected", 10, |s| *s == LinkState::Connected).await;
    let pubc = publisher(&pki, broker.port());

    // The broker keeps delivering during the stall: 300 commands over ~5 s.
    const N: u32 = 300;
    let sizes = vec![64usize; N as usize];
    tokio::spawn(async move {
        for i in 0..N {
            pubc.publish(
                topics::commands(VIN),
                QoS::AtLeastOnce,
                false,
                command_payload(i, 64),
            )
            .await
            .unwrap();
            if i % 60 == 59 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    // The consumer stalls for 7 s: 3.5 keep-alive intervals.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let stats = link.stats();
    assert_eq!(*st.borrow(), LinkState::Connected);
    assert_eq!(stats.connects, 1, "the link reconnected during the stall");
    assert!(
        stats.commands_received > 4,
        "the broker kept delivering: {stats:?}"
    );
    eprintln!("after the stall: {stats:?}");
    // Received but not handed over: bounded by the broker's inflight window.
    // The broker's flow control (manual acks, `max_inflight_messages`) holds the rest back: the
    // link did not pull the whole flood into memory.
    assert!(
        stats.pending_high_water >= limits::MAX_INFLIGHT_MESSAGES as u64
            && stats.pending_high_water < u64::from(N) / 2,
        "{stats:?}"
    );
    let got = receive_commands(&mut incoming, &sizes, 30).await;
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "everything, in order, once"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(incoming.try_recv().is_err(), "a duplicate arrived");
    assert_eq!(link.stats().connects, 1);
    link.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_under_a_flood_of_1_mb_commands_bounds_the_links_memory() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let mut cfg = link_config(&pki, &broker, &cert);
    cfg.incoming_capacity = 2;
    let (link, mut incoming) = Link::start(cfg, store.outbox()).unwrap();
    let mut st = link.state();
    wait_for(&mut st, "Connected", 10, |s| *s == LinkState::Connected).await;
    let pubc = publisher(&pki, broker.port());
    const N: u32 = 40;
    let sizes = vec![1_000_000usize; N as usize];
    tokio::spawn(async move {
        for i in 0..N {
            pubc.publish(
                topics::commands(VIN),
                QoS::AtLeastOnce,
                false,
                command_payload(i, 1_000_000),
            )
            .await
            .unwrap();
        }
    });
    // Stall for 3 s (keep-alive 5 s): the broker's window (20 x 1 MB) exceeds the link's cap.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = link.stats();
    eprintln!("after the stall: {stats:?}");
    assert!(
        stats.pending_bytes_high_water <= (telematics_link::PENDING_BYTES_CAP + 1_000_000) as u64,
        "{stats:?}"
    );
    let got = receive_commands(&mut incoming, &sizes, 60).await;
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "everything, in order, once"
    );
    assert_eq!(link.stats().connects, 1);
    assert_eq!(*st.borrow(), LinkState::Connected);
    link.abort().await;
}

// Keep the handle type in the public API exercised.
#[allow(dead_code)]
fn _handle_is_clone(h: &LinkHandle) -> LinkHandle {
    h.clone()
}

/// The pinned CA file may hold several CAs (the back end rotating its CA): with the broker's CA
/// second in the file, after another one, the handshake succeeds; with the other CA alone it
/// fails. Shown with `probe`, the renewal's proof connection (client id `{vin}-probe`), which
/// also refuses a client certificate the broker does not trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_ca_file_with_two_cas_and_the_probe_connection() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &[]).unwrap();
    let car = pki.client(VIN).unwrap();
    let cfg = link_config(&pki, &broker, &car);
    let dir = tempfile::tempdir().unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let both = dir.path().join("cas.pem");
    std::fs::write(&both, read(pki.rogue_ca_cert()) + &read(pki.ca_cert())).unwrap();
    let files = |cert: &CertFiles, ca: &std::path::Path| TlsFiles {
        cert_chain: cert.cert.clone(),
        key: cert.key.clone(),
        ca: ca.to_path_buf(),
    };
    let t = Duration::from_secs(5);
    telematics_link::probe(&cfg, &files(&car, &both), None, t)
        .await
        .expect("broker certificate from the second CA of the file is trusted");
    let other = telematics_link::probe(&cfg, &files(&car, pki.rogue_ca_cert()), None, t).await;
    assert_eq!(other.unwrap_err().code(), "link.probe_refused");
    let rogue = pki.rogue_client(VIN).unwrap();
    let refused = telematics_link::probe(&cfg, &files(&rogue, &both), None, t).await;
    assert_eq!(refused.unwrap_err().code(), "link.probe_refused");
    assert!(
        broker.log().contains(&format!("as {VIN}-probe")),
        "{}",
        broker.log()
    );
}

/// Regression (flaky `doctor` e2e test): the daemon watches the state only after the link
/// started, and a local broker can grant the subscription before that. A state set while no
/// receiver exists must still be the state a later watcher sees (it stayed "connecting").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_reached_before_anyone_watches_is_kept() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let (_backend, mut rx) = backend(&pki, broker.port(), &["vehicles/+/status"]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    // The retained `online` goes out right after the granting SUBACK set `Connected`.
    assert_eq!(status_of(&mut rx, 10).await.state, Presence::Online);
    assert_eq!(*link.state().borrow(), LinkState::Connected);
    link.shutdown(Duration::from_secs(1)).await;
    assert_eq!(*link.state().borrow(), LinkState::Stopped);
}

/// A shutdown asked before the link task first ran (nobody subscribed to the shutdown channel
/// yet) still stops it: the current-thread runtime runs the task only once the test awaits.
#[tokio::test]
async fn a_shutdown_before_the_task_first_ran_stops_it() {
    let pki = TestPki::generate().unwrap();
    let broker = Mosquitto::start(&pki, &["backend"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db")).unwrap();
    let cert = pki.client(VIN).unwrap();
    let (link, _in) = Link::start(link_config(&pki, &broker, &cert), store.outbox()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), link.shutdown(Duration::ZERO)).await;
    assert!(stopped.is_ok(), "the link task ignored the shutdown");
    assert_eq!(*link.state().borrow(), LinkState::Stopped);
}
