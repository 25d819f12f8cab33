//! `telematicsctl demo`: the whole system on one machine, narrated.
//!
//! Starts mosquitto with freshly generated mutual-TLS certificates on loopback (the same broker
//! configuration as the integration tests: `require_certificate`, identity as user name, per-VIN
//! ACL), the simulated demo car on an in-process CAN bus, the daemon with embedded defaults
//! (production PBKDF2 cost, lockout after 3 wrong codes), and then plays an owner session:
//! pairing in the car, remote unlock/lock, wrong codes until the lockout, recovery through a
//! back-end-signed reset authorization confirmed in the car, re-pairing, and a remote start that
//! the daemon stops by itself when the run timer expires. Every step prints what the owner, the
//! back end and the car see.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ring::signature::KeyPair;
use telematics_admin::{self as admin, Request, Response, Secret};
use telematics_can::demo::LockState;
use telematics_can::sim::BodyController;
use telematics_link::TlsFiles;
use telematics_security::{Action, ExportedCredential};
use telematics_telemetry::CommandResult;
use telematics_testkit::{Mosquitto, TestPki};
use telematicsd::admin::AccessPolicy;
use telematicsd::{Config, Daemon};
use tokio::sync::Mutex;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::mqtt::MqttConn;
use crate::remote::{CommandOutcome, CommandSpec, format_result, send_command};
use crate::watch::{WatchSpec, WatchTopic, watch};

/// Options of the demo.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Keep the working directory (certificates, state, logs) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Remote-start run time in seconds (the daemon stops the engine after it).
    #[arg(long, default_value_t = 5)]
    pub run_secs: u32,
    /// Also show the pairing QR code.
    #[arg(long)]
    pub qr: bool,
    /// Daemon log filter (logs go to <workdir>/daemon.log).
    #[arg(long, default_value = "info")]
    pub log: String,
}

const VIN: &str = "1M8GDM9AXKP042788";
const CODE: &str = "2468";
const NEW_CODE: &str = "8025";

struct Narrator {
    t0: Instant,
    step: u32,
    steps: u32,
}

impl Narrator {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!(
            "\n[{:>5.1}s] ── step {}/{}: {title}",
            self.t0.elapsed().as_secs_f64(),
            self.step,
            self.steps
        );
    }
    fn say(&self, who: &str, what: &str) {
        println!(
            "[{:>5.1}s]   {who:<8} {what}",
            self.t0.elapsed().as_secs_f64()
        );
    }
}

/// Runs the demo on its own multi-threaded runtime; returns the process exit code.
pub fn main(args: DemoArgs) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn doors(car: &BodyController) -> &'static str {
    if car.car().locks.iter().all(|l| *l == LockState::Locked) {
        "doors locked"
    } else {
        "doors unlocked"
    }
}

fn engine(car: &BodyController) -> &'static str {
    if car.car().engine_running {
        "engine running"
    } else {
        "engine off"
    }
}

async fn remote(
    n: &Narrator,
    conn: &MqttConn,
    cred: &ExportedCredential,
    counter: &Path,
    action: Action,
    code: &str,
) -> anyhow::Result<CommandOutcome> {
    let label = match &action {
        Action::Lock => "lock".to_string(),
        Action::Unlock => "unlock".to_string(),
        Action::EngineStart { max_run_secs } => {
            format!("start (run {} s)", max_run_secs.unwrap_or(0))
        }
        Action::EngineStop => "stop".to_string(),
        Action::FlashLights => "flash".to_string(),
        Action::Horn => "horn".to_string(),
        Action::RevokeDevice { key_id } => format!("revoke device {}", hex::encode(&key_id.0)),
    };
    let shown = if code == CODE || code == NEW_CODE {
        "the right code"
    } else {
        "a wrong code"
    };
    n.say("owner", &format!("app: {label}, entering {shown}"));
    let spec = CommandSpec {
        action,
        code: code.to_string(),
        ttl_s: 60,
        timeout: Duration::from_secs(20),
    };
    let t = Instant::now();
    let (outcome, sent) = send_command(conn, cred, counter, &spec, |r: &CommandResult| {
        n.say(
            "vehicle",
            &format!(
                "result {} after {} ms",
                format_result(r),
                t.elapsed().as_millis()
            ),
        );
    })
    .await
    .context("sending the command")?;
    if let CommandOutcome::Timeout { .. } = outcome {
        n.say(
            "owner",
            &format!(
                "no answer for command {} (counter {})",
                hex::encode(sent.command_id.0),
                sent.counter
            ),
        );
    }
    Ok(outcome)
}

async fn admin_call(socket: &Path, req: Request) -> anyhow::Result<Response> {
    admin::call(socket, &req)
        .await
        .map_err(|e| anyhow::anyhow!("admin socket: {e}"))
}

async fn pair(
    n: &Narrator,
    socket: &Path,
    name: &str,
    code: &str,
    dir: &Path,
    qr: bool,
) -> anyhow::Result<(ExportedCredential, PathBuf)> {
    let r = admin_call(
        socket,
        Request::Pair {
            device_name: name.into(),
            code: Secret(code.into()),
        },
    )
    .await?;
    let Response::Paired {
        device_id,
        credential,
    } = r
    else {
        bail!("pairing refused: {r:?}");
    };
    n.say(
        "car",
        &format!(
            "head unit: paired device {device_id} ({name}); credential shown once as a QR code"
        ),
    );
    if qr {
        println!("{}", crate::cli::qr_text(&credential)?);
    }
    let path = dir.join(format!("{name}-{device_id}.cred"));
    crate::keys::write_private(&path, &credential)?;
    let cred = ExportedCredential::from_text(&credential).context("credential")?;
    Ok((cred, path))
}

/// The scripted session.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut n = Narrator {
        t0: Instant::now(),
        step: 0,
        steps: 8,
    };
    let tmp = tempfile::Builder::new()
        .prefix("telematicsd-demo-")
        .tempdir()
        .context("work directory")?;
    let dir = tmp.path().to_path_buf();
    println!(
        "telematicsd demo — VIN {VIN}, working directory {}",
        dir.display()
    );

    n.step("infrastructure: broker with mutual TLS, simulated car, daemon");
    let pki = TestPki::generate().context("generating certificates")?;
    let broker = Mosquitto::start(&pki, &["backend"])
        .context("starting mosquitto (install it: apt-get install -y mosquitto)")?;
    n.say(
        "broker",
        &format!(
            "mosquitto on 127.0.0.1:{} — client certificates required, per-VIN ACL",
            broker.port()
        ),
    );
    let vehicle_cert = pki.client(VIN).context("vehicle certificate")?;
    let backend_cert = pki.client("backend").context("back-end certificate")?;
    let backend_key = {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("key generation failed"))?;
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("key generation failed"))?
    };
    let pub_path = dir.join("backend.pub");
    std::fs::write(&pub_path, hex::encode(backend_key.public_key().as_ref()))?;
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir)?;
    let socket = dir.join("admin.sock");
    let toml = format!(
        "[vehicle]\nvin = \"{VIN}\"\n[can]\nsource = \"sim\"\n[mqtt]\nhost = \"localhost\"\nport = {port}\n\
         ca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nkeepalive_s = 10\n[security]\n\
         backend_public_key = {pub_path:?}\n[telemetry]\nperiod_s = 5\n[admin]\nsocket = {socket:?}\n\
         [state]\ndirectory = {state_dir:?}\n[log]\nfilter = {log:?}\n",
        port = broker.port(),
        ca = pki.ca_cert(),
        cert = vehicle_cert.cert,
        key = vehicle_cert.key,
        log = args.log,
    );
    std::fs::write(dir.join("telematicsd.toml"), &toml)?;
    let cfg = Config::from_toml_with_env(&toml, Vec::new())?;
    let log_file = std::fs::File::create(dir.join("daemon.log"))?;
    let filter = telematicsd::logging::parse_filter(&args.log).map_err(|e| anyhow::anyhow!(e))?;
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::sync::Mutex::new(log_file))
                .with_ansi(false),
        )
        .try_init();
    let car = Arc::new(Mutex::new(BodyController::demo()));
    let daemon = Daemon::open_with_policy(
        cfg,
        AccessPolicy {
            gid: Some(nix_gid()),
            members: vec![],
        },
    )?
    .with_connector(telematicsd::simbus::in_process_with(car.clone()));
    let stop = daemon.shutdown_token();
    let (_events, rx) = tokio::sync::mpsc::channel(1);
    let daemon_task = tokio::spawn(daemon.run(rx));
    {
        let c = car.lock().await;
        n.say(
            "car",
            &format!(
                "demo car on an in-process CAN bus: parked, {}, {}",
                doors(&c),
                engine(&c)
            ),
        );
    }
    let conn = MqttConn {
        host: "localhost".into(),
        port: broker.port(),
        tls: TlsFiles {
            cert_chain: backend_cert.cert.clone(),
            key: backend_cert.key.clone(),
            ca: pki.ca_cert().to_path_buf(),
        },
    };
    // The back end's view: alerts and status, printed as they arrive.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch_conn = conn.clone();
    let t0 = n.t0;
    let watcher = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let spec = WatchSpec {
            vin: VIN.into(),
            topics: vec![WatchTopic::Alerts, WatchTopic::Status],
            count: None,
            json: false,
        };
        let _ = watch(
            &watch_conn,
            &spec,
            || {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            },
            |line| {
                println!(
                    "[{:>5.1}s]   {:<8} {line}",
                    t0.elapsed().as_secs_f64(),
                    "backend"
                );
            },
        )
        .await;
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    // Wait until the daemon serves the head unit.
    let mut up = false;
    for _ in 0..200 {
        if admin_call(&socket, Request::Status).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        bail!(
            "daemon did not come up; see {}",
            dir.join("daemon.log").display()
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    n.step("pairing in the car: the owner sets the security code and pairs the phone");
    let (cred, cred_path) = pair(&n, &socket, "phone", CODE, &dir, args.qr).await?;
    let counter = crate::counter::counter_path(&cred_path);

    n.step("remote unlock, then lock (verified, preconditions checked, confirmed on the bus)");
    remote(&n, &conn, &cred, &counter, Action::Unlock, CODE).await?;
    n.say("car", doors(&*car.lock().await));
    remote(&n, &conn, &cred, &counter, Action::Lock, CODE).await?;
    n.say("car", doors(&*car.lock().await));

    n.step("someone guesses the code: three wrong codes start a lockout");
    for guess in ["5831", "7204", "6195"] {
        remote(&n, &conn, &cred, &counter, Action::Unlock, guess).await?;
    }
    n.say(
        "owner",
        "now even the right code is refused until the wait ends:",
    );
    remote(&n, &conn, &cred, &counter, Action::Unlock, CODE).await?;
    if let Response::Lockout {
        failures,
        locked_until,
    } = admin_call(&socket, Request::Lockout).await?
    {
        n.say(
            "car",
            &format!(
                "head unit: {failures} consecutive wrong codes, remote commands locked for {} s",
                locked_until
                    .map(|t| t.saturating_sub(admin::unix_now_s()))
                    .unwrap_or(0)
            ),
        );
    }
    n.say("car", doors(&*car.lock().await));

    n.step("recovery: customer service signs a reset, the owner confirms in the car");
    let now = admin::unix_now_s();
    let auth = telematics_security::client::sign_reset(
        &backend_key,
        VIN,
        now,
        now + 3600,
        &ring::rand::SystemRandom::new(),
    )?;
    n.say(
        "dealer",
        &format!(
            "reset authorization signed with the back-end key ({} bytes, {})",
            auth.len(),
            &crate::keys::reset_auth_to_text(&auth)[..24]
        ),
    );
    match admin_call(
        &socket,
        Request::ArmRecovery {
            authorization: auth,
        },
    )
    .await?
    {
        Response::RecoveryArmed { confirm_by } => n.say(
            "car",
            &format!(
                "head unit: reset armed, enter a new code here within {} s",
                confirm_by.saturating_sub(admin::unix_now_s())
            ),
        ),
        other => bail!("reset authorization refused: {other:?}"),
    }
    match admin_call(
        &socket,
        Request::ConfirmRecovery {
            new_code: Secret(NEW_CODE.into()),
        },
    )
    .await?
    {
        Response::Done => n.say(
            "car",
            "head unit: new code set, lockout cleared, every paired device voided",
        ),
        other => bail!("recovery refused: {other:?}"),
    }
    n.say("owner", "the old phone credential no longer works:");
    let spec_timeout = remote(&n, &conn, &cred, &counter, Action::Unlock, NEW_CODE);
    let _ = tokio::time::timeout(Duration::from_secs(4), spec_timeout).await;
    n.say(
        "owner",
        "(no answer: the vehicle cannot authenticate a revoked device)",
    );

    n.step("re-pair the phone and start the engine remotely");
    let (cred2, cred2_path) = pair(&n, &socket, "phone", NEW_CODE, &dir, false).await?;
    let counter2 = crate::counter::counter_path(&cred2_path);
    remote(
        &n,
        &conn,
        &cred2,
        &counter2,
        Action::EngineStart {
            max_run_secs: Some(args.run_secs),
        },
        NEW_CODE,
    )
    .await?;
    n.say("car", engine(&*car.lock().await));

    n.step(&format!(
        "nobody gets in: the daemon stops the engine after the {} s run timer",
        args.run_secs
    ));
    let started = Instant::now();
    let limit = Duration::from_secs(u64::from(args.run_secs) + 10);
    loop {
        if !car.lock().await.car().engine_running {
            break;
        }
        if started.elapsed() > limit {
            bail!("engine still running after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n.say(
        "car",
        &format!(
            "engine stopped automatically {:.1} s after the start was confirmed",
            started.elapsed().as_secs_f64()
        ),
    );

    n.step("summary");
    if let Response::Audit { events } = admin_call(&socket, Request::Audit { limit: 8 }).await? {
        n.say("car", "audit trail (newest last, no codes in it):");
        for e in events {
            println!("            {:<22} {}", e.kind, e.detail);
        }
    }
    if let Response::Status { components, .. } = admin_call(&socket, Request::Status).await? {
        for (k, v) in components {
            println!("            {k:<10} {v}");
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon_task).await;
    watcher.abort();
    drop(broker);
    if args.keep {
        let kept = tmp.keep();
        println!("\nworking directory kept: {}", kept.display());
    }
    println!("\ndemo finished in {:.1} s", n.t0.elapsed().as_secs_f64());
    Ok(())
}

fn nix_gid() -> u32 {
    // The demo's admin socket is for this user only: allow our own primary group.
    nix::unistd::getgid().as_raw()
}
