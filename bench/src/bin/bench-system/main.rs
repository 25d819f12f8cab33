//! System benchmarks of telematicsd (see BENCHMARKS.md; `scripts/bench-system.sh` runs them
//! all). Each subcommand prints Markdown table rows `| Figure | Value | Peer / ratio | Command |`
//! on stdout; progress goes to stderr.
//!
//! The daemon under test is a release build of the shipped binary, passed with `--daemon`
//! (`cargo build --release -p telematicsd`), never the debug/failpoints wrapper of the
//! end-to-end tests.

mod busload;
mod fleet;
mod flood;
mod mqtt;
mod procstat;
mod single;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "bench-system", about = "System benchmarks of telematicsd")]
struct Cli {
    /// The telematicsd executable (release build).
    #[arg(long, global = true, default_value = "target/release/telematicsd")]
    daemon: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Command round trip (lock/unlock -> executed, door open -> rejected) at two PBKDF2
    /// iteration counts, against an MQTT echo through the same broker.
    Rtt {
        /// Lock/unlock commands per iteration count.
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Rejected (door open) commands per iteration count.
        #[arg(long, default_value_t = 50)]
        rejected: usize,
        /// PBKDF2 iteration counts; the first is the reference of the ratio.
        #[arg(long, value_delimiter = ',', default_value = "600000,100000")]
        iterations: Vec<u32>,
    },
    /// One connected daemon with the demo car on the bus: CPU and memory over a window.
    Idle {
        /// Window (s).
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// Process spawn -> admin socket answers / retained `online` at the back end.
    ColdStart {
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// A valid command behind a flood of garbage / AEAD-failing envelopes, against the same
    /// command unloaded.
    Flood {
        /// Messages in front of each measured command.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Measured commands per load.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// PBKDF2 iterations of the daemon.
        #[arg(long, default_value_t = 600_000)]
        iterations: u32,
    },
    /// CPU per received CAN frame at a bus load on the TCP bus: the daemon against a plain
    /// reader of the same bus, in the same run.
    BusLoad {
        /// Frames per second on the bus.
        #[arg(long, default_value_t = 4000)]
        fps: u32,
        /// Distinct id slots (round robin).
        #[arg(long, default_value_t = 200)]
        ids: usize,
        /// Slots carrying frames the vehicle reads (the demo car's own frames).
        #[arg(long, default_value_t = 20)]
        mapped: usize,
        /// Measurement window (s).
        #[arg(long, default_value_t = 20)]
        secs: u64,
    },
    /// The plain reader of `bus-load` (spawned by it): reads and parses every frame of the
    /// TCP bus at `addr` and discards it; a line on stdin is answered with the frame count.
    #[command(hide = true)]
    BusReader {
        /// The hub's address.
        #[arg(long)]
        addr: SocketAddr,
    },
    /// N daemons against one mosquitto.
    Fleet {
        /// Number of daemons.
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Measurement window once all are online (s).
        #[arg(long, default_value_t = 60)]
        window: u64,
        /// Telemetry period of every daemon (s).
        #[arg(long, default_value_t = 10)]
        period: u64,
        /// Random vehicles that get commands (unlock + lock each) during the run.
        #[arg(long, default_value_t = 5)]
        commands: usize,
        /// Skip the broker restart (reconnect spread) at the end.
        #[arg(long)]
        no_restart: bool,
    },
}

fn row(figure: &str, value: &str, peer: &str, cmd: &str) {
    println!("| {figure} | {value} | {peer} | `{cmd}` |");
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    ensure!(procstat::available(), "/proc is not mounted");
    ensure!(
        cli.daemon.is_file(),
        "daemon binary {} not found (cargo build --release -p telematicsd)",
        cli.daemon.display()
    );
    let daemon = std::fs::canonicalize(&cli.daemon)?;
    match cli.cmd {
        Cmd::Rtt {
            n,
            rejected,
            iterations,
        } => {
            let cmd = format!("bench-system rtt --n {n} --rejected {rejected}");
            let mut reports = Vec::new();
            for it in &iterations {
                eprintln!("rtt: {n} commands + {rejected} rejected at {it} PBKDF2 iterations");
                let r = single::rtt(&daemon, *it, n, rejected).await?;
                eprintln!(
                    "  executed {} | accepted {} | rejected {} | echo {} | echo (QoS 1) {} | pbkdf2 {:.1} ms",
                    r.executed, r.accepted, r.rejected, r.echo, r.echo_qos1, r.pbkdf2_ms
                );
                reports.push(r);
            }
            let base = &reports[0];
            for r in &reports {
                let e = &r.executed;
                row(
                    &format!("command RTT -> `executed`, PBKDF2 {}", r.iterations),
                    &format!(
                        "p50 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
                        e.p50, e.p99, e.max, e.n
                    ),
                    &format!(
                        "MQTT echo (floor) p50 {:.1} / p99 {:.1} ms; daemon adds **{:.1} ms** at p50, of which PBKDF2 alone {:.1} ms; p50 = {:.2}x the PBKDF2 {} p50 (echo with the command at QoS 1: p50 {:.1} ms, Nagle)",
                        r.echo.p50,
                        r.echo.p99,
                        e.p50 - r.echo.p50,
                        r.pbkdf2_ms,
                        ratio(e.p50, base.executed.p50),
                        base.iterations,
                        r.echo_qos1.p50,
                    ),
                    &cmd,
                );
                row(
                    &format!("command RTT -> `accepted`, PBKDF2 {}", r.iterations),
                    &format!(
                        "p50 {:.1} / p99 {:.1} / max {:.1} ms",
                        r.accepted.p50, r.accepted.p99, r.accepted.max
                    ),
                    &format!(
                        "`accepted` -> `executed` per command: p50 {:.1} / p99 {:.1} ms (actuation, bus confirmation, second result)",
                        r.gap.p50, r.gap.p99
                    ),
                    &cmd,
                );
                let j = &r.rejected;
                row(
                    &format!(
                        "command RTT -> `rejected` (door_open), PBKDF2 {}",
                        r.iterations
                    ),
                    &format!(
                        "p50 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
                        j.p50, j.p99, j.max, j.n
                    ),
                    &format!("MQTT echo p50 {:.1} ms", r.echo.p50),
                    &cmd,
                );
            }
        }
        Cmd::Flood {
            n,
            rounds,
            iterations,
        } => {
            eprintln!("flood: {rounds} commands per load behind {n} messages, PBKDF2 {iterations}");
            let r = flood::run(&daemon, iterations, n, rounds).await?;
            let cmd = format!("bench-system flood --n {n} --rounds {rounds}");
            let base = r.rows[0].1;
            for (load, s) in &r.rows {
                let what = match load {
                    flood::Load::None => "command RTT, unloaded (reference)".to_string(),
                    flood::Load::Garbage => {
                        format!("command RTT behind {} garbage messages", r.flood)
                    }
                    flood::Load::ForgedAead => {
                        format!("command RTT behind {} AEAD-failing envelopes", r.flood)
                    }
                };
                row(
                    &format!("{what}, PBKDF2 {}", r.iterations),
                    &format!(
                        "p50 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
                        s.p50, s.p99, s.max, s.n
                    ),
                    &format!("**{:.2}x** the unloaded p50", ratio(s.p50, base.p50)),
                    &cmd,
                );
            }
        }
        Cmd::Idle { secs } => {
            eprintln!("idle: {secs} s");
            let r = single::idle(&daemon, secs).await?;
            let cmd = format!("bench-system idle --secs {secs}");
            row(
                "daemon idle CPU (connected, demo car on the bus)",
                &format!(
                    "{:.2} % of one core over {:.0} s ({:.0} CAN frames/s, {} telemetry msgs)",
                    r.daemon.cpu_pct, r.secs, r.frames_per_s, r.telemetry_msgs
                ),
                &format!("mosquitto {:.2} %", r.mosquitto.cpu_pct),
                &cmd,
            );
            row(
                "daemon idle RSS (VmRSS / VmHWM / PSS)",
                &format!(
                    "{} / {} / {}",
                    mib(r.daemon.mem.rss_kib as f64),
                    mib(r.daemon.mem.hwm_kib as f64),
                    mib(r.daemon.mem.pss_kib as f64)
                ),
                &format!(
                    "mosquitto {} / {} / {}",
                    mib(r.mosquitto.mem.rss_kib as f64),
                    mib(r.mosquitto.mem.hwm_kib as f64),
                    mib(r.mosquitto.mem.pss_kib as f64)
                ),
                &cmd,
            );
        }
        Cmd::BusLoad {
            fps,
            ids,
            mapped,
            secs,
        } => {
            eprintln!("bus load: {fps} frames/s over {ids} ids ({mapped} mapped), {secs} s");
            let p = busload::BusLoadParams {
                fps,
                ids,
                mapped,
                secs,
            };
            let r = busload::run(&daemon, p).await?;
            let cmd = format!(
                "bench-system bus-load --fps {fps} --ids {ids} --mapped {mapped} --secs {secs}"
            );
            eprintln!(
                "  daemon {:.2} % ({} frames, dropped {}) | reader {:.2} % ({} frames) | mosquitto {:.2} % | harness {:.2} % | hub dropped {}",
                r.daemon.cpu_pct,
                r.daemon.frames,
                r.daemon_dropped,
                r.reader.cpu_pct,
                r.reader.frames,
                r.mosquitto_pct,
                r.harness_pct,
                r.hub_dropped
            );
            row(
                &format!(
                    "daemon CPU per received CAN frame, TCP bus at {fps} frames/s, {ids} id slots ({mapped} carrying the demo car's {} mapped ids)",
                    r.mapped_ids
                ),
                &format!(
                    "{:.2} µs/frame ({:.2} % of one core, {:.0} frames/s received over {:.0} s)",
                    r.daemon.us_per_frame,
                    r.daemon.cpu_pct,
                    r.daemon.frames as f64 / r.secs,
                    r.secs
                ),
                &format!(
                    "plain reader {:.2} µs/frame ({:.2} %): **{:.2}x**; wakeups/s daemon {:.0} / reader {:.0}; generator sent {:.0} frames/s; drops hub {} / daemon {}; mosquitto {:.2} %",
                    r.reader.us_per_frame,
                    r.reader.cpu_pct,
                    ratio(r.daemon.us_per_frame, r.reader.us_per_frame),
                    r.daemon.wakeups_per_s,
                    r.reader.wakeups_per_s,
                    r.sent_per_s,
                    r.hub_dropped,
                    r.daemon_dropped,
                    r.mosquitto_pct
                ),
                &cmd,
            );
        }
        // Same runtime as the daemon (multi-thread, 2 workers).
        Cmd::BusReader { addr } => busload::plain_reader(addr).await?,
        Cmd::ColdStart { runs } => {
            eprintln!("cold start: {runs} runs");
            let r = single::cold_start(&daemon, runs).await?;
            let cmd = format!("bench-system cold-start --runs {runs}");
            let sum = |v: &[Duration]| stats::summarize(v);
            if let (Some(a), Some(o)) = (sum(&r.admin), sum(&r.online)) {
                eprintln!("  admin {a} | online {o}");
                row(
                    "cold start: spawn -> retained `online` at the back end",
                    &format!("median {:.1} ms (max {:.1}, n={})", o.p50, o.max, o.n),
                    "—",
                    &cmd,
                );
                row(
                    "cold start: spawn -> admin socket answers",
                    &format!("median {:.1} ms (max {:.1}, n={})", a.p50, a.max, a.n),
                    "—",
                    &cmd,
                );
            }
        }
        Cmd::Fleet {
            n,
            window,
            period,
            commands,
            no_restart,
        } => {
            eprintln!("fleet: {n} daemons, window {window} s, telemetry every {period} s");
            let r = fleet::run(
                &daemon,
                fleet::FleetParams {
                    n,
                    telemetry_period_s: period,
                    window_s: window,
                    command_vehicles: commands,
                    iterations: 600_000,
                    restart: !no_restart,
                },
            )
            .await?;
            let cmd = format!(
                "bench-system fleet --n {n} --window {window} --period {period} --commands {commands}{}",
                if no_restart { " --no-restart" } else { "" }
            );
            row(
                &format!("fleet N={n}: spawn -> all online"),
                &ms(r.all_online),
                &format!(
                    "per vehicle p50 {:.0} / p99 {:.0} ms; provisioning (rcgen certs + config) {}",
                    r.online.p50,
                    r.online.p99,
                    ms(r.provision)
                ),
                &cmd,
            );
            row(
                &format!("fleet N={n}: per-agent RSS"),
                &format!(
                    "median {} / max {} (PSS median {}, total {})",
                    mib(r.rss_median_kib),
                    mib(r.rss_max_kib as f64),
                    mib(r.pss_median_kib),
                    mib(r.pss_total_kib as f64)
                ),
                &format!(
                    "mosquitto RSS {} (HWM {})",
                    mib(r.mosquitto.mem.rss_kib as f64),
                    mib(r.mosquitto.mem.hwm_kib as f64)
                ),
                &cmd,
            );
            row(
                &format!("fleet N={n}: CPU over {:.0} s", r.window_s),
                &format!(
                    "daemons {:.1} % of one core in total ({:.2} % each)",
                    r.daemons_cpu_pct,
                    r.daemons_cpu_pct / n as f64
                ),
                &format!(
                    "mosquitto {:.1} %; harness/back end {:.1} %",
                    r.mosquitto.cpu_pct, r.harness_cpu_pct
                ),
                &cmd,
            );
            row(
                &format!("fleet N={n}: messages at the broker"),
                &format!("{:.1} msg/s vehicles -> back end", r.msgs_per_s),
                &format!(
                    "expected from the telemetry period: {:.1} msg/s",
                    n as f64 / period as f64
                ),
                &cmd,
            );
            if let Some(rs) = &r.reconnect {
                eprintln!("  reconnect ms (sorted): {:?}", rs.sorted_ms);
                row(
                    &format!("fleet N={n}: broker restart -> every vehicle `online` again"),
                    &format!(
                        "p10 {:.0} / p50 {:.0} / p90 {:.0} / p99 {:.0} / max {:.0} ms after the broker is up ({} missing)",
                        rs.pct(10.0),
                        rs.pct(50.0),
                        rs.pct(90.0),
                        rs.pct(99.0),
                        rs.pct(100.0),
                        rs.missing
                    ),
                    &format!(
                        "{} of {n} back within 0.5 s, {} within 1 s; peak {} reconnects in 100 ms; broker down {}",
                        rs.within(500.0),
                        rs.within(1000.0),
                        rs.peak_per_100ms(),
                        ms(rs.downtime)
                    ),
                    &cmd,
                );
            }
            let c = r.commands.map_or_else(
                || "none".to_string(),
                |s| {
                    format!(
                        "p50 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
                        s.p50, s.p99, s.max, s.n
                    )
                },
            );
            row(
                &format!("fleet N={n}: command RTT -> `executed` (PBKDF2 600000)"),
                &c,
                &format!(
                    "{} failed{}; open-file limit {}",
                    r.command_failures.len(),
                    if r.command_failures.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.command_failures.join("; "))
                    },
                    r.nofile
                ),
                &cmd,
            );
        }
    }
    Ok(())
}
