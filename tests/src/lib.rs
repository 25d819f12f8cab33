//! Support code for the end-to-end tests (see it/main.rs): a [`World`] with a real mosquitto
//! (mTLS, ACL), the daemon as a real child process (`it-telematicsd`, the same entry point as
//! the shipped binary), a simulated body controller on a TCP virtual CAN bus, and a back-end
//! client that sends COSE commands and collects results, telemetry and alerts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use telematics_admin::{self as admin, Request, Response, Secret};
use telematics_can::sim::BodyController;
use telematics_canio::tcpbus::TcpBusHub;
use telematics_link::{TlsFiles, client_config, topics};
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId, ExportedCredential};
use telematics_telemetry::{
    Alert, CommandResult, DeviceList, ResultState, RevocationOutcome, Telemetry,
};
use telematics_testkit::{Mosquitto, TestPki};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A VIN with a valid check digit.
pub const VIN: &str = "1M8GDM9AXKP042788";
/// The owner's code in the tests.
pub const CODE: &str = "2468";

/// Everything the back end received, in order.
#[derive(Default)]
pub struct Inbox {
    pub results: Vec<CommandResult>,
    pub telemetry: Vec<Telemetry>,
    pub alerts: Vec<Alert>,
    pub status: Vec<Vec<u8>>,
    /// Session-info replies (COSE_Mac0 bytes) from `vehicles/{vin}/session`.
    pub session: Vec<Vec<u8>>,
    /// Device lists from `vehicles/{vin}/devices` (the retained one first).
    pub devices: Vec<DeviceList>,
    /// Revocation outcomes from `vehicles/{vin}/devices/revocations`.
    pub revocations: Vec<RevocationOutcome>,
}

impl Inbox {
    /// The results received for command `id`, in arrival order.
    pub fn results_for(&self, id: CommandId) -> Vec<CommandResult> {
        self.results
            .iter()
            .filter(|r| r.command_id == id.0)
            .cloned()
            .collect()
    }
}

/// The vehicle a test world plays (daemon files and simulator alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Vehicle {
    /// The demo car: one bus (the flat `[can]` keys), its built-in body controller.
    #[default]
    Demo,
    /// Test car B from its data files: two buses (`[[can.bus]]` body and powertrain, one TCP
    /// hub each), the simulator built from the same files.
    CarB,
}

/// libfaketime's multithreaded preload (Debian's `faketime`, installed by
/// scripts/install-test-deps.sh).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// [`FAKETIME_LIB`], asserting that it is installed (with the hint how to install it).
pub fn faketime_lib() -> &'static str {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "libfaketime missing: run scripts/install-test-deps.sh (apt-get install faketime)"
    );
    FAKETIME_LIB
}

/// Runs the daemon under libfaketime, its wall clock offset by the file `offset_file` (read at
/// every call, e.g. `+351d`, so a test can move the clock while the daemon runs); the
/// monotonic clock is left alone.
pub fn faketime_from_file(c: &mut Command, offset_file: &Path) {
    c.env("LD_PRELOAD", faketime_lib())
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// Test car B's data files (crates/telematics-can/data): DBC, body mapping, powertrain
/// mapping, profile.
pub fn car_b_files() -> [String; 4] {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/telematics-can/data");
    [
        "test_car_b.dbc",
        "test_car_b_body_vss.toml",
        "test_car_b_powertrain_vss.toml",
        "test_car_b_profile.toml",
    ]
    .map(|f| std::fs::read_to_string(format!("{data}/{f}")).expect(f))
}

/// Options of a test world.
#[derive(Clone, Debug)]
pub struct Options {
    pub vehicle: Vehicle,
    pub confirm_timeout_ms: u64,
    pub max_engine_run_s: u64,
    pub lockout_threshold: u32,
    pub lockout_hard_limit: u32,
    pub telemetry_period_s: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vehicle: Vehicle::Demo,
            confirm_timeout_ms: 1_500,
            max_engine_run_s: 600,
            lockout_threshold: 3,
            lockout_hard_limit: 6,
            telemetry_period_s: 2,
        }
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub broker: Mosquitto,
    pub car: Arc<tokio::sync::Mutex<BodyController>>,
    pub bus_addr: SocketAddr,
    pub inbox: Arc<Mutex<Inbox>>,
    pub changed: Arc<Notify>,
    pub backend: AsyncClient,
    pub backend_key: Ed25519KeyPair,
    /// The back-end key's 32-byte Ed25519 seed (for the Python client).
    pub backend_seed: [u8; 32],
    /// The back-end key as a PKCS#8 v1 DER file (mode 0600, for telematicsctl).
    pub backend_key_path: PathBuf,
    pub config_path: PathBuf,
    pub admin_socket: PathBuf,
    pub log_path: PathBuf,
    daemon: Option<Child>,
    daemon_bin: PathBuf,
    sim_stop: CancellationToken,
    _hub: TcpBusHub,
    /// Car B's powertrain bus (none for the demo car).
    powertrain_hub: Option<TcpBusHub>,
}

impl World {
    /// Broker, bus with the body controller, back-end client; the daemon is not started yet.
    /// `daemon_bin` is the daemon executable (`env!("CARGO_BIN_EXE_it-telematicsd")` in tests).
    pub async fn new(opts: Options, daemon_bin: &Path) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::generate().expect("pki");
        let broker =
            Mosquitto::start(&pki, &["backend"]).expect("mosquitto (apt-get install mosquitto)");

        // Vehicle side: body controller on a TCP virtual CAN bus hosted by the test.
        let hub = TcpBusHub::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bus hub");
        let bus_addr = hub.local_addr();
        let sim_stop = CancellationToken::new();
        let (car, powertrain_hub) = match opts.vehicle {
            Vehicle::Demo => {
                let car = Arc::new(tokio::sync::Mutex::new(BodyController::demo()));
                tokio::spawn(telematics_canio::sim::run_body_controller(
                    car.clone(),
                    hub.local_node(),
                    sim_stop.clone(),
                ));
                (car, None)
            }
            Vehicle::CarB => {
                let [dbc, body, powertrain, profile] = car_b_files();
                let bus = |name, mapping| telematics_profile::sim::BusFiles {
                    name,
                    dbc: &dbc,
                    mapping,
                };
                let c = telematics_profile::sim::body_controller(
                    &profile,
                    &[bus("body", &body), bus("powertrain", &powertrain)],
                )
                .expect("car B simulator");
                let car = Arc::new(tokio::sync::Mutex::new(c));
                let pt = TcpBusHub::bind("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("powertrain bus hub");
                tokio::spawn(telematics_canio::sim::run_body_controller_on_buses(
                    car.clone(),
                    vec![
                        ("body".to_string(), hub.local_node()),
                        ("powertrain".to_string(), pt.local_node()),
                    ],
                    sim_stop.clone(),
                    |e| eprintln!("sim: {e}"),
                ));
                (car, Some(pt))
            }
        };

        // Back end.
        let mut backend_seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut backend_seed).unwrap();
        let backend_key = Ed25519KeyPair::from_seed_unchecked(&backend_seed).unwrap();
        // PKCS#8 v1 (RFC 8410): the fixed Ed25519 prefix, then the seed.
        let backend_key_path = dir.path().join("backend.key");
        let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
        der.extend_from_slice(&backend_seed);
        std::fs::write(&backend_key_path, der).unwrap();
        std::fs::set_permissions(
            &backend_key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let pub_path = dir.path().join("backend.pub");
        std::fs::write(&pub_path, hex::encode(backend_key.public_key().as_ref())).unwrap();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let changed = Arc::new(Notify::new());
        let backend = backend_client(&pki, broker.port(), inbox.clone(), changed.clone()).await;

        // Daemon configuration (written once; the daemon is a child process).
        let vehicle = pki.client(VIN).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let admin_socket = dir.path().join("run/admin.sock");
        let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_default();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let can = match (&powertrain_hub, opts.vehicle) {
            (Some(pt), Vehicle::CarB) => {
                let [dbc, body, powertrain, profile] = car_b_files();
                let dbc = write("vehicle.dbc", &dbc);
                format!(
                    r#"[can]
profile = {profile:?}
max_age_ms = 2000
[[can.bus]]
name = "body"
source = "tcp"
interface = "{bus_addr}"
dbc = {dbc:?}
mapping = {body:?}
[[can.bus]]
name = "powertrain"
source = "tcp"
interface = "{pt}"
dbc = {dbc:?}
mapping = {powertrain:?}"#,
                    profile = write("profile.toml", &profile),
                    body = write("body_vss.toml", &body),
                    powertrain = write("powertrain_vss.toml", &powertrain),
                    pt = pt.local_addr(),
                )
            }
            _ => format!(
                r#"[can]
source = "tcp"
interface = "{bus_addr}"
dbc = {dbc:?}
mapping = {mapping:?}
profile = {profile:?}
max_age_ms = 2000"#,
                dbc = write("vehicle.dbc", telematics_can::demo::DEMO_DBC),
                mapping = write("vss.toml", telematics_can::demo::DEMO_VSS_TOML),
                profile = write("profile.toml", telematics_can::demo::DEMO_PROFILE_TOML),
            ),
        };
        let config = format!(
            r#"[vehicle]
vin = "{VIN}"
{can}
[mqtt]
host = "localhost"
port = {port}
ca = {ca:?}
cert = {cert:?}
key = {key:?}
keepalive_s = 5
[security]
pbkdf2_iterations = 100000
min_pbkdf2_iterations = 100000
lockout_threshold = {thr}
lockout_hard_limit = {hard}
lockout_base_s = 30
backend_public_key = {pub_path:?}
[commands]
confirm_timeout_ms = {confirm}
max_engine_run_s = {run}
[telemetry]
period_s = {period}
[admin]
socket = {admin_socket:?}
group = "{group}"
[state]
directory = {state:?}
[log]
filter = "info"
"#,
            port = broker.port(),
            ca = pki.ca_cert(),
            cert = vehicle.cert,
            key = vehicle.key,
            thr = opts.lockout_threshold,
            hard = opts.lockout_hard_limit,
            confirm = opts.confirm_timeout_ms,
            run = opts.max_engine_run_s,
            period = opts.telemetry_period_s,
        );
        let config_path = dir.path().join("telematicsd.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("daemon.log");
        World {
            dir,
            pki,
            broker,
            car,
            bus_addr,
            inbox,
            changed,
            backend,
            backend_key,
            backend_seed,
            backend_key_path,
            config_path,
            admin_socket,
            log_path,
            daemon: None,
            daemon_bin: daemon_bin.to_path_buf(),
            sim_stop,
            _hub: hub,
            powertrain_hub,
        }
    }

    /// A node of the vehicle's TCP bus for the test itself (frames the test sends are stamped
    /// with their receive time by whoever reads them).
    pub fn bus_node(&self) -> telematics_canio::TcpBusPort {
        self._hub.local_node()
    }

    /// A node of the named bus (`body`: [`World::bus_node`]; `powertrain`: car B's second
    /// bus, the body bus for the demo car).
    pub fn bus_node_of(&self, bus: &str) -> telematics_canio::TcpBusPort {
        match (&self.powertrain_hub, bus) {
            (Some(pt), "powertrain") => pt.local_node(),
            _ => self._hub.local_node(),
        }
    }

    /// Starts the daemon process and waits until it serves the admin socket and is online.
    pub async fn start_daemon(&mut self) {
        self.start_daemon_with(|_| {}).await;
    }

    /// [`World::start_daemon`] with extra process settings (environment such as
    /// `TELEMATICSD_FAILPOINT` or `LD_PRELOAD`, a `pre_exec` hook for resource limits).
    pub async fn start_daemon_with(&mut self, configure: impl FnOnce(&mut Command)) {
        self.start_daemon_wrapped(&[], configure).await;
    }

    /// [`World::start_daemon_with`], run through `wrapper` (a program and its arguments that
    /// finally exec the daemon command appended to them, e.g. `prlimit --fsize=N --`).
    pub async fn start_daemon_wrapped(
        &mut self,
        wrapper: &[&str],
        configure: impl FnOnce(&mut Command),
    ) {
        self.spawn_daemon_wrapped(wrapper, configure);
        let online = self.status_count();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.daemon.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("daemon exited early with {st}; log:\n{}", self.log());
            }
            if admin::call(&self.admin_socket, &Request::Status)
                .await
                .is_ok()
                && self.online_since(online)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready in 20 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the executor see fresh vehicle state.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    /// Spawns the daemon process (log appended to [`World::log_path`]) without waiting for it.
    pub fn spawn_daemon_with(&mut self, configure: impl FnOnce(&mut Command)) {
        self.spawn_daemon_wrapped(&[], configure);
    }

    /// [`World::spawn_daemon_with`] through a wrapper (see [`World::start_daemon_wrapped`]).
    pub fn spawn_daemon_wrapped(&mut self, wrapper: &[&str], configure: impl FnOnce(&mut Command)) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&self.daemon_bin);
                c
            }
            None => Command::new(&self.daemon_bin),
        };
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        configure(&mut cmd);
        self.daemon = Some(cmd.spawn().expect("spawn daemon"));
    }

    /// The daemon's process id while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// `true` while the daemon process has not exited.
    pub fn daemon_running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `secs` for the daemon to exit by itself (crash, failpoint, fatal error) and
    /// returns its exit status; `None` if it is still running (it is left running).
    pub async fn wait_daemon_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(c) = self.daemon.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.daemon = None;
                return Some(st);
            }
            if self.daemon.is_none() || Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon executable this world runs.
    pub fn daemon_bin(&self) -> &Path {
        &self.daemon_bin
    }

    /// Counters of the TCP virtual CAN bus hub (frames forwarded / dropped per member).
    pub fn bus_stats(&self) -> telematics_canio::HubStats {
        self._hub.stats()
    }

    /// Rewrites the daemon's configuration file (takes effect at the next daemon start).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(text)).unwrap();
    }

    /// The admin `Status` components as `(name, value)` pairs.
    pub async fn status_components(&self) -> Vec<(String, String)> {
        match self.admin(Request::Status).await {
            Response::Status { components, .. } => components,
            other => panic!("status failed: {other:?}"),
        }
    }

    /// A second back-end subscriber with a persistent MQTT session (clean session off, QoS 1):
    /// the broker queues results/telemetry/alerts for it while it is disconnected, so a
    /// broker restart cannot race its re-subscription.
    pub async fn persistent_observer(&self) -> Observer {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let changed = Arc::new(Notify::new());
        let client = mqtt_subscriber(
            &self.pki,
            self.broker.port(),
            inbox.clone(),
            changed.clone(),
            false,
        )
        .await;
        Observer {
            client,
            inbox,
            changed,
        }
    }

    fn status_count(&self) -> usize {
        self.inbox.lock().unwrap().status.len()
    }

    /// An `online` birth message arrived after the first `n` status messages.
    fn online_since(&self, n: usize) -> bool {
        self.inbox.lock().unwrap().status[n..].iter().any(|b| {
            telematics_link::Status::from_cbor(b)
                .is_some_and(|s| s.state == telematics_link::Presence::Online)
        })
    }

    /// SIGKILL: no drain, no goodbye (crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub async fn stop_daemon(&mut self) -> Option<i32> {
        let mut c = self.daemon.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon ignored SIGTERM for 15 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn admin(&self, req: Request) -> Response {
        admin::call(&self.admin_socket, &req)
            .await
            .expect("admin call")
    }

    /// Pairs a device in the car (admin socket) and returns its credential.
    pub async fn pair(&self, name: &str, code: &str) -> Device {
        match self
            .admin(Request::Pair {
                device_name: name.into(),
                code: Secret(code.into()),
            })
            .await
        {
            Response::Paired { credential, .. } => Device {
                cred: ExportedCredential::from_text(&credential).expect("credential text"),
                counter: 0,
            },
            other => panic!("pairing failed: {other:?}"),
        }
    }

    /// A reset authorization for this vehicle signed by the back end, valid for an hour.
    pub fn reset_authorization(&self) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        telematics_security::client::sign_reset(
            &self.backend_key,
            VIN,
            now,
            now + 3600,
            &SystemRandom::new(),
        )
        .unwrap()
    }

    /// Publishes a command as the back end; returns its id.
    pub async fn send(&self, dev: &mut Device, action: Action, code: &str) -> CommandId {
        dev.counter += 1;
        let counter = dev.counter;
        self.send_with(dev, action, code, counter, 0).await
    }

    /// Publishes a command with an explicit counter and issued-at offset (seconds).
    pub async fn send_with(
        &self,
        dev: &Device,
        action: Action,
        code: &str,
        counter: u64,
        age_s: i64,
    ) -> CommandId {
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut id).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .saturating_add_signed(-age_s);
        let req = CommandRequest {
            command_id: CommandId(id),
            action,
            counter,
            issued_at: now,
            expires_at: now + 60,
            code: code.into(),
        };
        let bytes = build_command(&dev.cred, &req, &SystemRandom::new()).unwrap();
        self.publish_raw(bytes).await;
        CommandId(id)
    }

    /// Unlock when every door is locked, else lock: a command that changes the car's state.
    pub async fn next_lock_action(&self) -> Action {
        let locked = self
            .car
            .lock()
            .await
            .car()
            .locks
            .iter()
            .all(|l| *l == telematics_can::demo::LockState::Locked);
        if locked { Action::Unlock } else { Action::Lock }
    }

    /// Publishes `bytes` on any topic as the back end (QoS 1).
    pub async fn publish_to(&self, topic: String, bytes: Vec<u8>) {
        self.backend
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }

    /// Every refusal in the audit trail, counted per `(source, fault)`: individual records
    /// (`command.rejected`, `session_request.rejected`) plus the counts of `refused.aggregate`
    /// records (the further refusals of a kind in a window; written when the window ends or
    /// the daemon stops).
    pub async fn refusal_counts(&self) -> std::collections::BTreeMap<(String, String), u64> {
        let Response::Audit { events } = self.admin(Request::Audit { limit: 512 }).await else {
            panic!("audit failed");
        };
        let mut out = std::collections::BTreeMap::new();
        for e in &events {
            let field = |name: &str| {
                e.detail
                    .split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_default()
                    .to_string()
            };
            let (source, count) = match e.kind.as_str() {
                telematicsd::security::AUDIT_AGGREGATE_KIND => {
                    (field("source"), field("count").parse::<u64>().unwrap())
                }
                "command.rejected" => ("command".to_string(), 1),
                "session_request.rejected" => ("session_request".to_string(), 1),
                "revocation.rejected" => ("revocation".to_string(), 1),
                _ => continue,
            };
            *out.entry((source, field("fault"))).or_insert(0) += count;
        }
        out
    }

    /// How often the daemon's log says the MQTT link connected.
    pub fn mqtt_connects(&self) -> usize {
        self.log().matches("MQTT connected").count()
    }

    pub async fn publish_raw(&self, bytes: Vec<u8>) {
        self.backend
            .publish(topics::commands(VIN), QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }

    /// All results received for `id` so far.
    pub fn results_of(&self, id: CommandId) -> Vec<CommandResult> {
        self.inbox.lock().unwrap().results_for(id)
    }

    /// Waits until `pred` holds on the inbox (or panics with the daemon log).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        secs: u64,
        mut pred: impl FnMut(&Inbox) -> Option<T>,
    ) -> T {
        match wait_on(&self.inbox, &self.changed, secs, &mut pred).await {
            Some(v) => v,
            None => panic!(
                "timed out waiting for {what}; results so far: {:?}\n--- daemon log ---\n{}",
                self.inbox.lock().unwrap().results,
                self.log()
            ),
        }
    }

    /// Waits for the terminal result of `id`; returns every state seen, in order.
    pub async fn terminal(&self, id: CommandId, secs: u64) -> Vec<CommandResult> {
        self.wait_for("a terminal result", secs, |inbox| {
            let mine = inbox.results_for(id);
            mine.iter()
                .any(|r| r.state != ResultState::Accepted)
                .then_some(mine)
        })
        .await
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.sim_stop.cancel();
        self.kill9();
    }
}

/// A paired device: credential and its counter.
pub struct Device {
    pub cred: ExportedCredential,
    pub counter: u64,
}

/// A back-end subscriber of its own (see [`World::persistent_observer`]).
pub struct Observer {
    pub client: AsyncClient,
    pub inbox: Arc<Mutex<Inbox>>,
    pub changed: Arc<Notify>,
}

impl Observer {
    /// Waits until `pred` holds on this observer's inbox (or panics).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        secs: u64,
        mut pred: impl FnMut(&Inbox) -> Option<T>,
    ) -> T {
        match wait_on(&self.inbox, &self.changed, secs, &mut pred).await {
            Some(v) => v,
            None => panic!(
                "observer timed out waiting for {what}; results so far: {:?}",
                self.inbox.lock().unwrap().results
            ),
        }
    }
}

/// Polls `pred` on `inbox` whenever it changes (and at least every 200 ms) until it yields a
/// value or `secs` pass (`None`).
async fn wait_on<T>(
    inbox: &Mutex<Inbox>,
    changed: &Notify,
    secs: u64,
    pred: &mut impl FnMut(&Inbox) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let notified = changed.notified();
        if let Some(v) = pred(&inbox.lock().unwrap()) {
            return Some(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
    }
}

async fn backend_client(
    pki: &TestPki,
    port: u16,
    inbox: Arc<Mutex<Inbox>>,
    changed: Arc<Notify>,
) -> AsyncClient {
    mqtt_subscriber(pki, port, inbox, changed, true).await
}

async fn mqtt_subscriber(
    pki: &TestPki,
    port: u16,
    inbox: Arc<Mutex<Inbox>>,
    changed: Arc<Notify>,
    clean_session: bool,
) -> AsyncClient {
    let c = pki.client("backend").unwrap();
    let tls = client_config(&TlsFiles {
        cert_chain: c.cert.clone(),
        key: c.key.clone(),
        ca: pki.ca_cert().to_path_buf(),
    })
    .unwrap();
    let mut id = [0u8; 6];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut id).unwrap();
    let mut o = MqttOptions::new(format!("backend-{}", hex::encode(id)), "localhost", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(clean_session);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 256);
    let sub = client.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in [
                        "results",
                        "telemetry",
                        "alerts",
                        "status",
                        "session",
                        "devices",
                        "devices/revocations",
                    ] {
                        sub.subscribe(format!("vehicles/{VIN}/{t}"), QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    {
                        let mut inbox = inbox.lock().unwrap();
                        let kind = p.topic.rsplit('/').next().unwrap_or("");
                        match kind {
                            "results" => {
                                if let Ok(r) = CommandResult::decode(&p.payload) {
                                    inbox.results.push(r);
                                }
                            }
                            "telemetry" => {
                                if let Ok(t) = Telemetry::decode(&p.payload) {
                                    inbox.telemetry.push(t);
                                }
                            }
                            "alerts" => {
                                if let Ok(a) = Alert::decode(&p.payload) {
                                    inbox.alerts.push(a);
                                }
                            }
                            "status" => inbox.status.push(p.payload.to_vec()),
                            "session" => inbox.session.push(p.payload.to_vec()),
                            "devices" => {
                                if let Ok(l) = DeviceList::decode(&p.payload) {
                                    inbox.devices.push(l);
                                }
                            }
                            "revocations" => {
                                if let Ok(o) = RevocationOutcome::decode(&p.payload) {
                                    inbox.revocations.push(o);
                                }
                            }
                            _ => {}
                        }
                    }
                    changed.notify_waiters();
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("back end subscribed")
        .expect("back end task");
    client
}

/// Path helper for tests that corrupt state files.
pub fn state_file(world: &World) -> PathBuf {
    world.dir.path().join("state").join("outbox.redb")
}

/// `true` when `p` exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}
