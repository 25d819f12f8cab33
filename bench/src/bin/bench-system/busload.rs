//! Bus load (issue 12): the daemon's CPU per received CAN frame at a realistic load on the TCP
//! virtual bus, against a plain reader of the same bus in the same run.
//!
//! One world (mosquitto with mTLS, the demo body controller on the hub, a back end), the
//! release daemon connected to the bus, and [`plain_reader`] as a second process on the same
//! hub: it reads every `candump -L` line, parses it with the same parser as the bus
//! ([`telematics_can::parse_line`]) and discards the frame. A generator node on the hub sends
//! `fps` frames/s round robin over `ids` slots; `mapped` slots carry the demo car's own frames
//! (captured from its body controller, so the daemon decodes real payloads), the others ids
//! the vehicle does not read. CPU is utime + stime from `/proc/<pid>/stat` over the window;
//! frames are each process's own count over the same window.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use telematics_admin::Request;
use telematics_can::{CanFrame, CanId, parse_line};
use tokio::io::AsyncBufReadExt;

use crate::procstat;
use crate::single::{can_counter, spawn_ready, world};

/// First id of the slots the vehicle does not read (0x300.. is free in the demo DBC).
const UNMAPPED_BASE: u16 = 0x300;

/// Bus-load parameters.
#[derive(Debug, Clone, Copy)]
pub struct BusLoadParams {
    /// Frames per second sent by the generator.
    pub fps: u32,
    /// Id slots in the round robin.
    pub ids: usize,
    /// Slots that carry frames the vehicle reads (the demo car's own frames).
    pub mapped: usize,
    /// Measurement window (s).
    pub secs: u64,
}

/// CPU of one process over the window and the frames it received in it.
#[derive(Debug, Clone, Copy)]
pub struct PerFrame {
    /// CPU in percent of one core.
    pub cpu_pct: f64,
    /// Frames received in the window.
    pub frames: u64,
    /// CPU per received frame (µs).
    pub us_per_frame: f64,
    /// Voluntary context switches (thread sleeps, so wakeups) per second, all threads.
    pub wakeups_per_s: f64,
}

impl PerFrame {
    fn new(ticks: u64, tck: u64, secs: f64, frames: u64, switches: u64) -> PerFrame {
        let cpu_s = ticks as f64 / tck as f64;
        PerFrame {
            cpu_pct: procstat::cpu_percent(ticks, secs, tck),
            wakeups_per_s: switches as f64 / secs,
            frames,
            us_per_frame: if frames > 0 {
                cpu_s * 1e6 / frames as f64
            } else {
                f64::NAN
            },
        }
    }
}

/// Bus-load figures.
pub struct BusLoadReport {
    /// Window length (s).
    pub secs: f64,
    /// Frames the generator sent per second in the window.
    pub sent_per_s: f64,
    /// Distinct ids of the demo car's frames in the mapped slots.
    pub mapped_ids: usize,
    /// The daemon.
    pub daemon: PerFrame,
    /// The plain reader.
    pub reader: PerFrame,
    /// mosquitto, CPU in percent of one core.
    pub mosquitto_pct: f64,
    /// This process (hub, generator, body controller, back end), percent of one core.
    pub harness_pct: f64,
    /// Deliveries the hub dropped in the window (a member's queue full).
    pub hub_dropped: u64,
    /// Frames the daemon dropped in the window (its frame queue to the core full).
    pub daemon_dropped: u64,
}

/// The plain reader (hidden subcommand `bus-reader`): connects to the hub at `addr`, reads
/// and parses every line, discards the frame. Each line on stdin is answered on stdout with
/// the number of frames received so far; end of stdin ends the process.
pub async fn plain_reader(addr: SocketAddr) -> Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => println!("{}", c.load(Ordering::Relaxed)),
            }
        }
    });
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let mut rd = tokio::io::BufReader::new(stream);
    let mut line = String::with_capacity(128);
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            bail!("bus closed");
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        let frame = parse_line(text).map_err(|e| anyhow::anyhow!("bad line {text:?}: {e}"))?;
        let _frame = std::hint::black_box(frame);
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The plain reader child process, killed on drop.
struct ReaderProc {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::BufReader<ChildStdout>,
}

impl ReaderProc {
    fn spawn(addr: SocketAddr, daemon: &Path) -> Result<ReaderProc> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut child = Command::new(exe)
            .arg("--daemon")
            .arg(daemon)
            .args(["bus-reader", "--addr", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn the plain reader")?;
        let stdin = child.stdin.take().context("reader stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().context("reader stdout")?);
        Ok(ReaderProc {
            child,
            stdin,
            stdout,
        })
    }

    /// Frames the reader received so far.
    fn frames(&mut self) -> Result<u64> {
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        let mut line = String::new();
        ensure!(self.stdout.read_line(&mut line)? > 0, "plain reader exited");
        line.trim().parse().context("reader count")
    }
}

impl Drop for ReaderProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The generator's round robin: `mapped` slots cycling through `demo` (the demo car's own
/// frames), the rest ids the vehicle does not read, 8 bytes each.
fn slots(demo: &[CanFrame], ids: usize, mapped: usize) -> Vec<(CanFrame, bool)> {
    let mut out = Vec::with_capacity(ids);
    let mut unmapped = 0u16;
    for i in 0..ids {
        // Spread the mapped slots evenly over the round robin.
        let is_mapped =
            !demo.is_empty() && mapped > 0 && i * mapped / ids != (i + 1) * mapped / ids;
        if is_mapped {
            let mut f = demo[(i * mapped / ids) % demo.len()].clone();
            f.timestamp_us = None;
            out.push((f, true));
        } else {
            let id = CanId::standard(UNMAPPED_BASE + unmapped);
            unmapped += 1;
            out.push((CanFrame::new(id, &[0x5A; 8]), false));
        }
    }
    out
}

/// The daemon's `can` counters (`frames`, `dropped`) from its admin status.
async fn daemon_counters(w: &telematics_it::World) -> Result<(u64, u64)> {
    let s = w.admin(Request::Status).await;
    Ok((
        can_counter(&s, "frames").context("no frame count in status")?,
        can_counter(&s, "dropped").context("no drop count in status")?,
    ))
}

/// Runs the bus-load scenario.
pub async fn run(bin: &Path, p: BusLoadParams) -> Result<BusLoadReport> {
    ensure!(
        p.ids > 0 && p.mapped <= p.ids,
        "need 0 <= mapped <= ids, ids > 0"
    );
    ensure!(
        p.ids - p.mapped <= 0x7FF - usize::from(UNMAPPED_BASE),
        "too many unmapped ids"
    );
    let w = world(bin, 100_000, 60).await?;
    // The demo car's own frames: what its body controller sends in 1.5 s, one per payload.
    let mut tap = w.bus_node();
    let mut demo: Vec<CanFrame> = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(Ok(f)) = tokio::time::timeout_at(until.into(), tap.recv_frame()).await {
        if !demo.iter().any(|d| d.id == f.id && d.data == f.data) {
            demo.push(f);
        }
    }
    drop(tap);
    ensure!(!demo.is_empty(), "the body controller sent no frames");
    let mut mapped_ids: Vec<u32> = demo.iter().map(|f| f.id).collect();
    mapped_ids.sort_unstable();
    mapped_ids.dedup();

    let (mut d, _) = spawn_ready(&w, bin).await?;
    let mut reader = ReaderProc::spawn(w.bus_addr, bin)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.bus_stats().clients < 2 {
        ensure!(Instant::now() < deadline, "plain reader did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The generator: `fps` frames/s round robin over the slots in 1 ms ticks (the frames due
    // since its start are sent at each tick, so the rate holds under scheduling jitter).
    let node = w.bus_node();
    let mut slots = slots(&demo, p.ids, p.mapped);
    let (fps, sent_g, stop_g) = (f64::from(p.fps), sent.clone(), stop.clone());
    let gen_task = tokio::spawn(async move {
        let t0 = Instant::now();
        let (mut n, mut k) = (0u64, 0usize);
        while !stop_g.load(Ordering::Relaxed) {
            let due = (t0.elapsed().as_secs_f64() * fps) as u64;
            while n < due {
                let (f, mapped) = &mut slots[k];
                if !*mapped {
                    // A changing payload, like a live bus.
                    f.data[0] = n as u8;
                }
                node.send_frame(f)
                    .await
                    .map_err(|e| anyhow::anyhow!("generator: {e}"))?;
                k = (k + 1) % slots.len();
                n += 1;
            }
            sent_g.store(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        anyhow::Ok(())
    });
    // Warm-up: connections, buffers and the daemon's state settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let tck = procstat::clk_tck()?;
    let mosq = procstat::our_mosquitto()?;
    let pids = [d.pid(), reader.child.id(), mosq, std::process::id()];
    let ticks = || -> Result<Vec<u64>> {
        pids.iter()
            .map(|p| Ok(procstat::stat(*p)?.cpu_ticks))
            .collect()
    };
    let switches = || -> Result<[u64; 2]> {
        Ok([
            procstat::voluntary_switches(pids[0])?,
            procstat::voluntary_switches(pids[1])?,
        ])
    };
    let (df0, dd0) = daemon_counters(&w).await?;
    let rf0 = reader.frames()?;
    let hub0 = w.bus_stats();
    let s0 = sent.load(Ordering::Relaxed);
    let w0 = switches()?;
    let c0 = ticks()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(p.secs)).await;
    let c1 = ticks()?;
    let el = t0.elapsed().as_secs_f64();
    let w1 = switches()?;
    let s1 = sent.load(Ordering::Relaxed);
    let hub1 = w.bus_stats();
    let rf1 = reader.frames()?;
    let (df1, dd1) = daemon_counters(&w).await?;

    stop.store(true, Ordering::Relaxed);
    gen_task.await??;
    drop(reader);
    d.stop(Duration::from_secs(15)).await?;

    let dt = |i: usize| c1[i].saturating_sub(c0[i]);
    Ok(BusLoadReport {
        secs: el,
        sent_per_s: (s1 - s0) as f64 / el,
        mapped_ids: mapped_ids.len(),
        daemon: PerFrame::new(dt(0), tck, el, df1 - df0, w1[0].saturating_sub(w0[0])),
        reader: PerFrame::new(dt(1), tck, el, rf1 - rf0, w1[1].saturating_sub(w0[1])),
        mosquitto_pct: procstat::cpu_percent(dt(2), el, tck),
        harness_pct: procstat::cpu_percent(dt(3), el, tck),
        hub_dropped: hub1.frames_dropped - hub0.frames_dropped,
        daemon_dropped: dd1 - dd0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_the_mapped_frames() {
        let demo = [
            CanFrame::new(CanId::standard(0x100), &[1; 8]),
            CanFrame::new(CanId::standard(0x101), &[2; 8]),
        ];
        let s = slots(&demo, 200, 20);
        assert_eq!(s.len(), 200);
        assert_eq!(s.iter().filter(|(_, m)| *m).count(), 20);
        // 180 distinct unmapped ids, none of them a demo id.
        let mut un: Vec<u32> = s.iter().filter(|(_, m)| !*m).map(|(f, _)| f.id).collect();
        un.sort_unstable();
        un.dedup();
        assert_eq!(un.len(), 180);
        assert!(un.iter().all(|id| *id >= u32::from(UNMAPPED_BASE)));
        // Both demo frames are used, evenly.
        let n100 = s.iter().filter(|(f, m)| *m && f.id == 0x100).count();
        assert_eq!(n100, 10);
        // No two mapped slots in a row (spread over the round robin).
        assert!(s.windows(2).all(|w| !(w[0].1 && w[1].1)));
    }
}
