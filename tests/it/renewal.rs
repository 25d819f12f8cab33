//! Certificate lifecycle against the real daemon and mosquitto (issue 13): in-band renewal
//! signed by `telematicsctl ca`, refusals of wrong certificates with their codes, kill -9 at
//! every renewal step, and the expiry alert under a shifted clock (libfaketime).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use telematics_it::{Options, VIN, World};
use telematics_link::{TlsFiles, client_config, topics};
use telematics_telemetry::{RenewalOutcome, SignalValue};

use crate::DAEMON;

const CTL: &str = env!("CARGO_BIN_EXE_it-telematicsctl");

/// What the back end sees on `vehicles/{VIN}/identity/#`.
#[derive(Default)]
struct Seen {
    csrs: Vec<Vec<u8>>,
    outcomes: Vec<RenewalOutcome>,
}

/// A back-end client subscribed to the vehicle's identity topics.
async fn identity_observer(w: &World) -> (AsyncClient, Arc<Mutex<Seen>>) {
    let c = w.pki.client("backend").unwrap();
    let tls = client_config(&TlsFiles {
        cert_chain: c.cert,
        key: c.key,
        ca: w.pki.ca_cert().to_path_buf(),
    })
    .unwrap();
    let mut o = MqttOptions::new("backend-identity", "localhost", w.broker.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 64);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (sub, s) = (client.clone(), seen.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    sub.subscribe(format!("vehicles/{VIN}/identity/#"), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut s = s.lock().unwrap();
                    if p.topic == topics::identity_csr(VIN) && !p.payload.is_empty() {
                        s.csrs.push(p.payload.to_vec());
                    } else if p.topic == topics::identity_outcome(VIN)
                        && let Ok(o) = RenewalOutcome::decode(&p.payload)
                    {
                        s.outcomes.push(o);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    (client, seen)
}

async fn wait_until<T>(what: &str, w: &World, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; daemon log:\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A world whose vehicle certificate has `days` left, renewal window 30 days, warning 14 days,
/// CSR re-published every `retry_s`.
async fn short_lived_world(days: i64, extra: &str) -> World {
    let w = World::new(Options::default(), DAEMON.as_ref()).await;
    let short = w.pki.client_valid_for(VIN, days).unwrap();
    w.edit_config(|t| {
        let mut out = String::new();
        for line in t.lines() {
            if line.starts_with("cert = ") {
                out.push_str(&format!("cert = {:?}\n", short.cert));
            } else if line.starts_with("key = ") {
                out.push_str(&format!("key = {:?}\n", short.key));
            } else if line.starts_with("keepalive_s") {
                out.push_str(&format!("{line}\n{extra}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    w
}

fn backend_mqtt_args(w: &World) -> Vec<String> {
    let b = w.pki.client("backend").unwrap();
    [
        "--host".to_string(),
        "localhost".into(),
        "--port".into(),
        w.broker.port().to_string(),
        "--ca".into(),
        w.pki.ca_cert().display().to_string(),
        "--cert".into(),
        b.cert.display().to_string(),
        "--key".into(),
        b.key.display().to_string(),
    ]
    .into()
}

/// `telematicsctl ca respond` for the test VIN, signing with the test CA.
fn responder(w: &World, days: u32) -> Child {
    Command::new(CTL)
        .args(["ca", "respond", "--vin", VIN, "--days", &days.to_string()])
        .arg("--ca-cert")
        .arg(w.pki.ca_cert())
        .arg("--ca-key")
        .arg(w.pki.ca_key())
        .args(backend_mqtt_args(w))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn telematicsctl ca respond")
}

/// `telematicsctl ca sign-csr` of `csr` with the given CA; returns the certificate PEM.
fn sign(w: &World, csr: &[u8], ca_cert: &std::path::Path, ca_key: &std::path::Path) -> Vec<u8> {
    let dir = w.dir.path();
    let (csr_file, out) = (dir.join("req.csr"), dir.join("signed.crt"));
    std::fs::write(&csr_file, csr).unwrap();
    let _ = std::fs::remove_file(&out);
    let st = Command::new(CTL)
        .args(["ca", "sign-csr", "--days", "365"])
        .arg("--ca-cert")
        .arg(ca_cert)
        .arg("--ca-key")
        .arg(ca_key)
        .arg("--csr")
        .arg(&csr_file)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "sign-csr failed");
    std::fs::read(&out).unwrap()
}

async fn certificate_line(w: &World) -> String {
    w.status_components()
        .await
        .into_iter()
        .find(|(n, _)| n == "certificate")
        .map(|(_, v)| v)
        .expect("certificate component")
}

/// `key=value` of the certificate line (empty if absent, e.g. before the first check).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_default()
}

/// Renewal end to end: three wrong answers refused with their codes, then the certificate
/// `telematicsctl ca respond` signs is proven and committed; the daemon is on it (status,
/// probe in the broker log, restart without the old files), and no telemetry was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_end_to_end_refuses_wrong_answers_and_switches_without_loss() {
    let t0 = Instant::now();
    let mut w = short_lived_world(10, "cert_renew_before_days = 30\nrenewal_retry_s = 2").await;
    let (backend, seen) = identity_observer(&w).await;
    w.start_daemon().await;
    let before = certificate_line(&w).await;
    assert_eq!(field(&before, "generation"), "0", "{before}");
    assert!(
        ["9", "10"].contains(&field(&before, "days_left")),
        "{before}"
    );
    let csr = wait_until("the CSR", &w, 15, || {
        seen.lock().unwrap().csrs.first().cloned()
    })
    .await;
    assert!(csr.starts_with(b"-----BEGIN CERTIFICATE REQUEST-----"));

    // Three wrong answers: another key, another VIN (the vehicle's new key, CN changed), another CA.
    let other_key = std::fs::read(&w.pki.client(VIN).unwrap().cert).unwrap();
    let new_key =
        std::fs::read_to_string(w.dir.path().join("state/identity/gen-1/key.pem")).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "1FTFW1ET5DFC10312");
    let other_vin_csr = p
        .serialize_request(&rcgen::KeyPair::from_pem(&new_key).unwrap())
        .unwrap()
        .pem()
        .unwrap();
    let other_vin = sign(
        &w,
        other_vin_csr.as_bytes(),
        w.pki.ca_cert(),
        w.pki.ca_key(),
    );
    let other_ca = sign(&w, &csr, w.pki.rogue_ca_cert(), w.pki.rogue_ca_key());
    let wrong = [
        (other_key, "identity.key_mismatch"),
        (other_vin, "identity.vin_mismatch"),
        (other_ca, "identity.untrusted"),
    ];
    for (i, (pem, code)) in wrong.into_iter().enumerate() {
        backend
            .publish(
                topics::identity_certificate(VIN),
                QoS::AtLeastOnce,
                false,
                pem,
            )
            .await
            .unwrap();
        let got = wait_until(code, &w, 10, || {
            seen.lock()
                .unwrap()
                .outcomes
                .get(i)
                .map(|o| o.refused.clone())
        })
        .await;
        assert_eq!(got.as_deref(), Some(code));
    }
    assert_eq!(
        field(&certificate_line(&w).await, "generation"),
        "0",
        "nothing committed"
    );
    assert!(
        w.log().contains("identity.key_mismatch"),
        "refusals are logged"
    );

    // The right answer, from the responder (it gets the retained CSR).
    let telemetry_before = w.inbox.lock().unwrap().telemetry.len();
    let mut resp = responder(&w, 365);
    let renewed = wait_until("the renewal", &w, 20, || {
        seen.lock()
            .unwrap()
            .outcomes
            .iter()
            .find(|o| o.refused.is_none())
            .cloned()
    })
    .await;
    assert_eq!(renewed.generation, 1);
    let alert = w
        .wait_for("certificate_renewed", 10, |i| {
            i.alerts
                .iter()
                .find(|a| a.kind == "certificate_renewed")
                .cloned()
        })
        .await;
    assert_eq!(alert.value, renewed.serial.clone().map(SignalValue::Text));
    let after = wait_until("the status of generation 1", &w, 10, || {
        let line = futures_lite_block(certificate_line(&w));
        (field(&line, "generation") == "1").then_some(line)
    })
    .await;
    assert_eq!(
        Some(field(&after, "serial")),
        renewed.serial.as_deref(),
        "{after}"
    );
    assert_ne!(field(&after, "sha256"), field(&before, "sha256"));
    assert!(
        ["364", "365"].contains(&field(&after, "days_left")),
        "{after}"
    );
    assert!(
        w.broker.log().contains(&format!("as {VIN}-probe")),
        "the probe connection reached the broker"
    );
    // The link reconnected on the new certificate: its `online` status (through the broker)
    // names the new serial, and the earlier ones the old.
    let serial = renewed.serial.clone().unwrap();
    online_with(&w, "the new certificate", &serial).await;
    let first = telematics_link::Status::from_cbor(&w.inbox.lock().unwrap().status[0]).unwrap();
    assert_eq!(
        first.cert_serial,
        field(&before, "serial"),
        "first status: old certificate"
    );
    // The link reconnected with the new identity and telemetry kept flowing without a gap.
    w.wait_for("telemetry after the switch", 15, |i| {
        (i.telemetry.len() >= telemetry_before + 3).then_some(())
    })
    .await;
    let seqs: Vec<u64> = w
        .inbox
        .lock()
        .unwrap()
        .telemetry
        .iter()
        .map(|t| t.seq)
        .collect();
    let (lo, hi) = (seqs[0], *seqs.iter().max().unwrap());
    for s in lo..=hi {
        assert!(
            seqs.contains(&s),
            "telemetry seq {s} lost across the switch: {seqs:?}"
        );
    }
    let _ = resp.kill();
    let _ = resp.wait();

    // The old identity is no longer needed: without its files, the daemon still connects.
    w.stop_daemon().await;
    for line in std::fs::read_to_string(&w.config_path).unwrap().lines() {
        if let Some(p) = line
            .strip_prefix("cert = ")
            .or_else(|| line.strip_prefix("key = "))
        {
            std::fs::remove_file(p.trim_matches('"')).unwrap();
        }
    }
    w.start_daemon().await;
    assert_eq!(field(&certificate_line(&w).await, "generation"), "1");
    eprintln!(
        "[renewal] end to end: {:.1} s; 3 refusals, generation 1 serial {}",
        t0.elapsed().as_secs_f64(),
        renewed.serial.unwrap_or_default()
    );
}

/// With a sealing key (here a systemd credential, outside the state directory), the key of a
/// renewal is sealed in the state directory: a copy of it holds no private key in any form,
/// the daemon restarts on the renewed identity, and without the credential it refuses to start
/// rather than fall back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_key_is_sealed_with_the_sealing_key() {
    use crate::sealing::{SEAL_CRED, all_bytes, contains, copy_dir, state_dir};
    let mut w = short_lived_world(10, "cert_renew_before_days = 30\nrenewal_retry_s = 1").await;
    let creds = w.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    telematics_keystore::write_new_seal_key(&creds.join(SEAL_CRED)).unwrap();
    w.edit_config(|c| format!("{c}[keys]\nseal_key = {{ credential = \"{SEAL_CRED}\" }}\n"));
    let with_creds = |c: &mut Command| {
        c.env("CREDENTIALS_DIRECTORY", &creds);
    };
    w.start_daemon_with(with_creds).await;
    let mut resp = responder(&w, 365);
    let line = wait_until("the renewal", &w, 30, || {
        let line = futures_lite_block(certificate_line(&w));
        (field(&line, "generation") == "1" && line.ends_with("renewal=idle")).then_some(line)
    })
    .await;
    let serial = field(&line, "serial").to_string();
    let _ = resp.kill();
    let _ = resp.wait();
    online_with(&w, "the renewed certificate", &serial).await;
    w.stop_daemon().await;

    let key = std::fs::read(state_dir(&w).join("identity/gen-1/key.pem")).unwrap();
    assert!(
        telematics_keystore::is_sealed(&key),
        "the renewed key is sealed"
    );
    let copy = copy_dir(&state_dir(&w));
    let dump = all_bytes(copy.path());
    for needle in [&b"PRIVATE KEY"[..], b"BEGIN EC PRIVATE", b"BEGIN ENCRYPTED"] {
        assert!(
            !contains(&dump, needle),
            "{} in the copy of the state directory",
            String::from_utf8_lossy(needle)
        );
    }
    // The renewed key's own bytes: the certificate's public key is in the copy (cert.pem is
    // public), but no PKCS#8 key structure (the P-256 OID inside a private-key info) beside it.
    let p256_pkcs8_prefix = [0x30u8, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13];
    assert!(!contains(&dump, &p256_pkcs8_prefix), "no DER PKCS#8 key");

    // Restart on it: the sealed key signs the handshake.
    w.start_daemon_with(with_creds).await;
    assert_eq!(field(&certificate_line(&w).await, "generation"), "1");
    w.stop_daemon().await;
    // Without the sealing key it does not start (and does not fall back to the factory key).
    w.spawn_daemon_with(|_| {});
    let st = w.wait_daemon_exit(20).await.expect("refuses to start");
    assert!(!st.success(), "{st}");
    assert!(w.log().contains("keys.seal_key_missing"), "{}", w.log());
}

/// Waits until the daemon's retained status (through the broker) says `online` with the
/// certificate `serial`.
async fn online_with(w: &World, what: &str, serial: &str) {
    w.wait_for(&format!("online with {what}"), 10, |i| {
        i.status.iter().find_map(|b| {
            let st = telematics_link::Status::from_cbor(b)?;
            (st.state == telematics_link::Presence::Online && st.cert_serial == serial)
                .then_some(())
        })
    })
    .await;
}

/// Blocks on a short admin call from a synchronous predicate.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// kill -9 (failpoint abort) at every renewal step; after each, the daemon starts, connects
/// and completes the renewal (resumed or restarted), and the generation only moves forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_renewal_step_leaves_a_working_identity() {
    let t0 = Instant::now();
    // Certificates of 10 days: every start opens the renewal window again.
    let mut w = short_lived_world(10, "cert_renew_before_days = 30\nrenewal_retry_s = 1").await;
    let mut resp = responder(&w, 10);
    let mut generation = 0u64;
    for point in telematicsd::failpoint::RENEWAL_POINTS {
        w.spawn_daemon_with(|c| {
            c.env("TELEMATICSD_FAILPOINT", point);
        });
        let st = w.wait_daemon_exit(30).await;
        assert!(
            st.is_some_and(|s| !s.success()),
            "daemon did not abort at {point}; log:\n{}",
            w.log()
        );
        assert!(
            w.log().contains(&format!("failpoint {point} hit")),
            "aborted elsewhere than {point}; log:\n{}",
            w.log()
        );
        // Restart without the failpoint: it connects (start_daemon waits for `online`).
        w.start_daemon().await;
        let line = wait_until(point, &w, 20, || {
            let line = futures_lite_block(certificate_line(&w));
            let g: u64 = field(&line, "generation").parse().ok()?;
            (g > generation && line.ends_with("renewal=idle")).then_some(g)
        })
        .await;
        generation = line;
        w.stop_daemon().await;
    }
    let _ = resp.kill();
    let _ = resp.wait();
    eprintln!(
        "[renewal] kill -9 at {} steps: {:.1} s; generation {generation}",
        telematicsd::failpoint::RENEWAL_POINTS.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// The expiry alert with a shifted clock: a certificate valid for 365 days, the daemon's clock
/// 351 days ahead (libfaketime): `certificate_expiring` with the days left, and the status says
/// so; no renewal yet (window 7 days).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_alert_under_a_shifted_clock() {
    telematics_it::faketime_lib();
    let mut w = short_lived_world(365, "cert_renew_before_days = 7\ncert_warn_days = 30").await;
    let rc = w.dir.path().join("faketime.rc");
    std::fs::write(&rc, "+351d\n").unwrap();
    w.start_daemon_with(move |c| telematics_it::faketime_from_file(c, &rc))
        .await;
    let alert = w
        .wait_for("certificate_expiring", 15, |i| {
            i.alerts
                .iter()
                .find(|a| a.kind == "certificate_expiring")
                .cloned()
        })
        .await;
    let Some(SignalValue::Int(days)) = alert.value else {
        panic!("{alert:?}")
    };
    assert!((13..=14).contains(&days), "{alert:?}");
    let line = certificate_line(&w).await;
    assert_eq!(field(&line, "days_left"), days.to_string(), "{line}");
    assert!(line.ends_with("renewal=idle"), "{line}");
    assert!(w.log().contains("identity.expiring"));
}

/// Renewal with the identity key in a SoftHSM2 token: the new key is generated in the token
/// (no key file in the generation directory), the probe signs with it, and it is promoted once
/// the commit record names the generation. A kill -9 between the commit and the promotion is
/// finished at the next start (the link then connects with the token key on the renewed
/// certificate), and a second renewal switches the live link to the promoted key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_the_key_in_a_softhsm_token_promotes_after_the_commit() {
    use crate::sealing::{IDENTITY, SEAL_CRED, TOKEN, token_keys_toml};
    use telematics_link::certificate_facts_of_file;
    let t0 = Instant::now();
    let hsm = telematics_testkit::softhsm::SoftHsm::new(&[TOKEN]);
    hsm.provision(TOKEN, IDENTITY, SEAL_CRED);
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    let factory_spki = hsm.public_key_spki(TOKEN, IDENTITY);
    let public = telematics_testkit::P256PublicKey::from_spki(&factory_spki).unwrap();
    let cert = w.pki.client_for_key_valid_for(VIN, &public, 10).unwrap();
    let keys = token_keys_toml(&hsm, &hsm.pin_file());
    w.edit_config(|c| {
        let mut out = String::new();
        for line in c.lines() {
            if let Some(path) = line.strip_prefix("key = ") {
                // Only the token can sign the handshake.
                std::fs::remove_file(path.trim_matches('"')).unwrap();
            } else if line.starts_with("cert = ") {
                out.push_str(&format!("cert = {cert:?}\n"));
            } else if line.starts_with("keepalive_s") {
                out.push_str(&format!(
                    "{line}\ncert_renew_before_days = 30\nrenewal_retry_s = 1\n"
                ));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out + &keys
    });
    let conf = hsm.conf().to_path_buf();
    let mut resp = responder(&w, 10);

    // Generation 1, killed right after its commit record: not promoted yet.
    w.spawn_daemon_with(|c| {
        c.env("SOFTHSM2_CONF", &conf)
            .env("TELEMATICSD_FAILPOINT", "renew.after_commit");
    });
    let st = w.wait_daemon_exit(30).await;
    assert!(
        st.is_some_and(|s| !s.success()) && w.log().contains("failpoint renew.after_commit hit"),
        "daemon did not abort after the commit; log:\n{}",
        w.log()
    );
    let gen1 = w.dir.path().join("state/identity/gen-1");
    assert!(
        !gen1.join("key.pem").exists(),
        "the new key is in the token"
    );
    let facts1 = certificate_facts_of_file(&gen1.join("cert.pem")).unwrap();
    assert_eq!(
        hsm.public_key_spki(TOKEN, &format!("{IDENTITY}.next")),
        facts1.spki,
        "generation 1 certifies the token's next key"
    );
    assert_eq!(
        hsm.public_key_spki(TOKEN, IDENTITY),
        factory_spki,
        "not promoted before the restart"
    );

    // The restart finishes the promotion and connects on generation 1 with the token key;
    // generation 2 is then renewed live (the responder still answers).
    w.start_daemon_with(|c| {
        c.env("SOFTHSM2_CONF", &conf);
    })
    .await;
    assert!(
        w.log().contains("key promotion finished"),
        "log:\n{}",
        w.log()
    );
    online_with(&w, "generation 1", &facts1.serial).await;
    wait_until("generation 2", &w, 30, || {
        let line = futures_lite_block(certificate_line(&w));
        (field(&line, "generation") == "2" && line.ends_with("renewal=idle")).then_some(())
    })
    .await;
    let gen2 = w.dir.path().join("state/identity/gen-2/cert.pem");
    let facts2 = certificate_facts_of_file(&gen2).unwrap();
    online_with(&w, "generation 2", &facts2.serial).await;
    let _ = resp.kill();
    let _ = resp.wait();
    w.stop_daemon().await;
    assert_eq!(
        hsm.public_key_spki(TOKEN, IDENTITY),
        facts2.spki,
        "generation 2's key is the token's current identity key"
    );
    eprintln!(
        "[renewal] token: kill -9 after the commit, promotion finished, live renewal: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
