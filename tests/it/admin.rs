//! End-to-end tests of the admin socket against the real daemon binary: the in-car code check
//! counts toward the persisted lockout (issue 17), the two-step recovery, and the admin
//! protocol driven by an independent Python client written from docs/admin.md
//! (`admin_client.py`, python3 + cbor2).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use telematics_admin::{self as admin, Request, Response, Secret};
use telematics_it::{CODE, Options, VIN, World};
use telematics_security::Action;
use telematics_telemetry::ResultState;

use crate::DAEMON;

fn pair_req(name: &str, code: &str) -> Request {
    Request::Pair {
        device_name: name.into(),
        code: Secret(code.into()),
    }
}

/// The error code and retry-after of an error response (panics on anything else).
fn refusal(r: &Response) -> (&str, Option<u64>) {
    match r {
        Response::Error {
            code,
            retry_after_s,
            ..
        } => (code.as_str(), *retry_after_s),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn lockout(w: &World) -> (u32, Option<u64>) {
    match w.admin(Request::Lockout).await {
        Response::Lockout {
            failures,
            locked_until,
        } => (failures, locked_until),
        other => panic!("{other:?}"),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign_reset(w: &World) -> Vec<u8> {
    w.reset_authorization()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_wrong_codes_at_pair_lock_out_alert_and_persist_across_a_restart() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    let mut phone = w.pair("phone", CODE).await;
    let mut codes = Vec::new();
    for _ in 0..11 {
        let r = w.admin(pair_req("valet", "9137")).await;
        codes.push((refusal(&r).0.to_owned(), refusal(&r).1));
    }
    // Threshold 3: three code checks (the third starts the 30 s wait), then refusals without
    // a check.
    assert_eq!(
        codes[..3],
        [
            ("security.wrong_code".to_owned(), None),
            ("security.wrong_code".to_owned(), None),
            ("security.wrong_code".to_owned(), Some(30)),
        ]
    );
    for (code, retry) in &codes[3..] {
        assert_eq!(code, "security.locked_out");
        assert!(retry.is_some_and(|s| (1..=30).contains(&s)), "{codes:?}");
    }
    let (failures, until) = lockout(&w).await;
    assert_eq!(failures, 3);
    assert!(until.is_some_and(|t| t > unix_now()), "{until:?}");
    // The daemon's lockout alert fires for in-car guessing too.
    w.wait_for("lockout alert", 10, |inbox| {
        inbox
            .alerts
            .iter()
            .any(|a| a.kind == "security_lockout")
            .then_some(())
    })
    .await;
    // One vehicle-wide lockout: the right code is refused remotely as well.
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(rs.last().map(|r| r.state), Some(ResultState::Rejected));
    assert_eq!(
        rs.last().and_then(|r| r.reason_code.as_deref()),
        Some("locked_out")
    );

    // Restart: the count and the wait were persisted.
    assert_eq!(w.stop_daemon().await, Some(0));
    w.start_daemon().await;
    assert_eq!(lockout(&w).await, (3, until));
    let r = w.admin(pair_req("owner", CODE)).await;
    assert_eq!(refusal(&r).0, "security.locked_out", "{r:?}");
    let audit = match w.admin(Request::Audit { limit: 100 }).await {
        Response::Audit { events } => events,
        other => panic!("{other:?}"),
    };
    let wrong = audit
        .iter()
        .filter(|e| e.kind == "pair.refused" && e.detail.contains("fault=wrong_code"))
        .count();
    assert_eq!(wrong, 3, "every wrong in-car code audited: {audit:?}");
    assert!(
        audit
            .iter()
            .all(|e| !e.detail.contains("9137") && !e.detail.contains(CODE))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_reached_in_the_car_holds_until_recovery() {
    let opts = Options {
        lockout_threshold: 1,
        lockout_hard_limit: 2,
        ..Options::default()
    };
    let mut w = World::new(opts, DAEMON.as_ref()).await;
    w.edit_config(|t| {
        assert!(
            t.contains("lockout_base_s = 30"),
            "harness config changed:\n{t}"
        );
        t.replace("lockout_base_s = 30", "lockout_base_s = 1")
    });
    w.start_daemon().await;
    let mut phone = w.pair("phone", CODE).await;
    let r = w.admin(pair_req("thief", "9137")).await;
    assert_eq!(refusal(&r), ("security.wrong_code", Some(1)));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = w.admin(pair_req("thief", "5831")).await;
    assert_eq!(refusal(&r), ("security.wrong_code", Some(u64::MAX)));
    assert_eq!(lockout(&w).await, (2, Some(u64::MAX)));
    // Survives a crash; waiting does not help; the right code is refused without a check.
    w.kill9();
    w.start_daemon().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = w.admin(pair_req("owner", CODE)).await;
    assert_eq!(refusal(&r), ("security.locked_out", Some(u64::MAX)));
    assert_eq!(lockout(&w).await, (2, Some(u64::MAX)));
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.last().and_then(|r| r.reason_code.as_deref()),
        Some("locked_out")
    );
    assert_eq!(
        rs.last().and_then(|r| r.detail.as_deref()),
        Some("until_recovery")
    );
    // Recovery in two steps: arming keeps the lock, confirming in the car lifts it.
    let r = w
        .admin(Request::ArmRecovery {
            authorization: sign_reset(&w),
        })
        .await;
    let Response::RecoveryArmed { confirm_by } = r else {
        panic!("{r:?}")
    };
    // The daemon's default window (900 s).
    assert!((unix_now() + 890..=unix_now() + 900).contains(&confirm_by));
    let r = w.admin(pair_req("owner", CODE)).await;
    assert_eq!(refusal(&r).0, "security.locked_out");
    let r = w
        .admin(Request::ConfirmRecovery {
            new_code: Secret("1357".into()),
        })
        .await;
    assert_eq!(r, Response::Done);
    assert_eq!(lockout(&w).await, (0, None));
    let mut phone2 = w.pair("phone", "1357").await;
    let id = w.send(&mut phone2, Action::Unlock, "1357").await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.last().map(|r| r.state),
        Some(ResultState::Executed),
        "{rs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_persisted_precount_and_pbkdf2_leaves_the_attempt_counted() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon_with(|c| {
        c.env(
            telematicsd::failpoint::ENV_VAR,
            telematicsd::failpoint::Crash::PairAfterBeginPersist.name(),
        );
    })
    .await;
    // The first pairing has no code to check (no failpoint on its path).
    let _phone = w.pair("phone", CODE).await;
    // The right code, but power is cut after the pre-count was persisted, before PBKDF2.
    let r = admin::call(&w.admin_socket, &pair_req("tablet", CODE)).await;
    assert!(r.is_err(), "the daemon died mid-check: {r:?}");
    assert!(w.wait_daemon_exit(10).await.is_some(), "daemon aborted");
    w.start_daemon().await;
    assert_eq!(
        lockout(&w).await,
        (1, None),
        "the interrupted check stays counted"
    );
    // A completed correct check rolls it back.
    let _tablet = w.pair("tablet", CODE).await;
    assert_eq!(lockout(&w).await, (0, None));
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("it/admin_client.py")
}

fn run_client(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("ok "),
        "python admin client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_written_from_the_doc_speaks_the_admin_protocol() {
    let have_cbor2 = Command::new("python3")
        .args(["-c", "import cbor2"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have_cbor2,
        "python3 with cbor2 is required (scripts/install-test-deps.sh)"
    );
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    let auth = sign_reset(&w);
    let socket = w.admin_socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_client(
            Command::new("python3")
                .arg(client_script())
                .arg("full")
                .arg(&socket)
                .args([VIN, CODE, "1357", &hex::encode(&auth)]),
        )
    })
    .await
    .unwrap();
    eprintln!("python admin client: {}", out.trim());
    // The daemon's state is what the client left: paired with the new code, one active device.
    match w.admin(Request::ListDevices).await {
        Response::Devices { devices } => {
            assert_eq!(
                devices.iter().filter(|d| !d.revoked).count(),
                1,
                "{devices:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    // SO_PEERCRED group rules, from real processes of another user (needs root and setpriv).
    if !nix::unistd::getuid().is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped the SO_PEERCRED part: needs root and setpriv");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    for d in [w.dir.path().to_path_buf(), w.dir.path().join("run")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = w.dir.path().join("admin_client.py");
    std::fs::copy(client_script(), &script).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The socket is 0660, group = the admin group (this test's primary group).
    let admin_gid = nix::unistd::getgid().as_raw();
    let socket = w.admin_socket.clone();
    tokio::task::spawn_blocking(move || {
        // Only a supplementary member of the admin group: may open the socket file, but
        // SO_PEERCRED reports primary gid 65534 and `nobody` is no listed member: refused.
        run_client(
            Command::new("/usr/bin/setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    &format!("--groups={admin_gid}"),
                    "/usr/bin/python3",
                ])
                .arg(&script)
                .arg("peer-denied")
                .arg(&socket),
        );
        // Primary group = the admin group: served.
        run_client(
            Command::new("/usr/bin/setpriv")
                .args([
                    "--reuid=65534",
                    &format!("--regid={admin_gid}"),
                    "--clear-groups",
                    "/usr/bin/python3",
                ])
                .arg(&script)
                .arg("peer-allowed")
                .arg(&socket),
        );
    })
    .await
    .unwrap();
}
