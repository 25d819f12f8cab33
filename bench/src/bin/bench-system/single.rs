//! One daemon in the end-to-end world of `telematics-it` (mosquitto with mTLS, the demo body
//! controller on a TCP virtual bus, a back end): command round trip, idle cost, cold start.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ring::rand::SystemRandom;
use rumqttc::QoS;
use telematics_admin::{self as admin, Request, Response};
use telematics_it::{CODE, Device, Options, World};
use telematics_link::topics;
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId};
use telematics_telemetry::ResultState;

use crate::mqtt;
use crate::procstat;
use crate::stats::{self, Summary};

/// CN of the echo vehicle (the transport-only peer).
const ECHO_VIN: &str = "BENCHECH0000000A1";

/// A daemon child process, SIGKILLed on drop if still running.
pub struct DaemonProc {
    child: Option<Child>,
}

impl DaemonProc {
    /// Spawns `bin --config <config> run` with its output appended to `log`.
    pub fn spawn(bin: &Path, config: &Path, log: &Path, rust_log: &str) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone()?))
            .stderr(Stdio::from(f))
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Self { child: Some(child) })
    }

    /// The process id (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM (graceful shutdown) without waiting.
    pub fn term(&self) {
        if let Some(c) = &self.child
            && let Ok(pid) = i32::try_from(c.id())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// SIGTERM and wait up to `timeout` for the exit; SIGKILL after that.
    pub async fn stop(&mut self, timeout: Duration) -> Result<()> {
        self.term();
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if c.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                self.child = None;
                bail!("daemon ignored SIGTERM for {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates the world and sets the PBKDF2 iteration count in its daemon configuration.
pub(crate) async fn world(
    daemon: &Path,
    iterations: u32,
    telemetry_period_s: u64,
) -> Result<World> {
    let w = World::new(
        Options {
            confirm_timeout_ms: 3_000,
            telemetry_period_s,
            ..Options::default()
        },
        daemon,
    )
    .await;
    let mut text = std::fs::read_to_string(&w.config_path)?;
    // The minimum follows the count, so a low count for a benchmark is an explicit setting.
    for key in ["\npbkdf2_iterations = ", "\nmin_pbkdf2_iterations = "] {
        let start = text
            .find(key)
            .with_context(|| format!("world config has no{}", key.trim_end_matches(" = ")))?
            + key.len();
        let end = start + text[start..].find('\n').context("unterminated line")?;
        text = format!("{}{iterations}{}", &text[..start], &text[end..]);
    }
    std::fs::write(&w.config_path, text)?;
    Ok(w)
}

fn online_in(statuses: &[Vec<u8>]) -> bool {
    statuses.iter().any(|b| {
        telematics_link::Status::from_cbor(b)
            .is_some_and(|s| s.state == telematics_link::Presence::Online)
    })
}

/// Time from spawn to (admin socket answers, retained `online` seen by the back end).
pub(crate) struct Ready {
    admin: Duration,
    online: Duration,
}

/// Spawns the daemon of `w` and waits until it answers on the admin socket and its `online`
/// status reached the back end (polls every 2 ms, or on each back-end message).
pub(crate) async fn spawn_ready(w: &World, bin: &Path) -> Result<(DaemonProc, Ready)> {
    let seen = w
        .inbox
        .lock()
        .map_err(|_| anyhow::anyhow!("inbox"))?
        .status
        .len();
    let t0 = Instant::now();
    let mut d = DaemonProc::spawn(bin, &w.config_path, &w.log_path, "info")?;
    let (mut admin_at, mut online_at) = (None, None);
    let deadline = t0 + Duration::from_secs(30);
    while admin_at.is_none() || online_at.is_none() {
        let notified = w.changed.notified();
        if online_at.is_none()
            && online_in(&w.inbox.lock().map_err(|_| anyhow::anyhow!("inbox"))?.status[seen..])
        {
            online_at = Some(t0.elapsed());
        }
        if admin_at.is_none() && admin::call(&w.admin_socket, &Request::Status).await.is_ok() {
            admin_at = Some(t0.elapsed());
        }
        if let Some(st) = d.exited() {
            bail!("daemon exited with {st}; log:\n{}", w.log());
        }
        ensure!(
            Instant::now() < deadline,
            "daemon not ready in 30 s; log:\n{}",
            w.log()
        );
        let _ = tokio::time::timeout(Duration::from_millis(2), notified).await;
    }
    let (Some(admin), Some(online)) = (admin_at, online_at) else {
        bail!("unreachable: loop ended without both");
    };
    Ok((d, Ready { admin, online }))
}

/// Round-trip figures for one PBKDF2 setting.
pub struct RttReport {
    /// PBKDF2 iterations of the daemon.
    pub iterations: u32,
    /// publish → `accepted` result received (verification done, actuation sent).
    pub accepted: Summary,
    /// publish → `executed` result received (bus confirmed).
    pub executed: Summary,
    /// `accepted` → `executed`, per command (actuation, bus confirmation, second result).
    pub gap: Summary,
    /// publish → `rejected` (door open) received.
    pub rejected: Summary,
    /// Transport floor: publish (QoS 0) → echo vehicle → results (QoS 1) → back end.
    pub echo: Summary,
    /// The same echo with the command published at QoS 1 like the daemon's commands: the
    /// broker's PUBACK and the echoed result are two small writes on the back end's socket
    /// within one round trip, so Nagle on mosquitto's socket waits for the back end's
    /// delayed ACK (~40 ms on Linux). The daemon's path does not pay this: its first result
    /// comes after PBKDF2, long after the PUBACK was acknowledged.
    pub echo_qos1: Summary,
    /// One PBKDF2-HMAC-SHA256 derivation in this process (median of 5), ms.
    pub pbkdf2_ms: f64,
}

pub(crate) fn build(dev: &mut Device, action: Action) -> Result<(CommandId, Vec<u8>)> {
    dev.counter += 1;
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("random"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let req = CommandRequest {
        command_id: CommandId(id),
        action,
        counter: dev.counter,
        issued_at: now,
        expires_at: now + 60,
        code: CODE.into(),
    };
    let bytes = build_command(&dev.cred, &req, &SystemRandom::new())
        .map_err(|e| anyhow::anyhow!("build command: {e}"))?;
    Ok((CommandId(id), bytes))
}

/// Publishes `bytes` and waits for the terminal result of `id`; returns (time to `accepted`
/// if one was seen, time to the terminal result, terminal state, reason code).
pub(crate) async fn round_trip(
    w: &World,
    id: CommandId,
    bytes: Vec<u8>,
) -> Result<(Option<Duration>, Duration, ResultState, Option<String>)> {
    let t0 = Instant::now();
    w.publish_raw(bytes).await;
    let mut accepted = None;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let notified = w.changed.notified();
        {
            let inbox = w.inbox.lock().map_err(|_| anyhow::anyhow!("inbox"))?;
            for r in inbox.results.iter().filter(|r| r.command_id == id.0) {
                if r.state == ResultState::Accepted {
                    accepted.get_or_insert_with(|| t0.elapsed());
                } else {
                    return Ok((accepted, t0.elapsed(), r.state, r.reason_code.clone()));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "no terminal result in 60 s; log:\n{}",
            w.log()
        );
        let _ = tokio::time::timeout(left, notified).await;
    }
}

/// Median wall time of one PBKDF2-HMAC-SHA256 derivation with `iterations` (5 runs).
pub fn pbkdf2_ms(iterations: u32) -> Result<f64> {
    let iters = std::num::NonZeroU32::new(iterations).context("iterations must be > 0")?;
    let mut out = [0u8; 32];
    let mut ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iters,
            b"sixteen byte slt",
            CODE.as_bytes(),
            &mut out,
        );
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    stats::median(&ms).context("no samples")
}

/// Command round trip: `n` lock/unlock commands (each followed by one echo sample, so both
/// see the same load) and `n_rejected` lock commands refused `door_open`.
pub async fn rtt(bin: &Path, iterations: u32, n: usize, n_rejected: usize) -> Result<RttReport> {
    let w = world(bin, iterations, 60).await?;
    let (mut d, _) = spawn_ready(&w, bin).await?;
    // Let the executor see fresh vehicle state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dev = w.pair("bench", CODE).await;
    let port = w.broker.port();
    // Default socket options (no TCP_NODELAY), like the daemon's link.
    mqtt::spawn_echo_vehicle(&w.pki, ECHO_VIN, port, false).await?;
    let filter = [format!("vehicles/{ECHO_VIN}/results")];
    let (echo_be, mut echo_rx) = mqtt::connect(&w.pki, "backend", port, &filter, false).await?;
    let mut echoes = [
        (QoS::AtMostOnce, Vec::new()),
        (QoS::AtLeastOnce, Vec::new()),
    ];

    let (mut accepted, mut executed, mut rejected, mut gap) = (vec![], vec![], vec![], vec![]);
    // Two warm-up rounds are not recorded.
    for i in 0..n + 2 {
        let (id, bytes) = build(&mut dev, w.next_lock_action().await)?;
        let echo_bytes = bytes.clone();
        let (acc, t, state, reason) = round_trip(&w, id, bytes).await?;
        ensure!(
            state == ResultState::Executed,
            "command {i}: {state:?} {reason:?}; log:\n{}",
            w.log()
        );
        for (qos, samples) in &mut echoes {
            // Let the previous exchange's TCP ACKs go out first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t_echo = Instant::now();
            echo_be
                .publish(topics::commands(ECHO_VIN), *qos, false, echo_bytes.clone())
                .await?;
            let m = tokio::time::timeout(Duration::from_secs(10), echo_rx.recv())
                .await
                .context("echo timed out")?
                .context("echo stream ended")?;
            ensure!(m.payload == echo_bytes, "echo payload differs");
            if i >= 2 {
                samples.push(m.at.duration_since(t_echo));
            }
        }
        if i >= 2 {
            executed.push(t);
            accepted.extend(acc);
            gap.extend(acc.map(|a| t.saturating_sub(a)));
        }
    }

    w.car.lock().await.car_mut().doors_open[3] = true;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..n_rejected {
        let (id, bytes) = build(&mut dev, Action::Lock)?;
        let (_, t, state, reason) = round_trip(&w, id, bytes).await?;
        ensure!(
            state == ResultState::Rejected && reason.as_deref() == Some("door_open"),
            "rejected command {i}: {state:?} {reason:?}"
        );
        rejected.push(t);
    }
    w.car.lock().await.car_mut().doors_open[3] = false;
    d.stop(Duration::from_secs(15)).await?;
    let s = |v: &[Duration], what: &str| {
        stats::summarize(v).with_context(|| format!("no {what} samples"))
    };
    Ok(RttReport {
        iterations,
        accepted: s(&accepted, "accepted")?,
        executed: s(&executed, "executed")?,
        gap: s(&gap, "accepted -> executed")?,
        rejected: s(&rejected, "rejected")?,
        echo: s(&echoes[0].1, "echo")?,
        echo_qos1: s(&echoes[1].1, "echo (QoS 1)")?,
        pbkdf2_ms: pbkdf2_ms(iterations)?,
    })
}

/// CPU and memory of one process over a window.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// CPU in percent of one core.
    pub cpu_pct: f64,
    /// Memory at the end of the window.
    pub mem: procstat::Mem,
}

/// Idle figures.
pub struct IdleReport {
    /// Window length (s).
    pub secs: f64,
    /// The daemon.
    pub daemon: Usage,
    /// mosquitto (the peer).
    pub mosquitto: Usage,
    /// CAN frames the daemon received per second in the window (from its admin status).
    pub frames_per_s: f64,
    /// Telemetry messages the back end received in the window.
    pub telemetry_msgs: usize,
}

fn frames_of(resp: &Response) -> Option<u64> {
    can_counter(resp, "frames")
}

/// The counter `key` (`frames`, `dropped`, `connects`) of the `can` component of a status.
pub(crate) fn can_counter(resp: &Response, key: &str) -> Option<u64> {
    let Response::Status { components, .. } = resp else {
        return None;
    };
    let (_, can) = components.iter().find(|(k, _)| k == "can")?;
    can.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// Samples CPU ticks of `pids`.
fn ticks(pids: &[u32]) -> Result<Vec<u64>> {
    pids.iter()
        .map(|p| Ok(procstat::stat(*p)?.cpu_ticks))
        .collect()
}

/// One connected daemon with the demo car on the bus at its normal rate (10 Hz fast frames,
/// 1 Hz slow), production telemetry period, for `secs`.
pub async fn idle(bin: &Path, secs: u64) -> Result<IdleReport> {
    let w = world(bin, 600_000, 60).await?;
    let (mut d, _) = spawn_ready(&w, bin).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mosq = procstat::our_mosquitto()?;
    let pids = [d.pid(), mosq];
    let tck = procstat::clk_tck()?;
    let f0 = frames_of(&w.admin(Request::Status).await).context("no frame count in status")?;
    let tel0 = w
        .inbox
        .lock()
        .map_err(|_| anyhow::anyhow!("inbox"))?
        .telemetry
        .len();
    let c0 = ticks(&pids)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let c1 = ticks(&pids)?;
    let el = t0.elapsed().as_secs_f64();
    let f1 = frames_of(&w.admin(Request::Status).await).context("no frame count in status")?;
    let tel1 = w
        .inbox
        .lock()
        .map_err(|_| anyhow::anyhow!("inbox"))?
        .telemetry
        .len();
    let usage = |i: usize| -> Result<Usage> {
        Ok(Usage {
            cpu_pct: procstat::cpu_percent(c1[i] - c0[i], el, tck),
            mem: procstat::mem(pids[i])?,
        })
    };
    let report = IdleReport {
        secs: el,
        daemon: usage(0)?,
        mosquitto: usage(1)?,
        frames_per_s: (f1 - f0) as f64 / el,
        telemetry_msgs: tel1 - tel0,
    };
    d.stop(Duration::from_secs(15)).await?;
    Ok(report)
}

/// Cold-start figures (each a list of `runs` samples).
pub struct ColdReport {
    /// spawn → admin socket answers.
    pub admin: Vec<Duration>,
    /// spawn → retained `online` seen by the back end.
    pub online: Vec<Duration>,
}

/// Starts and stops the daemon `runs` times (same state directory, so the first run creates
/// the database and the others open it).
pub async fn cold_start(bin: &Path, runs: usize) -> Result<ColdReport> {
    let w = world(bin, 600_000, 60).await?;
    let mut r = ColdReport {
        admin: vec![],
        online: vec![],
    };
    for _ in 0..runs {
        let (mut d, ready) = spawn_ready(&w, bin).await?;
        r.admin.push(ready.admin);
        r.online.push(ready.online);
        d.stop(Duration::from_secs(15)).await?;
        // Let the graceful `offline` reach the back end before the next spawn.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_from_status() {
        let r = Response::Status {
            version: "0".into(),
            vin: "V".into(),
            uptime_s: 1,
            components: vec![
                ("mqtt".into(), "connected".into()),
                ("can".into(), "connects=1 frames=1234 dropped=0".into()),
            ],
        };
        assert_eq!(frames_of(&r), Some(1234));
        assert_eq!(can_counter(&r, "dropped"), Some(0));
        assert_eq!(can_counter(&r, "drop"), None);
        assert_eq!(frames_of(&Response::Done), None);
    }
}
