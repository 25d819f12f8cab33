//! `telematicsctl sim`: a body controller on a bus, for the demo, the end-to-end tests and the
//! fleet benchmark on machines without kernel CAN. It plays the demo car, or any vehicle given
//! by its files (`--profile` and one `--bus NAME=HOST:PORT,DBC,MAPPING` per bus: the daemon's
//! files; one TCP virtual bus per `--bus`).
//!
//! By default it hosts a TCP virtual CAN bus (`--listen`, the daemon connects with
//! `can.source = "tcp"`, `can.interface = "<host:port>"`); with `--interface` it uses a
//! SocketCAN interface instead. It answers body commands, sends the periodic status frames and
//! can also replay a candump log onto the bus (`--replay`). Runs until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use telematics_can::demo::Gear;
use telematics_can::sim::{BodyController, SimEvent};
use telematics_canio::tcpbus::TcpBusHub;
use telematics_canio::{CanIoError, CanSink, CanSource, ReplayMode, ReplaySource};
use telematics_profile::sim::BusFiles;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Default `--listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:29536";
/// Highest `--speed-kmh` the demo DBC can encode (`VehicleSpeed`, 16 bit, factor 0.01).
pub const MAX_SPEED_KMH: f64 = 655.35;

/// A door of the demo car.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum Door {
    /// Front left (driver).
    Fl,
    /// Front right.
    Fr,
    /// Rear left.
    Rl,
    /// Rear right.
    Rr,
}

impl Door {
    fn index(self) -> usize {
        match self {
            Door::Fl => 0,
            Door::Fr => 1,
            Door::Rl => 2,
            Door::Rr => 3,
        }
    }
}

/// Gear selector position.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum GearArg {
    /// Park.
    P,
    /// Reverse.
    R,
    /// Neutral.
    N,
    /// Drive.
    D,
}

impl From<GearArg> for Gear {
    fn from(g: GearArg) -> Gear {
        match g {
            GearArg::P => Gear::P,
            GearArg::R => Gear::R,
            GearArg::N => Gear::N,
            GearArg::D => Gear::D,
        }
    }
}

/// One `--bus NAME=HOST:PORT,DBC,MAPPING` of a vehicle played from its files.
#[derive(Debug, Clone, PartialEq)]
pub struct BusArg {
    /// Bus name, as the profile names it.
    pub name: String,
    /// Where its TCP virtual bus listens.
    pub listen: SocketAddr,
    /// Its DBC file.
    pub dbc: PathBuf,
    /// Its VSS mapping file (TOML).
    pub mapping: PathBuf,
}

fn parse_bus(s: &str) -> Result<BusArg, String> {
    let usage = "expected NAME=HOST:PORT,DBC,MAPPING";
    let (name, rest) = s.split_once('=').ok_or(usage)?;
    let mut parts = rest.split(',');
    let (Some(addr), Some(dbc), Some(mapping), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(usage.into());
    };
    if name.is_empty() {
        return Err(usage.into());
    }
    Ok(BusArg {
        name: name.to_string(),
        listen: addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        dbc: dbc.into(),
        mapping: mapping.into(),
    })
}

/// Arguments of `telematicsctl sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Host a TCP virtual CAN bus on this address (daemon: `can.source = "tcp"`,
    /// `can.interface = "<this address>"`).
    #[arg(long, default_value = DEFAULT_LISTEN, conflicts_with = "interface")]
    pub listen: SocketAddr,
    /// Use this SocketCAN interface (e.g. `vcan0`) instead of a TCP bus.
    #[arg(long)]
    pub interface: Option<String>,
    /// Also replay this `candump -L` log onto the bus (frames are re-stamped with the send time).
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Replay speed factor (2.0 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Run no body controller (replay only; requires `--replay`).
    #[arg(long, requires = "replay")]
    pub no_body: bool,
    /// Receive commands but never acknowledge or execute them (the daemon times out).
    #[arg(long)]
    pub ignore_commands: bool,
    /// Send no periodic status frames (the daemon's state goes stale).
    #[arg(long)]
    pub silent: bool,
    /// Open a door (repeatable): FL, FR, RL, RR.
    #[arg(long, value_enum, ignore_case = true)]
    pub door_open: Vec<Door>,
    /// Open the hood.
    #[arg(long)]
    pub hood_open: bool,
    /// Put the key fob in the cabin.
    #[arg(long)]
    pub key_in_cabin: bool,
    /// Vehicle speed in km/h.
    #[arg(long, default_value_t = 0.0)]
    pub speed_kmh: f64,
    /// Gear: P, R, N, D.
    #[arg(long, value_enum, ignore_case = true, default_value = "P")]
    pub gear: GearArg,
    /// Acknowledge at once but change the state only after this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub actuation_delay_ms: u64,
    /// Play the vehicle of this profile (with `--bus`) instead of the demo car.
    #[arg(long, requires = "bus", conflicts_with_all = ["interface", "replay"])]
    pub profile: Option<PathBuf>,
    /// A bus of the `--profile` vehicle (repeatable): `NAME=HOST:PORT,DBC,MAPPING`, e.g.
    /// `body=127.0.0.1:29536,car.dbc,body_vss.toml`; the daemon's `[[can.bus]]` entry of that
    /// name connects to `HOST:PORT` with `source = "tcp"`.
    #[arg(long, requires = "profile", value_parser = parse_bus)]
    pub bus: Vec<BusArg>,
    /// The SecOC key file of the `--profile` vehicle's authenticated commands (16 bytes or 32
    /// hex digits, the daemon's `[can] secoc_key`): their MAC and freshness are verified.
    #[arg(long, requires = "profile")]
    pub secoc_key: Option<PathBuf>,
}

/// The body controller of `--profile` and its `--bus` files, or the demo car.
fn vehicle(args: &SimArgs) -> anyhow::Result<BodyController> {
    let Some(profile) = &args.profile else {
        return Ok(BodyController::demo());
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let profile = read(profile)?;
    let texts = args
        .bus
        .iter()
        .map(|b| Ok((read(&b.dbc)?, read(&b.mapping)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let buses: Vec<BusFiles<'_>> = args
        .bus
        .iter()
        .zip(&texts)
        .map(|(b, (dbc, mapping))| BusFiles {
            name: &b.name,
            dbc,
            mapping,
        })
        .collect();
    let mut car = telematics_profile::sim::body_controller(&profile, &buses)?;
    if let Some(path) = &args.secoc_key {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let key = telematics_can::protection::SecOcKey::from_file_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("--secoc-key {}: {e}", path.display()))?;
        car.set_secoc_key(key);
    }
    Ok(car)
}

/// The body controller described by `args` (demo car, parked and locked, then the options).
pub fn controller(args: &SimArgs) -> anyhow::Result<BodyController> {
    if !(args.speed_kmh.is_finite() && (0.0..=MAX_SPEED_KMH).contains(&args.speed_kmh)) {
        bail!(
            "--speed-kmh {} is outside 0..={MAX_SPEED_KMH}",
            args.speed_kmh
        );
    }
    let mut c = vehicle(args)?;
    c.ignore_commands = args.ignore_commands;
    c.silent = args.silent;
    c.actuation_delay_ms = args.actuation_delay_ms;
    let car = c.car_mut();
    for d in &args.door_open {
        if let Some(open) = car.doors_open.get_mut(d.index()) {
            *open = true;
        }
    }
    car.hood_open = args.hood_open;
    car.key_in_cabin = args.key_in_cabin;
    car.speed_kmh = args.speed_kmh;
    car.gear = args.gear.into();
    Ok(c)
}

/// Runs `controller` on `port` until `shutdown`, printing one line per command and state
/// change (`sim: LOCK (ctr 3) -> doors locked`). The same loop as
/// [`telematics_canio::run_body_controller`]; see there for the return value.
pub async fn serve<P>(
    controller: Arc<Mutex<BodyController>>,
    port: P,
    shutdown: CancellationToken,
) -> Result<(), CanIoError>
where
    P: CanSource + CanSink + 'static,
{
    telematics_canio::run_body_controller_with(controller, port, shutdown, |e: &SimEvent| {
        println!("sim: {e}");
    })
    .await
}

/// `telematicsctl sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.replay.is_some() && !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, not {}", args.speed);
    }
    let controller = Arc::new(Mutex::new(controller(&args)?));
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let shutdown_on = shutdown.clone();

    let hubs = match &args.interface {
        _ if args.profile.is_some() => {
            let mut hubs = Vec::new();
            let mut ports = Vec::new();
            for b in &args.bus {
                let hub = TcpBusHub::bind(b.listen)
                    .await
                    .with_context(|| format!("listening on {} (bus {})", b.listen, b.name))?;
                println!(
                    "sim: bus {name} on TCP virtual CAN bus {addr} (telematicsd: [[can.bus]] \
                     name = \"{name}\", source = \"tcp\", interface = \"{addr}\")",
                    name = b.name,
                    addr = hub.local_addr()
                );
                ports.push((b.name.clone(), hub.local_node()));
                hubs.push(hub);
            }
            let c = controller.clone();
            tasks.spawn(async move {
                telematics_canio::sim::run_body_controller_on_buses(c, ports, shutdown_on, |e| {
                    println!("sim: {e}");
                })
                .await
                .context("body controller bus")
            });
            hubs
        }
        Some(iface) => {
            println!("sim: demo car on SocketCAN {iface}");
            if !args.no_body {
                let port = telematics_canio::socket::open(iface)
                    .with_context(|| format!("opening CAN interface {iface}"))?;
                tasks.spawn(body(controller.clone(), port, shutdown.clone()));
            }
            if let Some(path) = &args.replay {
                let sink = telematics_canio::socket::open(iface)
                    .with_context(|| format!("opening CAN interface {iface}"))?;
                tasks.spawn(replay(path.clone(), args.speed, sink, shutdown.clone()));
            }
            Vec::new()
        }
        None => {
            let hub = TcpBusHub::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            println!(
                "sim: demo car on TCP virtual CAN bus {addr} (telematicsd: can.source = \"tcp\", \
                 can.interface = \"{addr}\")",
                addr = hub.local_addr()
            );
            let node = hub.local_node();
            if let Some(path) = &args.replay {
                tasks.spawn(replay(
                    path.clone(),
                    args.speed,
                    node.sender(),
                    shutdown.clone(),
                ));
            }
            if args.no_body {
                tasks.spawn(drain(node, shutdown.clone()));
            } else {
                tasks.spawn(body(controller.clone(), node, shutdown.clone()));
            }
            vec![hub]
        }
    };
    if !args.no_body {
        print_car(&*controller.lock().await);
    }

    let mut failure = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            done = tasks.join_next(), if !tasks.is_empty() => match done {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => {
                    failure = Some(e);
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(anyhow::anyhow!("simulator task failed: {e}"));
                    break;
                }
            },
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    if hubs.is_empty() {
        println!("sim: stopped");
    }
    for hub in hubs {
        let s = hub.stats();
        hub.shutdown();
        println!(
            "sim: stopped; bus {}: {} frames in, {} delivered, {} dropped for slow clients, {} \
             bad lines",
            hub.local_addr(),
            s.frames_received,
            s.frames_forwarded,
            s.frames_dropped,
            s.bad_lines
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_car(c: &BodyController) {
    let car = c.car();
    let doors: Vec<&str> = ["FL", "FR", "RL", "RR"]
        .iter()
        .zip(car.doors_open.iter())
        .filter(|(_, open)| **open)
        .map(|(n, _)| *n)
        .collect();
    println!(
        "sim: car: gear {:?}, {:.1} km/h, engine {}, doors {}, open: {}{}{}{}",
        car.gear,
        car.speed_kmh,
        if car.engine_running { "running" } else { "off" },
        if car
            .locks
            .iter()
            .all(|l| *l == telematics_can::demo::LockState::Locked)
        {
            "locked"
        } else {
            "unlocked"
        },
        if doors.is_empty() {
            "none".to_string()
        } else {
            doors.join(",")
        },
        if car.hood_open { ", hood open" } else { "" },
        if car.key_in_cabin {
            ", key in cabin"
        } else {
            ""
        },
        match (c.ignore_commands, c.silent) {
            (true, true) => " [ignoring commands, silent]",
            (true, false) => " [ignoring commands]",
            (false, true) => " [silent]",
            (false, false) => "",
        }
    );
}

async fn body<P>(
    controller: Arc<Mutex<BodyController>>,
    port: P,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    P: CanSource + CanSink + 'static,
{
    serve(controller, port, shutdown)
        .await
        .context("body controller bus")
}

/// Keeps a replay-only node's receive queue empty (the hub would count drops otherwise).
async fn drain<P: CanSource>(mut port: P, shutdown: CancellationToken) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = port.recv() => match r {
                Ok(Some(_)) => {}
                Ok(None) | Err(CanIoError::Closed) => return Ok(()),
                Err(e) => return Err(e).context("bus"),
            },
        }
    }
}

async fn replay<S: CanSink>(
    path: PathBuf,
    speed: f64,
    sink: S,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut src = ReplaySource::open(&path, ReplayMode::RealTime { speed })
        .await
        .with_context(|| format!("opening replay log {}", path.display()))?;
    println!("sim: replaying {} at {speed}x", path.display());
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            f = src.next_frame() => f,
        };
        let Some(mut frame) = frame else { break };
        // a live bus: receivers see the send time, not the 2023 log time
        frame.timestamp_us = None;
        sink.send(&frame).await.context("replay onto the bus")?;
    }
    println!(
        "sim: replay of {} finished: {} frames, {} garbage lines skipped",
        path.display(),
        src.delivered(),
        src.garbage_count()
    );
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("sim: cannot watch SIGTERM: {e}");
            None
        }
    };
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.sim)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen, DEFAULT_LISTEN.parse::<SocketAddr>().unwrap());
        assert_eq!((a.interface, a.replay, a.no_body), (None, None, false));
        assert_eq!(a.speed, 1.0);
        assert_eq!(a.gear, GearArg::P);
        let c = controller(&parse(&[]).unwrap()).unwrap();
        assert_eq!(c.car(), BodyController::demo().car());
        assert!(!c.ignore_commands && !c.silent && c.actuation_delay_ms == 0);
    }

    #[test]
    fn knobs_reach_the_controller() {
        let a = parse(&[
            "--door-open",
            "FL",
            "--door-open",
            "rr",
            "--hood-open",
            "--key-in-cabin",
            "--speed-kmh",
            "12.5",
            "--gear",
            "d",
            "--ignore-commands",
            "--silent",
            "--actuation-delay-ms",
            "250",
        ])
        .unwrap();
        let c = controller(&a).unwrap();
        let car = c.car();
        assert_eq!(car.doors_open, [true, false, false, true]);
        assert!(car.hood_open && car.key_in_cabin);
        assert_eq!(car.speed_kmh, 12.5);
        assert_eq!(car.gear, Gear::D);
        assert!(c.ignore_commands && c.silent);
        assert_eq!(c.actuation_delay_ms, 250);
    }

    #[test]
    fn invalid_combinations_are_refused() {
        assert!(parse(&["--no-body"]).is_err(), "--no-body needs --replay");
        assert!(parse(&["--listen", "127.0.0.1:1", "--interface", "vcan0"]).is_err());
        assert!(parse(&["--door-open", "XX"]).is_err());
        assert!(parse(&["--gear", "S"]).is_err());
        assert!(parse(&["--interface", "vcan0"]).is_ok());
        assert!(parse(&["--no-body", "--replay", "x.log"]).is_ok());
        for bad in ["-1", "700", "NaN", "inf"] {
            let a = parse(&[&format!("--speed-kmh={bad}")]).unwrap();
            assert!(controller(&a).is_err(), "{bad}");
        }
    }

    #[test]
    fn plays_car_b_from_its_files_on_two_buses() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../telematics-can/data");
        let bus = |name: &str, map: &str| {
            format!("{name}=127.0.0.1:0,{data}/test_car_b.dbc,{data}/test_car_b_{map}_vss.toml")
        };
        let profile = format!("{data}/test_car_b_profile.toml");
        let a = parse(&[
            "--profile",
            &profile,
            "--bus",
            &bus("body", "body"),
            "--bus",
            &bus("powertrain", "powertrain"),
            "--door-open",
            "FL",
        ])
        .unwrap();
        assert_eq!(a.bus.len(), 2);
        assert_eq!(a.bus[1].name, "powertrain");
        let mut c = controller(&a).unwrap();
        assert!(c.car().doors_open[0], "the knobs apply to any vehicle");
        assert_eq!(c.refusal_code("low_battery"), Some(16), "car B's code");
        let frames = c.tick(0);
        let buses: Vec<_> = frames.iter().map(|f| c.bus_of(f)).collect();
        assert_eq!(buses, vec![Some("body"), Some("powertrain")]);
        // The wrong mapping for the profile is refused, naming what is wrong.
        let only_body = parse(&["--profile", &profile, "--bus", &bus("body", "body")]).unwrap();
        assert!(controller(&only_body).is_err(), "powertrain bus missing");
        // A SecOC key for the profile's authenticated commands: 16 bytes or 32 hex digits.
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = (dir.path().join("good.key"), dir.path().join("bad.key"));
        std::fs::write(&good, "2b".repeat(16)).unwrap();
        std::fs::write(&bad, "too short").unwrap();
        let with_key = |k: &std::path::Path| {
            let k = k.display().to_string();
            let (b, p) = (bus("body", "body"), bus("powertrain", "powertrain"));
            let args = [
                "--profile",
                &profile,
                "--bus",
                &b,
                "--bus",
                &p,
                "--secoc-key",
                &k,
            ];
            controller(&parse(&args).unwrap())
        };
        assert!(with_key(&good).is_ok());
        let e = with_key(&bad).err().unwrap().to_string();
        assert!(e.contains("--secoc-key") && e.contains("bad.key"), "{e}");
        assert!(parse(&["--secoc-key", "k"]).is_err(), "needs --profile");
        for bad in [
            "body",
            "=1.2.3.4:5,a,b",
            "body=nowhere,a,b",
            "body=1.2.3.4:5,a",
        ] {
            assert!(parse_bus(bad).is_err(), "{bad}");
        }
        assert!(
            parse(&["--bus", &bus("body", "body")]).is_err(),
            "needs --profile"
        );
        assert!(parse(&["--profile", &profile]).is_err(), "needs --bus");
    }

    #[tokio::test]
    async fn replay_only_bus_delivers_the_log_to_clients() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(
            &log,
            "(1.000000) can0 101#01\ngarbage\n(1.010000) can0 102#02\n",
        )
        .unwrap();
        let hub = TcpBusHub::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut client = telematics_canio::TcpBusClient::connect(hub.local_addr())
            .await
            .unwrap();
        let node = hub.local_node();
        let stop = CancellationToken::new();
        let sender = node.sender();
        tokio::spawn(drain(node, stop.clone()));
        replay(log, 10.0, sender, stop.clone()).await.unwrap();
        let a = client.recv_frame().await.unwrap();
        let b = client.recv_frame().await.unwrap();
        assert_eq!((a.id, b.id), (0x101, 0x102));
        assert!(
            a.timestamp_us.unwrap() > 1_700_000_000_000_000,
            "re-stamped"
        );
        stop.cancel();
    }
}
