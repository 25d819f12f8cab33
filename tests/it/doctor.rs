//! `telematicsctl doctor` end to end: each test provokes one condition an owner would report
//! (lockout, hard lock with a pending recovery, broker down, wrong CA, expired certificate via
//! libfaketime, silent bus, outbox backlog) on the real daemon and checks the line the real
//! `telematicsctl` binary prints for it and its exit code (0 ok, 6 warn, 7 fail).

use std::time::{Duration, Instant};

use telematics_it::{CODE, Options, World};
use telematicsd::admin::{self, Request, Response, Secret};

use crate::DAEMON;

const CTL: &str = env!("CARGO_BIN_EXE_it-telematicsctl");

/// Runs `telematicsctl [--json] doctor` against the world's daemon: (exit code, stdout).
async fn doctor(w: &World, json: bool) -> (i32, String) {
    let socket = w.admin_socket.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new(CTL);
        c.arg("--socket").arg(&socket);
        if json {
            c.arg("--json");
        }
        let out = c.arg("doctor").output().expect("run telematicsctl");
        // Shown with the test's output when it fails.
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).expect("utf8"),
        )
    })
    .await
    .expect("join")
}

/// The line of check `name` (`<level>  <name>: ...`).
fn line<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&format!("{name}:")))
}

/// Runs doctor until check `name`'s line satisfies `pred` (at most `secs`); returns the exit
/// code, the line and the whole output.
async fn doctor_until(
    w: &World,
    name: &str,
    secs: u64,
    pred: impl Fn(&str) -> bool,
) -> (i32, String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, out) = doctor(w, false).await;
        if let Some(l) = line(&out, name)
            && pred(l)
        {
            return (code, l.to_string(), out);
        }
        assert!(
            Instant::now() < deadline,
            "no matching {name} line in {secs} s:\n{out}\n--- daemon log ---\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Spawns the daemon and waits only for the admin socket (not for the broker).
async fn start_offline(w: &mut World, configure: impl FnOnce(&mut std::process::Command)) {
    w.spawn_daemon_with(configure);
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin::call(&w.admin_socket, &Request::Status)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no admin socket:\n{}", w.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pair_req(code: &str) -> Request {
    Request::Pair {
        device_name: "valet".into(),
        code: Secret(code.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_vehicle_only_warns_about_the_lowered_pbkdf2_cost_and_json_parses() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    w.pair("phone", CODE).await;
    let (_, _, out) = doctor_until(&w, "link", 10, |l| l.starts_with("ok")).await;
    for name in [
        "daemon",
        "pairing",
        "lockout",
        "recovery",
        "clock",
        "certificate",
    ] {
        let l = line(&out, name).unwrap_or_else(|| panic!("no {name} line:\n{out}"));
        assert!(l.starts_with("ok "), "{l}");
    }
    assert!(
        line(&out, "certificate").is_some_and(|l| l.contains("more days")),
        "{out}"
    );
    // The harness lowers the PBKDF2 cost: "security features disabled" is a warning.
    let l = line(&out, "config").unwrap_or_default();
    assert!(
        l.starts_with("warn") && l.contains("low PBKDF2 cost (100000 < 600000"),
        "{out}"
    );
    let (code, json) = doctor(&w, true).await;
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON document");
    let checks = v["checks"].as_array().expect("checks");
    let worst = v["worst"].as_str().expect("worst");
    assert_eq!(
        code,
        match worst {
            "ok" => 0,
            "warn" => 6,
            _ => 7,
        }
    );
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "config" && c["level"] == "warn")
    );
    assert_eq!(v["facts"]["security"]["paired"], true);
    assert!(
        v["facts"]["buses"][0]["frames"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_shows_the_wrong_code_count_and_the_retry_after() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    w.pair("phone", CODE).await;
    for _ in 0..3 {
        w.admin(pair_req("9137")).await;
    }
    let (code, out) = doctor(&w, false).await;
    let l = line(&out, "lockout").unwrap_or_default();
    assert!(
        l.starts_with("fail  lockout: locked out after 3 wrong codes: retry after "),
        "{out}"
    );
    assert!(l.contains("-> wait, then enter the right code"), "{l}");
    assert_eq!(code, 7, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_lock_and_pending_recovery() {
    let opts = Options {
        lockout_threshold: 1,
        lockout_hard_limit: 2,
        ..Options::default()
    };
    let mut w = World::new(opts, DAEMON.as_ref()).await;
    w.edit_config(|t| t.replace("lockout_base_s = 30", "lockout_base_s = 1"));
    w.start_daemon().await;
    w.pair("phone", CODE).await;
    w.admin(pair_req("9137")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.admin(pair_req("5831")).await;
    let (code, out) = doctor(&w, false).await;
    let l = line(&out, "lockout").unwrap_or_default();
    assert!(
        l.starts_with("fail  lockout: locked until recovery after 2 wrong codes"),
        "{out}"
    );
    assert!(l.contains("confirm-recovery"), "{l}");
    assert!(
        line(&out, "recovery").is_some_and(|l| l.starts_with("ok")),
        "{out}"
    );
    assert_eq!(code, 7);
    let r = w
        .admin(Request::ArmRecovery {
            authorization: w.reset_authorization(),
        })
        .await;
    assert!(matches!(r, Response::RecoveryArmed { .. }), "{r:?}");
    let (code, out) = doctor(&w, false).await;
    let l = line(&out, "recovery").unwrap_or_default();
    assert!(
        l.starts_with("warn  recovery: a recovery is armed: set the new code in the car within 1"),
        "{out}"
    );
    assert_eq!(code, 7, "the hard lock holds until the confirmation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_unreachable_with_the_time_it_last_worked() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    w.broker.stop();
    let (code, l, _) = doctor_until(&w, "link", 20, |l| l.contains("unreachable")).await;
    assert!(
        l.starts_with("fail  link: not connected to localhost:"),
        "{l}"
    );
    assert!(l.contains("last worked "), "{l}");
    assert!(l.contains("is the broker up"), "{l}");
    assert_eq!(code, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_named_as_such() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    let ca = w.pki.ca_cert().display().to_string();
    let rogue = w.pki.rogue_ca_cert().display().to_string();
    w.edit_config(|t| t.replace(&format!("ca = {ca:?}"), &format!("ca = {rogue:?}")));
    start_offline(&mut w, |_| {}).await;
    let (code, l, _) = doctor_until(&w, "link", 20, |l| l.contains("unknown_ca")).await;
    assert!(l.starts_with("fail  link: not connected"), "{l}");
    assert!(l.contains("never connected since the start"), "{l}");
    assert!(l.contains("mqtt.ca"), "{l}");
    assert_eq!(code, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_via_libfaketime() {
    let lib = telematics_it::faketime_lib();
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    // The test PKI's certificates end on 4096-01-01: the daemon lives a year later.
    start_offline(&mut w, |c| {
        c.env("LD_PRELOAD", lib)
            .env("FAKETIME", "@4097-01-01 00:00:00")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    })
    .await;
    let (code, l, out) = doctor_until(&w, "link", 20, |l| l.contains("cert_expired")).await;
    assert!(l.starts_with("fail  link: not connected"), "{l}");
    let cert = line(&out, "certificate").unwrap_or_default();
    assert!(cert.starts_with("fail  certificate: expired 36"), "{out}");
    assert!(cert.contains("renew the vehicle certificate"), "{cert}");
    let clock = line(&out, "clock").unwrap_or_default();
    assert!(
        clock.starts_with("warn  clock: the clock is 36")
            && clock.contains("after the certificate's end"),
        "{out}"
    );
    assert_eq!(code, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bus_fails_with_its_stale_signals() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    let bus = w.bus_addr.to_string();
    // Nothing listens on the configured bus: not one frame arrives.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    w.edit_config(|t| t.replace(&bus, &dead_addr));
    w.start_daemon().await;
    let name = format!("can:{dead_addr}");
    let (code, l, _) = doctor_until(&w, &name, 10, |l| l.contains("no frames")).await;
    assert!(
        l.starts_with(&format!(
            "fail  {name}: no frames in the last seconds (0 since the start); "
        )),
        "{l}"
    );
    assert!(l.contains("signals stale"), "{l}");
    assert_eq!(code, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_backlog_while_the_broker_is_away() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.edit_config(|t| format!("{t}[outbox]\nmax_messages = 4\n"));
    w.start_daemon().await;
    w.broker.stop();
    let (code, l, _) = doctor_until(&w, "outbox", 30, |l| l.contains("backlog")).await;
    assert!(l.starts_with("warn  outbox: backlog: "), "{l}");
    assert!(l.contains("data does not reach the back end"), "{l}");
    assert_eq!(code, 7, "the link fails too");
}
