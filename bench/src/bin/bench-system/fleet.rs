//! A fleet of daemons against one mosquitto: every daemon is its own process with its own VIN,
//! client certificate, state directory and admin socket, and the in-process simulated demo
//! car (`can.source = "sim"`: `--daemon` must be built with telematicsd's `sim` feature,
//! as scripts/bench-system.sh does).
//!
//! After the steady-state window and the commands, the broker is restarted (SIGTERM, then started
//! again on the same port with its persistence) and the time from "broker accepts connections
//! again" to each vehicle's fresh `online` birth message at a back-end observer is measured: the
//! spread of the fleet's reconnects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use telematics_admin::{self as admin, Request, Response, Secret};
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId, ExportedCredential};
use telematics_telemetry::{CommandResult, ResultState};
use telematics_testkit::{Mosquitto, TestPki};
use tokio::sync::Notify;

use crate::mqtt;
use crate::procstat::{self, Mem};
use crate::single::{DaemonProc, Usage};
use crate::stats::{self, Summary};

/// The owner's code of every fleet vehicle.
const CODE: &str = "2468";

/// Fleet run parameters.
#[derive(Debug, Clone)]
pub struct FleetParams {
    /// Number of daemons.
    pub n: usize,
    /// Telemetry period of every daemon (s).
    pub telemetry_period_s: u64,
    /// Measurement window once all are online (s).
    pub window_s: u64,
    /// Vehicles that get commands after the window (each: unlock, lock).
    pub command_vehicles: usize,
    /// PBKDF2 iterations of every daemon.
    pub iterations: u32,
    /// Restart the broker at the end and measure the reconnect spread.
    pub restart: bool,
}

/// How the fleet came back after a broker restart.
pub struct ReconnectSpread {
    /// SIGTERM sent → broker accepting connections again.
    pub downtime: Duration,
    /// Per vehicle: broker up → fresh `online` at the observer (ms, sorted).
    pub sorted_ms: Vec<f64>,
    /// Vehicles that did not come back within the deadline.
    pub missing: usize,
}

impl ReconnectSpread {
    /// Nearest-rank percentile of the per-vehicle reconnect times (ms).
    pub fn pct(&self, p: f64) -> f64 {
        stats::percentile(&self.sorted_ms, p).unwrap_or(f64::NAN)
    }

    /// Vehicles back within `ms` of the broker coming up.
    pub fn within(&self, ms: f64) -> usize {
        self.sorted_ms.iter().filter(|v| **v <= ms).count()
    }

    /// Most vehicles that came back within any 100 ms (peak reconnect rate at the broker).
    pub fn peak_per_100ms(&self) -> usize {
        let v = &self.sorted_ms;
        let mut best = 0;
        let mut j = 0;
        for i in 0..v.len() {
            while v[i] - v[j] > 100.0 {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    }
}

/// Fleet figures.
pub struct FleetReport {
    /// Certificates + configuration for all vehicles.
    pub provision: Duration,
    /// Spawn of the first → `online` of the last.
    pub all_online: Duration,
    /// Per-vehicle spawn → `online`.
    pub online: Summary,
    /// Measured window (s).
    pub window_s: f64,
    /// Sum of all daemons' CPU, percent of one core.
    pub daemons_cpu_pct: f64,
    /// Per-daemon RSS (KiB), median and max.
    pub rss_median_kib: f64,
    /// Maximum per-daemon RSS (KiB).
    pub rss_max_kib: u64,
    /// Median per-daemon PSS (KiB).
    pub pss_median_kib: f64,
    /// Sum of the daemons' PSS (KiB): their real joint footprint.
    pub pss_total_kib: u64,
    /// The broker.
    pub mosquitto: Usage,
    /// This process (back end + harness).
    pub harness_cpu_pct: f64,
    /// Messages/s received by the back end (vehicles → broker → back end).
    pub msgs_per_s: f64,
    /// Command round trips (publish → `executed`) during the fleet run.
    pub commands: Option<Summary>,
    /// Commands that did not end `executed`.
    pub command_failures: Vec<String>,
    /// Open-file limit in force.
    pub nofile: u64,
    /// Reconnect spread after a broker restart (when asked for).
    pub reconnect: Option<ReconnectSpread>,
}

#[derive(Default)]
struct Collected {
    online: HashMap<String, Instant>,
    results: HashMap<[u8; 16], (Instant, ResultState, Option<String>)>,
    messages: u64,
}

/// Fleet VIN number `i`: 17 characters without I, O, Q (the check digit is not verified by
/// default).
pub fn vin(i: usize) -> String {
    format!("BENCH{i:012}")
}

fn raise_nofile() -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit")?;
    Ok(hard)
}

struct Vehicle {
    vin: String,
    config: PathBuf,
    log: PathBuf,
    admin: PathBuf,
}

fn provision(pki: &TestPki, dir: &Path, port: u16, p: &FleetParams) -> Result<Vec<Vehicle>> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("ed25519 key"))?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("pkcs8"))?;
    let pub_path = dir.join("backend.pub");
    std::fs::write(&pub_path, hex::encode(key.public_key().as_ref()))?;
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(p.n);
    for i in 0..p.n {
        let vin = vin(i);
        let cert = pki.client(&vin)?;
        let vdir = dir.join(&vin);
        let state = vdir.join("state");
        std::fs::create_dir_all(&state)?;
        let admin = vdir.join("admin.sock");
        let config = format!(
            r#"[vehicle]
vin = "{vin}"
[can]
source = "sim"
max_age_ms = 2000
[mqtt]
host = "localhost"
port = {port}
ca = {ca:?}
cert = {cert:?}
key = {key:?}
keepalive_s = 30
[security]
pbkdf2_iterations = {iters}
min_pbkdf2_iterations = {iters}
backend_public_key = {pub_path:?}
[telemetry]
period_s = {period}
[admin]
socket = {admin:?}
group = "{group}"
[state]
directory = {state:?}
[log]
filter = "warn"
"#,
            ca = pki.ca_cert(),
            cert = cert.cert,
            key = cert.key,
            iters = p.iterations,
            period = p.telemetry_period_s,
        );
        let config_path = vdir.join("telematicsd.toml");
        std::fs::write(&config_path, config)?;
        out.push(Vehicle {
            vin,
            config: config_path,
            log: vdir.join("daemon.log"),
            admin,
        });
    }
    Ok(out)
}

fn lock(c: &Mutex<Collected>) -> Result<std::sync::MutexGuard<'_, Collected>> {
    c.lock().map_err(|_| anyhow::anyhow!("collector poisoned"))
}

/// Pairs a device on vehicle `v` and round-trips unlock and lock through the broker.
async fn commands_to(
    v: &Vehicle,
    backend: &rumqttc::AsyncClient,
    col: &Mutex<Collected>,
    changed: &Notify,
    rtts: &mut Vec<Duration>,
    failures: &mut Vec<String>,
) -> Result<()> {
    let resp = admin::call(
        &v.admin,
        &Request::Pair {
            device_name: "bench".into(),
            code: Secret(CODE.into()),
        },
    )
    .await
    .with_context(|| format!("{}: pair", v.vin))?;
    let Response::Paired { credential, .. } = resp else {
        bail!("{}: pairing answered {resp:?}", v.vin);
    };
    let cred = ExportedCredential::from_text(&credential)
        .map_err(|e| anyhow::anyhow!("{}: credential: {e}", v.vin))?;
    // Let the executor see fresh state after the PBKDF2 of the pairing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (counter, action) in [(1, Action::Unlock), (2, Action::Lock)] {
        let mut id = [0u8; 16];
        SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| anyhow::anyhow!("random"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let req = CommandRequest {
            command_id: CommandId(id),
            action: action.clone(),
            counter,
            issued_at: now,
            expires_at: now + 60,
            code: CODE.into(),
        };
        let bytes = build_command(&cred, &req, &SystemRandom::new())
            .map_err(|e| anyhow::anyhow!("build command: {e}"))?;
        let t0 = Instant::now();
        backend
            .publish(
                telematics_link::topics::commands(&v.vin),
                QoS::AtLeastOnce,
                false,
                bytes,
            )
            .await?;
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let notified = changed.notified();
            if let Some((at, state, reason)) = lock(col)?.results.get(&id).cloned() {
                if state == ResultState::Executed {
                    rtts.push(at.duration_since(t0));
                } else {
                    failures.push(format!("{} {action:?}: {state:?} {reason:?}", v.vin));
                }
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push(format!("{} {action:?}: no result in 60 s", v.vin));
                break;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
    Ok(())
}

/// A back-end observer with a persistent session on `vehicles/+/status`: it forwards each
/// vehicle's `online` births as they are published (not retained copies), with the arrival time.
/// It retries every 10 ms after an error so that it is back first after a broker restart; births
/// published while it reconnects are queued for it by its persistent session.
async fn observer(
    pki: &TestPki,
    port: u16,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>> {
    let files = pki.client("backend").context("observer certificate")?;
    let tls = telematics_link::client_config(&telematics_link::TlsFiles {
        cert_chain: files.cert,
        key: files.key,
        ca: pki.ca_cert().to_path_buf(),
    })
    .context("observer TLS")?;
    let mut o = MqttOptions::new("fleet-observer", "localhost", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    if client
                        .subscribe("vehicles/+/status", QoS::AtLeastOnce)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    let online = telematics_link::Status::from_cbor(&p.payload)
                        .is_some_and(|s| s.state == telematics_link::Presence::Online);
                    let vin = p.topic.split('/').nth(1).unwrap_or_default().to_string();
                    if online && !p.retain && tx.send((vin, at)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .context("observer subscribe timed out")?
        .context("observer ended")?;
    Ok(rx)
}

/// Restarts the broker and measures when every vehicle is back `online`.
async fn restart_spread(
    broker: &mut Mosquitto,
    pki: &TestPki,
    vehicles: &[Vehicle],
) -> Result<ReconnectSpread> {
    let mut rx = observer(pki, broker.port()).await?;
    // Let the persistent session reach the broker's persistence before the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while rx.try_recv().is_ok() {}
    eprintln!("fleet: restarting the broker");
    let t_stop = Instant::now();
    broker.stop_graceful();
    broker.restart()?;
    let t_up = Instant::now();
    let mut back: HashMap<String, Instant> = HashMap::new();
    let deadline = t_up + Duration::from_secs(180);
    while back.len() < vehicles.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((vin, at))) => {
                back.entry(vin).or_insert(at);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut sorted_ms: Vec<f64> = vehicles
        .iter()
        .filter_map(|v| back.get(&v.vin))
        .map(|at| at.saturating_duration_since(t_up).as_secs_f64() * 1e3)
        .collect();
    sorted_ms.sort_by(f64::total_cmp);
    Ok(ReconnectSpread {
        downtime: t_up.duration_since(t_stop),
        missing: vehicles.len() - sorted_ms.len(),
        sorted_ms,
    })
}

/// Runs the fleet benchmark with `bin` as the daemon.
pub async fn run(bin: &Path, p: FleetParams) -> Result<FleetReport> {
    let nofile = raise_nofile()?;
    ensure!(
        nofile > (p.n as u64) * 2 + 256,
        "open-file limit {nofile} too low for {} connections at the broker",
        p.n
    );
    let pki = TestPki::generate()?;
    let mut broker = Mosquitto::start(&pki, &["backend"])?;
    let port = broker.port();
    let mosq = procstat::our_mosquitto()?;
    let filters: Vec<String> = ["status", "telemetry", "alerts", "results"]
        .iter()
        .map(|k| format!("vehicles/+/{k}"))
        .collect();
    let (backend, mut rx) = mqtt::connect(&pki, "backend", port, &filters, true).await?;
    let col = Arc::new(Mutex::new(Collected::default()));
    let changed = Arc::new(Notify::new());
    {
        let (col, changed) = (col.clone(), changed.clone());
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let mut parts = m.topic.split('/');
                let (Some(_), Some(vin), Some(kind)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(mut c) = col.lock() else { return };
                c.messages += 1;
                match kind {
                    "status"
                        if telematics_link::Status::from_cbor(&m.payload)
                            .is_some_and(|s| s.state == telematics_link::Presence::Online) =>
                    {
                        c.online.entry(vin.to_string()).or_insert(m.at);
                    }
                    "results" => {
                        if let Ok(r) = CommandResult::decode(&m.payload)
                            && r.state != ResultState::Accepted
                        {
                            c.results
                                .entry(r.command_id)
                                .or_insert((m.at, r.state, r.reason_code));
                        }
                    }
                    _ => {}
                }
                drop(c);
                changed.notify_waiters();
            }
        });
    }

    let dir = tempfile::Builder::new()
        .prefix("telematics-fleet-")
        .tempdir()?;
    let t = Instant::now();
    let vehicles = provision(&pki, dir.path(), port, &p)?;
    let provision_time = t.elapsed();

    let t_spawn = Instant::now();
    let mut procs = Vec::with_capacity(p.n);
    let mut spawned_at = Vec::with_capacity(p.n);
    for v in &vehicles {
        spawned_at.push(Instant::now());
        procs.push(DaemonProc::spawn(bin, &v.config, &v.log, "warn")?);
    }
    let deadline = Instant::now() + Duration::from_secs(60 + p.n as u64 / 2);
    loop {
        if lock(&col)?.online.len() >= p.n {
            break;
        }
        for (v, d) in vehicles.iter().zip(procs.iter_mut()) {
            if let Some(st) = d.exited() {
                bail!(
                    "{} exited with {st}: {}",
                    v.vin,
                    std::fs::read_to_string(&v.log).unwrap_or_default()
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} online after {:?}",
                lock(&col)?.online.len(),
                p.n,
                t_spawn.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (all_online, online) = {
        let c = lock(&col)?;
        let mut per = Vec::with_capacity(p.n);
        let mut last = t_spawn;
        for (v, s) in vehicles.iter().zip(&spawned_at) {
            let at = *c.online.get(&v.vin).context("online missing")?;
            per.push(at.duration_since(*s));
            last = last.max(at);
        }
        (
            last.duration_since(t_spawn),
            stats::summarize(&per).context("no vehicles")?,
        )
    };

    // Steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tck = procstat::clk_tck()?;
    let me = std::process::id();
    let mut pids: Vec<u32> = procs.iter().map(DaemonProc::pid).collect();
    pids.push(mosq);
    pids.push(me);
    let sample = |pids: &[u32]| -> Result<Vec<u64>> {
        pids.iter()
            .map(|p| Ok(procstat::stat(*p)?.cpu_ticks))
            .collect()
    };
    let m0 = lock(&col)?.messages;
    let c0 = sample(&pids)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(p.window_s)).await;
    let c1 = sample(&pids)?;
    let el = t0.elapsed().as_secs_f64();
    let m1 = lock(&col)?.messages;
    let d: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
    let daemons_ticks: u64 = d[..p.n].iter().sum();
    let mems: Vec<Mem> = procs
        .iter()
        .map(|d| procstat::mem(d.pid()))
        .collect::<Result<_>>()?;
    let rss: Vec<f64> = mems.iter().map(|m| m.rss_kib as f64).collect();
    let pss: Vec<f64> = mems.iter().map(|m| m.pss_kib as f64).collect();
    let mosquitto = Usage {
        cpu_pct: procstat::cpu_percent(d[p.n], el, tck),
        mem: procstat::mem(mosq)?,
    };

    // Commands to random vehicles while the fleet runs.
    let mut rtts = Vec::new();
    let mut failures = Vec::new();
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < p.command_vehicles.min(p.n) {
        let mut b = [0u8; 4];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| anyhow::anyhow!("random"))?;
        let i = u32::from_le_bytes(b) as usize % p.n;
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    for i in &chosen {
        commands_to(
            &vehicles[*i],
            &backend,
            &col,
            &changed,
            &mut rtts,
            &mut failures,
        )
        .await?;
    }

    let reconnect = if p.restart {
        Some(restart_spread(&mut broker, &pki, &vehicles).await?)
    } else {
        None
    };

    for d in &procs {
        d.term();
    }
    for d in &mut procs {
        let _ = d.stop(Duration::from_secs(30)).await;
    }
    drop(broker);
    Ok(FleetReport {
        all_online,
        online,
        provision: provision_time,
        window_s: el,
        daemons_cpu_pct: procstat::cpu_percent(daemons_ticks, el, tck),
        rss_median_kib: stats::median(&rss).context("rss")?,
        rss_max_kib: mems.iter().map(|m| m.rss_kib).max().unwrap_or(0),
        pss_median_kib: stats::median(&pss).context("pss")?,
        pss_total_kib: mems.iter().map(|m| m.pss_kib).sum(),
        mosquitto,
        harness_cpu_pct: procstat::cpu_percent(d[p.n + 1], el, tck),
        msgs_per_s: (m1 - m0) as f64 / el,
        commands: stats::summarize(&rtts),
        command_failures: failures,
        nofile,
        reconnect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_vins_are_valid_and_distinct() {
        for i in [0, 1, 199, 999_999] {
            let v = vin(i);
            telematicsd::config::validate_vin(&v, false).expect("valid VIN");
        }
        assert_ne!(vin(1), vin(10));
    }

    #[test]
    fn reconnect_spread_figures() {
        let rs = ReconnectSpread {
            downtime: Duration::ZERO,
            sorted_ms: vec![0.0, 50.0, 100.0, 150.0, 400.0, 1000.0],
            missing: 0,
        };
        assert_eq!(rs.within(500.0), 5);
        assert_eq!(rs.within(1000.0), 6);
        assert_eq!(rs.peak_per_100ms(), 3);
        assert_eq!(rs.pct(50.0), 100.0);
        assert_eq!(rs.pct(100.0), 1000.0);
    }
}
