//! The daemon binary's start-up store probe (`telematicsd::store_probe`): a damaged store file
//! stops `telematicsd run` with `store.corrupted` (exit status 1, no panic message, the file
//! untouched) through the child process, and a sound store passes the probe to the in-process
//! open. The child side is also run directly through the hidden subcommand.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

const DAEMON: &str = env!("CARGO_BIN_EXE_telematicsd");

/// A configuration whose TLS and key files exist but hold no keys: `run` gets past the file
/// check, the store probe and the store, then fails on the back-end key (`security.config`).
fn config(dir: &Path) -> std::path::PathBuf {
    for f in ["ca.pem", "client.pem", "client.key", "backend.pub"] {
        std::fs::write(dir.join(f), b"not a key\n").unwrap();
    }
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap()
        .name;
    let cfg = format!(
        "[vehicle]\nvin = \"1M8GDM9AXKP042788\"\n[can]\nsource = \"sim\"\n[mqtt]\n\
         ca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n[security]\nbackend_public_key = {pk:?}\n\
         [admin]\nsocket = {sock:?}\ngroup = \"{group}\"\n[state]\ndirectory = {state:?}\n",
        sock = dir.join("admin.sock"),
        ca = dir.join("ca.pem"),
        cert = dir.join("client.pem"),
        key = dir.join("client.key"),
        pk = dir.join("backend.pub"),
    );
    let path = dir.join("telematicsd.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn run(config: &Path) -> Output {
    Command::new(DAEMON)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn damaged_store_stops_the_daemon_with_store_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = dir.path().join("state/outbox.redb");
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(31) ^ 0xA5) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();

    let out = run(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("telematicsd: error[store.corrupted]"),
        "{stderr}"
    );
    assert!(stderr.contains("outbox.redb"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "file modified");

    // The child side alone: exit status 3 and the store's detail on stdout.
    let child = Command::new(DAEMON)
        .arg(telematicsd::store_probe::SUBCOMMAND)
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(child.status.code(), Some(3));
    assert!(!child.stdout.is_empty());
}

#[test]
fn sound_store_passes_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = dir.path().join("state/outbox.redb");
    drop(telematics_store::Store::open(&db).unwrap());

    let child = Command::new(DAEMON)
        .arg(telematicsd::store_probe::SUBCOMMAND)
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(child.status.code(), Some(0));

    // Past the probe and the store: the daemon stops on the key files, not on the store.
    let out = run(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("telematicsd: error[security.config]"),
        "{stderr}"
    );
}
