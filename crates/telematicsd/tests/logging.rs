//! Log sinks of the real daemon.
//!
//! - `journal_protocol_priorities_and_fields`: the journald layer and the daemon binary under a
//!   journal stream write journald's native protocol; the test binds the journal socket itself
//!   (`/run/systemd/journal/socket`, the path tracing-journald sends to) inside a private mount
//!   namespace with a tmpfs on `/run` (`unshare`, util-linux; root, or an unprivileged user
//!   namespace), re-running itself there, and parses every datagram.
//! - `stderr_without_terminal_has_no_ansi`: the daemon, running with a simulated CAN bus and
//!   an unreachable broker, writes plain text without a single ESC byte to a pipe.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

const DAEMON: &str = env!("CARGO_BIN_EXE_telematicsd");
/// Set in the re-run of this test inside the mount namespace (not `TELEMATICSD_*`: the daemon
/// reads those as configuration).
const CHILD_ENV: &str = "JOURNAL_CAPTURE_CHILD_OF_TELEMATICSD_TEST";
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
const VIN: &str = "1M8GDM9AXKP042788";

/// One journal entry: the fields in the order they arrived.
#[derive(Debug)]
struct Entry(Vec<(String, Vec<u8>)>);

impl Entry {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(n, _)| n == name).count()
    }
}

/// Parses one datagram of journald's native protocol: `NAME=value\n`, or `NAME\n` + 64-bit
/// little-endian length + value + `\n` for values that may contain newlines.
fn parse_native(d: &[u8]) -> Entry {
    let mut fields = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let nl = i + d[i..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("field ends with a newline");
        let line = &d[i..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8(line[..eq].to_vec()).unwrap();
            fields.push((name, line[eq + 1..].to_vec()));
            i = nl + 1;
        } else {
            let name = String::from_utf8(line.to_vec()).unwrap();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let start = nl + 9;
            fields.push((name, d[start..start + len].to_vec()));
            assert_eq!(d[start + len], b'\n', "binary field ends with a newline");
            i = start + len + 1;
        }
    }
    for (name, _) in &fields {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "journald drops field names that are not [A-Z0-9_]: {name:?}"
        );
    }
    Entry(fields)
}

/// The next non-empty datagram (tracing-journald probes the socket with an empty one), or
/// `None` when nothing arrives within `wait`.
fn next_entry(sock: &UnixDatagram, wait: Duration) -> Option<Entry> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match sock.recv(&mut buf) {
            Ok(0) => continue,
            Ok(n) => return Some(parse_native(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn stream_value(file: &std::fs::File) -> String {
    let m = file.metadata().unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// A valid configuration whose certificate, key, back-end key and state directory are absent.
fn config_with_missing_files(dir: &Path) -> PathBuf {
    let missing = dir.join("absent");
    let cfg = format!(
        r#"[vehicle]
vin = "{VIN}"
[can]
source = "sim"
[mqtt]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
[security]
backend_public_key = {pk:?}
[state]
directory = {state:?}
"#,
        ca = missing.join("ca.pem"),
        cert = missing.join("client.pem"),
        key = missing.join("client.key"),
        pk = missing.join("backend.pub"),
        state = missing.join("state"),
    );
    let path = dir.join("telematicsd.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn journal_protocol_priorities_and_fields() {
    if std::env::var_os(CHILD_ENV).is_some() {
        journal_capture_in_namespace();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("unshare");
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--map-root-user");
    }
    let out = cmd
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && exec "$0" "$@""#)
        .arg(&exe)
        .args([
            "--exact",
            "journal_protocol_priorities_and_fields",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "journal capture in a private mount namespace failed (needs root or unprivileged \
         user namespaces):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed") && stdout.contains("journal capture: checked"),
        "{stdout}"
    );
}

fn journal_capture_in_namespace() {
    let sock = UnixDatagram::bind(JOURNAL_SOCKET).expect("bind the journal socket in the tmpfs");

    // 1. The layer: priority per level, MESSAGE, tracing fields as F_<FIELD>.
    let layer = telematicsd::logging::journal_layer("telematicsd-test").expect("journal layer");
    let subscriber = tracing_subscriber::registry()
        .with(Targets::new().with_default(tracing::Level::TRACE))
        .with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(
            code = "store.write_failed",
            what = "outbox",
            "durable write failed"
        );
        tracing::warn!(
            code = "can.connect",
            retry_ms = 500u64,
            "CAN connect failed"
        );
        tracing::info!(priority = "high", "queued\nsecond line");
        tracing::debug!(entries = 3u64, "command journal restored");
        tracing::trace!("frame");
    });
    let wait = Duration::from_secs(5);
    let entries: Vec<Entry> = (0..5)
        .map(|_| next_entry(&sock, wait).expect("one datagram per event"))
        .collect();
    let prio: Vec<String> = entries.iter().map(|e| e.get("PRIORITY").unwrap()).collect();
    assert_eq!(prio, ["3", "4", "6", "7", "7"]);
    let msgs: Vec<String> = entries.iter().map(|e| e.get("MESSAGE").unwrap()).collect();
    assert_eq!(
        msgs,
        [
            "durable write failed",
            "CAN connect failed",
            "queued\nsecond line",
            "command journal restored",
            "frame"
        ]
    );
    let (err, warn, info, debug) = (&entries[0], &entries[1], &entries[2], &entries[3]);
    assert_eq!(err.get("F_CODE").as_deref(), Some("store.write_failed"));
    assert_eq!(err.get("F_WHAT").as_deref(), Some("outbox"));
    assert_eq!(warn.get("F_CODE").as_deref(), Some("can.connect"));
    assert_eq!(warn.get("F_RETRY_MS").as_deref(), Some("500"));
    assert_eq!(debug.get("F_ENTRIES").as_deref(), Some("3"));
    // A field named `priority` does not override the journal's PRIORITY.
    assert_eq!(info.get("F_PRIORITY").as_deref(), Some("high"));
    assert_eq!(info.count("PRIORITY"), 1);
    assert_eq!(
        err.get("SYSLOG_IDENTIFIER").as_deref(),
        Some("telematicsd-test")
    );
    assert_eq!(err.get("TARGET").as_deref(), Some("logging"));
    assert!(err.get("CODE_FILE").unwrap().ends_with("logging.rs"));
    assert!(err.get("CODE_LINE").is_some());

    // 2. The daemon binary with JOURNAL_STREAM naming its stderr: the fatal start-up error is
    //    a journal entry with priority 3 and F_CODE, and is not also written to stderr.
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_missing_files(dir.path());
    let stderr_path = dir.path().join("stderr");
    let stderr_file = std::fs::File::create(&stderr_path).unwrap();
    let status = Command::new(DAEMON)
        .args(["run", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", stream_value(&stderr_file))
        .env_remove("RUST_LOG")
        .env_remove(CHILD_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .status()
        .unwrap();
    assert!(!status.success());
    let fatal = next_entry(&sock, wait).expect("the daemon's fatal error in the journal");
    assert_eq!(fatal.get("PRIORITY").as_deref(), Some("3"), "{fatal:?}");
    assert_eq!(fatal.get("F_CODE").as_deref(), Some("config.missing_files"));
    assert_eq!(
        fatal.get("SYSLOG_IDENTIFIER").as_deref(),
        Some("telematicsd")
    );
    let msg = fatal.get("MESSAGE").unwrap();
    assert!(
        msg.starts_with("telematicsd: error[config.missing_files]") && msg.contains("mqtt.ca"),
        "{msg}"
    );
    let written = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!written.contains("config.missing_files"), "{written}");

    // 3. JOURNAL_STREAM inherited from a parent whose stream is another file: not the journal;
    //    the error goes to stderr and nothing reaches the socket.
    let other = std::fs::File::create(dir.path().join("other")).unwrap();
    let stderr_file = std::fs::File::create(&stderr_path).unwrap();
    let status = Command::new(DAEMON)
        .args(["run", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", stream_value(&other))
        .env_remove("RUST_LOG")
        .env_remove(CHILD_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .status()
        .unwrap();
    assert!(!status.success());
    let written = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        written.contains("telematicsd: error[config.missing_files]"),
        "{written}"
    );
    assert!(
        next_entry(&sock, Duration::from_millis(300)).is_none(),
        "no journal entry when stderr is not the journal stream"
    );
    println!("journal capture: checked");
}

#[test]
fn stderr_without_terminal_has_no_ansi() {
    let dir = tempfile::tempdir().unwrap();
    let pki = telematics_testkit::TestPki::generate().unwrap();
    let vehicle = pki.client(VIN).unwrap();
    let pk_path = dir.path().join("backend.pub");
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    std::fs::write(
        &pk_path,
        hex::encode(ring::signature::KeyPair::public_key(&kp).as_ref()),
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap()
        .name;
    // Nothing listens on the broker port: the daemon logs its connection attempts.
    let port = telematics_testkit::free_port().unwrap();
    let cfg = format!(
        r#"[vehicle]
vin = "{VIN}"
[can]
source = "sim"
[mqtt]
host = "127.0.0.1"
port = {port}
ca = {ca:?}
cert = {cert:?}
key = {key:?}
[security]
pbkdf2_iterations = 100000
min_pbkdf2_iterations = 100000
backend_public_key = {pk_path:?}
[admin]
socket = {sock:?}
group = "{group}"
[state]
directory = {state:?}
[log]
filter = "info"
"#,
        ca = pki.ca_cert(),
        cert = vehicle.cert,
        key = vehicle.key,
        sock = dir.path().join("admin.sock"),
    );
    let config = dir.path().join("telematicsd.toml");
    std::fs::write(&config, cfg).unwrap();

    let mut child = Command::new(DAEMON)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).unwrap();
        out
    });
    // Let it start, read the simulated bus and try the broker a few times.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = child.wait().unwrap();
    let out = reader.join().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.lines().filter(|l| l.contains(" INFO ")).count() >= 2,
        "expected info lines from the running daemon:\n{text}"
    );
    assert!(text.contains("CAN connected"), "{text}");
    assert!(
        !out.contains(&0x1b),
        "ESC byte (ANSI colour) in non-terminal stderr:\n{text:?}"
    );
}
