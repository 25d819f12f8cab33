//! Command-line interface: clap types and [`main_entry`].
//!
//! Security codes are never accepted as command-line arguments: they are prompted for on the
//! terminal (`rpassword`) or read from the first line of stdin with `--code-stdin`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use telematics_admin::{self as admin, Request, Response, Secret};
use telematics_link::TlsFiles;
use telematics_security::Action;

use crate::keys::{
    backend_keygen, load_backend_key, read_reset_auth, reset_auth_to_text,
    sign_reset_authorization, write_private,
};
use crate::mqtt::MqttConn;
use crate::output::{print_error, result_json, rfc3339, when};
use crate::remote::{
    CommandSpec, EXIT_ERROR, EXIT_USAGE, format_result, read_credential, send_command,
    timeout_message,
};
use crate::watch::{WatchSpec, WatchTopic, watch};

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (remote commands: executed)
  1  error (I/O, TLS, broker, daemon, bad credential)
  2  usage error
  3  remote command rejected by the vehicle
  4  remote command accepted but failed on the vehicle
  5  no result within --timeout-s (vehicle offline, or credential unknown/revoked)
  6  doctor: the worst check is a warning
  7  doctor: a check fails (or the daemon cannot be asked)";

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "telematicsctl",
    version,
    about = "Control tool for telematicsd",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Admin socket of the local daemon.
    #[arg(
        long,
        global = true,
        default_value = "/run/telematicsd/admin.sock",
        env = "TELEMATICSCTL_SOCKET"
    )]
    pub socket: PathBuf,
    /// Machine-readable output: one JSON document on stdout (NDJSON, one object per line, for
    /// `watch` and for remote commands' results); errors as JSON on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// How the security code is read.
#[derive(Args, Debug, Clone)]
pub struct CodeInput {
    /// Read the security code from the first line of stdin (scripts).
    #[arg(long)]
    pub code_stdin: bool,
}

/// MQTT broker connection (mutual TLS with the back end's client certificate).
#[derive(Args, Debug, Clone)]
pub struct MqttArgs {
    /// MQTT broker host (also the TLS server name).
    #[arg(long, default_value = "localhost", env = "TELEMATICSCTL_HOST")]
    pub host: String,
    /// MQTT broker TLS port.
    #[arg(long, default_value_t = 8883, env = "TELEMATICSCTL_PORT")]
    pub port: u16,
    /// CA certificate (PEM) to pin; the only trust anchor.
    #[arg(long, env = "TELEMATICSCTL_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), e.g. the back end's.
    #[arg(long, env = "TELEMATICSCTL_CERT")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "TELEMATICSCTL_KEY")]
    pub key: Option<PathBuf>,
}

/// A usage error detected after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

impl MqttArgs {
    /// The connection, or a usage error naming the missing option.
    pub fn conn(&self) -> Result<MqttConn, UsageError> {
        let need = |p: &Option<PathBuf>, opt: &str, env: &str| {
            p.clone()
                .ok_or_else(|| UsageError(format!("{opt} is required (or set {env})")))
        };
        Ok(MqttConn {
            host: self.host.clone(),
            port: self.port,
            tls: TlsFiles {
                ca: need(&self.ca, "--ca", "TELEMATICSCTL_CA")?,
                cert_chain: need(&self.cert, "--cert", "TELEMATICSCTL_CERT")?,
                key: need(&self.key, "--key", "TELEMATICSCTL_KEY")?,
            },
        })
    }
}

/// Options of every remote command.
#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Device credential file (`TMDC1:...`, from `pair --out`). The command counter is kept
    /// in `<credential>.counter`.
    #[arg(long, short = 'c')]
    pub credential: PathBuf,
    /// Command validity in seconds (the vehicle caps it).
    #[arg(long, default_value_t = 60)]
    pub ttl_s: u64,
    /// Seconds to wait for the final result.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Broker connection.
    #[command(flatten)]
    pub mqtt: MqttArgs,
    /// Code input.
    #[command(flatten)]
    pub code: CodeInput,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Pair a device (in the car, via the admin socket).
    Pair {
        /// Device name.
        #[arg(long)]
        name: String,
        /// Write the credential to this file (mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Code input.
        #[command(flatten)]
        code: CodeInput,
    },
    /// List paired devices (admin socket; `--remote`: the list the vehicle publishes).
    Devices(crate::devices::DevicesArgs),
    /// Revoke a paired device (admin socket; `--remote`: as the back end or another device).
    #[command(after_help = EXIT_CODES_HELP)]
    RevokeDevice(crate::devices::RevokeDeviceArgs),
    /// Revoke a device.
    Revoke {
        /// Device id.
        device_id: String,
    },
    /// Show the lockout state.
    Lockout,
    /// Show recent audit events.
    Audit {
        /// Number of events.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Daemon status.
    Status,
    /// Troubleshoot the local daemon (admin socket, works offline): one line per check with
    /// ok / warn / fail and what to do; the exit code is the worst result (0, 6, 7).
    #[command(after_help = EXIT_CODES_HELP)]
    Doctor,
    /// Recovery step 1: arm a reset with a back-end reset authorization (in the car).
    ArmRecovery {
        /// File with the signed reset authorization (`TMRA1:` text, or raw COSE bytes).
        authorization: PathBuf,
    },
    /// Recovery step 2: set the new code (in the car) while a reset is armed. With an
    /// authorization file, arms it first (two admin calls).
    ConfirmRecovery {
        /// File with the signed reset authorization to arm first (`TMRA1:` text, or raw COSE
        /// bytes); omit when `arm-recovery` already armed it.
        authorization: Option<PathBuf>,
        /// Code input.
        #[command(flatten)]
        code: CodeInput,
    },
    /// Lock the doors (remote, over MQTT).
    #[command(after_help = EXIT_CODES_HELP)]
    Lock(RemoteArgs),
    /// Unlock the doors (remote, over MQTT).
    #[command(after_help = EXIT_CODES_HELP)]
    Unlock(RemoteArgs),
    /// Start the engine (remote, over MQTT).
    #[command(after_help = EXIT_CODES_HELP)]
    Start {
        /// Requested run time in seconds (the vehicle caps it; default: vehicle maximum).
        #[arg(long)]
        run_secs: Option<u32>,
        /// Remote command options.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop a remotely started engine (remote, over MQTT).
    #[command(after_help = EXIT_CODES_HELP)]
    Stop(RemoteArgs),
    /// Flash the lights (remote, over MQTT).
    #[command(after_help = EXIT_CODES_HELP)]
    Flash(RemoteArgs),
    /// Sound the horn (remote, over MQTT).
    #[command(after_help = EXIT_CODES_HELP)]
    Horn(RemoteArgs),
    /// Watch a vehicle's telemetry, alerts, results and status (one decoded line each).
    Watch {
        /// VIN to watch.
        #[arg(long)]
        vin: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Topics to watch (comma-separated).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "telemetry,alerts,results,status"
        )]
        topics: Vec<WatchTopic>,
        /// Broker connection.
        #[command(flatten)]
        mqtt: MqttArgs,
    },
    /// Body-controller simulator on a CAN bus.
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimArgs),
    /// Run the whole system on this machine (broker, simulated car, daemon) and play a narrated
    /// owner session: pairing, lock/unlock, lockout, recovery, remote start with auto-stop.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
    /// Back end: generate an Ed25519 signing key for reset authorizations.
    BackendKeygen {
        /// Private key output (PKCS#8 v1 DER per RFC 8410, mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Public key output: 64 hex characters (the daemon's
        /// `security.backend_public_key`).
        #[arg(long)]
        public_out: PathBuf,
    },
    /// Back end / dealer: sign a reset authorization (printed as `TMRA1:...`).
    ResetAuth {
        /// VIN.
        #[arg(long)]
        vin: String,
        /// Back-end signing key (PKCS#8 v1/v2, DER or PEM, e.g. from `backend-keygen`; mode 0600).
        #[arg(long)]
        key: PathBuf,
        /// Validity in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
        /// Also write the text to this file (mode 0600; never overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Back end: the vehicle-certificate CA (in-band renewal: sign a CSR, answer CSRs).
    #[cfg(feature = "ca")]
    #[command(subcommand)]
    Ca(crate::ca::CaCmd),
}

pub(crate) fn read_code(input: &CodeInput, prompt: &str) -> anyhow::Result<Secret> {
    let code = if input.code_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading code from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(prompt).context("reading code from the terminal")?
    };
    if code.is_empty() {
        bail!("empty security code");
    }
    Ok(Secret(code))
}

pub(crate) fn qr_text(data: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).context("credential too long for a QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build())
}

/// The daemon answered with an admin `error`.
#[derive(Debug, thiserror::Error)]
#[error("daemon error [{code}]: {message}{}", retry_text(*.retry_after_s))]
pub struct DaemonRefusal {
    /// Stable code (`security.locked_out`, ...).
    pub code: String,
    /// Human message.
    pub message: String,
    /// Seconds until a code check is allowed again (`u64::MAX`: until recovery).
    pub retry_after_s: Option<u64>,
}

fn retry_text(r: Option<u64>) -> String {
    match r {
        Some(u64::MAX) => " (locked until recovery)".into(),
        Some(s) => format!(
            " (retry in {})",
            telematics_admin::diagnostics::human_duration(s)
        ),
        None => String::new(),
    }
}

/// Prints an admin response on stdout (JSON under `--json`); an `error` response becomes a
/// [`DaemonRefusal`] (printed on stderr by [`main_entry`]).
pub(crate) fn print_response(r: Response, json: bool) -> anyhow::Result<()> {
    if let Response::Error {
        code,
        message,
        retry_after_s,
    } = r
    {
        return Err(DaemonRefusal {
            code,
            message,
            retry_after_s,
        }
        .into());
    }
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let now = telematics_admin::unix_now_s();
    match r {
        Response::Error { .. } => {}
        Response::RecoveryArmed { confirm_by } => {
            println!(
                "recovery armed: confirm the new code in the car by {} \
                 (telematicsctl confirm-recovery)",
                when(confirm_by, now)
            );
        }
        Response::Status {
            version,
            vin,
            uptime_s,
            components,
        } => {
            println!(
                "telematicsd {version}  VIN {vin}  up {}",
                telematics_admin::diagnostics::human_duration(uptime_s)
            );
            for (k, v) in components {
                println!("  {k}: {v}");
            }
        }
        Response::Devices { devices } => {
            println!("{:<24} {:<20} {:<20} REVOKED", "ID", "NAME", "PAIRED_AT");
            for d in devices {
                println!(
                    "{:<24} {:<20} {:<20} {}",
                    d.device_id,
                    d.name,
                    rfc3339(d.paired_at),
                    d.revoked
                );
            }
        }
        Response::Lockout {
            failures,
            locked_until,
        } => match locked_until {
            Some(u64::MAX) => {
                println!("LOCKED until recovery, {failures} consecutive failures")
            }
            Some(t) => println!(
                "LOCKED until {}, {failures} consecutive failures",
                when(t, now)
            ),
            None => println!("not locked, {failures} consecutive failures"),
        },
        Response::Audit { events } => {
            for e in events {
                println!("{} {:<24} {}", rfc3339(e.at), e.kind, e.detail);
            }
        }
        Response::Diagnostics(facts) => println!("{}", serde_json::to_string_pretty(&facts)?),
        Response::Done => println!("OK"),
        Response::Paired { device_id, .. } => println!("paired {device_id}"),
    }
    Ok(())
}

async fn admin_call(socket: &Path, req: Request) -> anyhow::Result<Response> {
    admin::call(socket, &req)
        .await
        .with_context(|| format!("admin socket {}", socket.display()))
}

async fn remote(action: Action, args: RemoteArgs, json: bool) -> anyhow::Result<u8> {
    let conn = args.mqtt.conn()?;
    let cred = read_credential(&args.credential)?;
    let counter_file = crate::counter::counter_path(&args.credential);
    let code = read_code(&args.code, "Security code: ")?;
    let timeout = Duration::from_secs(args.timeout_s);
    let spec = CommandSpec {
        action,
        code: code.0,
        ttl_s: args.ttl_s,
        timeout,
    };
    let (outcome, _sent) = send_command(&conn, &cred, &counter_file, &spec, |r| {
        if json {
            println!("{}", result_json(r));
        } else {
            println!("{}", format_result(r));
        }
    })
    .await?;
    if let Some(msg) = timeout_message(&outcome, timeout) {
        print_error(json, "no_result", &msg, None);
    }
    Ok(outcome.exit_code())
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let s = cli.socket.as_path();
    let json = cli.json;
    match cli.cmd {
        Cmd::Pair { name, out, code } => {
            let code = read_code(&code, "Security code: ")?;
            match admin_call(
                s,
                Request::Pair {
                    device_name: name,
                    code,
                },
            )
            .await?
            {
                Response::Paired {
                    device_id,
                    credential,
                } => match out {
                    // Written where asked for, and nowhere else (not on stdout).
                    Some(p) => {
                        write_private(&p, &credential)?;
                        if json {
                            let v = serde_json::json!({
                                "result": "paired",
                                "device_id": device_id,
                                "written_to": p.display().to_string(),
                            });
                            println!("{v}");
                        } else {
                            println!(
                                "Paired device {device_id}; credential written to {} (mode 0600)",
                                p.display()
                            );
                        }
                    }
                    None if json => {
                        let v = serde_json::json!({
                            "result": "paired",
                            "device_id": device_id,
                            "credential": credential,
                        });
                        println!("{v}");
                    }
                    None => {
                        println!("Paired device {device_id}. Credential:\n{credential}\n");
                        println!("{}", qr_text(&credential)?);
                    }
                },
                other => print_response(other, json)?,
            }
        }
        Cmd::Devices(mut a) => {
            a.json = json;
            return crate::devices::run_devices(a, s).await;
        }
        Cmd::RevokeDevice(mut a) => {
            a.json = json;
            return crate::devices::run_revoke_device(a, s).await;
        }
        Cmd::Revoke { device_id } => print_response(
            admin_call(s, Request::RevokeDevice { device_id }).await?,
            json,
        )?,
        Cmd::Lockout => print_response(admin_call(s, Request::Lockout).await?, json)?,
        Cmd::Audit { limit } => {
            print_response(admin_call(s, Request::Audit { limit }).await?, json)?
        }
        Cmd::Status => print_response(admin_call(s, Request::Status).await?, json)?,
        Cmd::Doctor => {
            let report = crate::doctor::report(s).await;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for c in &report.checks {
                    println!("{}", crate::doctor::format_check(c));
                }
            }
            return Ok(crate::doctor::exit_code(report.worst));
        }
        Cmd::ArmRecovery { authorization } => {
            let authorization = read_reset_auth(&authorization)?;
            print_response(
                admin_call(s, Request::ArmRecovery { authorization }).await?,
                json,
            )?
        }
        Cmd::ConfirmRecovery {
            authorization,
            code,
        } => {
            let authorization = authorization.map(|p| read_reset_auth(&p)).transpose()?;
            let new_code = read_code(&code, "New security code: ")?;
            if let Some(authorization) = authorization {
                print_response(
                    admin_call(s, Request::ArmRecovery { authorization }).await?,
                    json,
                )?;
            }
            print_response(
                admin_call(s, Request::ConfirmRecovery { new_code }).await?,
                json,
            )?
        }
        Cmd::Lock(a) => return remote(Action::Lock, a, json).await,
        Cmd::Unlock(a) => return remote(Action::Unlock, a, json).await,
        Cmd::Start {
            run_secs,
            remote: a,
        } => {
            return remote(
                Action::EngineStart {
                    max_run_secs: run_secs,
                },
                a,
                json,
            )
            .await;
        }
        Cmd::Stop(a) => return remote(Action::EngineStop, a, json).await,
        Cmd::Flash(a) => return remote(Action::FlashLights, a, json).await,
        Cmd::Horn(a) => return remote(Action::Horn, a, json).await,
        Cmd::Watch {
            vin,
            count,
            topics,
            mqtt,
        } => {
            let conn = mqtt.conn()?;
            let spec = WatchSpec {
                vin,
                topics,
                count,
                json,
            };
            watch(&conn, &spec, || {}, |line| println!("{line}")).await?;
        }
        #[cfg(feature = "sim")]
        Cmd::Sim(args) => crate::sim::run(args).await?,
        // Handled in `main_entry` (it needs its own multi-threaded runtime).
        #[cfg(feature = "demo")]
        Cmd::Demo(args) => return Ok(u8::from(crate::demo::run(args).await.is_err())),
        Cmd::BackendKeygen { out, public_out } => {
            let public = backend_keygen(&out, &public_out)?;
            if json {
                let v = serde_json::json!({
                    "private_key_file": out.display().to_string(),
                    "public_key_file": public_out.display().to_string(),
                    "public_key": public,
                });
                println!("{v}");
            } else {
                println!(
                    "private key: {} (mode 0600)\npublic key:  {} = {public}",
                    out.display(),
                    public_out.display()
                );
            }
        }
        #[cfg(feature = "ca")]
        Cmd::Ca(cmd) => crate::ca::run(cmd, json).await?,
        Cmd::ResetAuth {
            vin,
            key,
            ttl_s,
            out,
        } => {
            let pair = load_backend_key(&key)?;
            let text = reset_auth_to_text(&sign_reset_authorization(&pair, &vin, ttl_s)?);
            if let Some(p) = out {
                write_private(&p, &text)?;
            }
            if json {
                println!("{}", serde_json::json!({ "authorization": text }));
            } else {
                println!("{text}");
            }
        }
    }
    Ok(0)
}

/// The clap definition of the command line (man page and shell completion generator).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The whole program: parse the command line, run it on a current-thread runtime, map the
/// result to the exit code (see `--help`).
pub fn main_entry() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    #[cfg(feature = "demo")]
    if let Cmd::Demo(args) = cli.cmd {
        return crate::demo::main(args);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telematicsctl: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let json = cli.json;
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(r) = e.downcast_ref::<DaemonRefusal>() {
                print_error(json, &r.code, &format!("{e:#}"), r.retry_after_s);
                ExitCode::from(EXIT_ERROR)
            } else if e.downcast_ref::<UsageError>().is_some() {
                print_error(json, "usage", &format!("{e:#}"), None);
                ExitCode::from(EXIT_USAGE)
            } else {
                print_error(json, "error", &format!("{e:#}"), None);
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("telematicsctl").chain(args.iter().copied()))
    }

    fn remote_args(c: &Cmd) -> Option<&RemoteArgs> {
        match c {
            Cmd::Lock(r) | Cmd::Unlock(r) | Cmd::Stop(r) | Cmd::Flash(r) | Cmd::Horn(r) => Some(r),
            Cmd::Start { remote, .. } => Some(remote),
            _ => None,
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn code_cannot_be_an_argument() {
        for cmd in ["lock", "unlock", "start", "stop", "flash", "horn"] {
            for bad in [
                vec!["--code", "1234"],
                vec!["--code=1234"],
                vec!["1234"],
                vec!["-p", "1234"],
            ] {
                let mut a = vec![cmd, "-c", "cred.txt"];
                a.extend(bad.iter().copied());
                assert!(parse(&a).is_err(), "{a:?} must be rejected");
            }
            let ok = parse(&[cmd, "-c", "cred.txt", "--code-stdin"]).expect("code-stdin ok");
            assert!(remote_args(&ok.cmd).expect("remote").code.code_stdin);
        }
        assert!(parse(&["pair", "--name", "phone", "--code", "1234"]).is_err());
        assert!(parse(&["confirm-recovery", "auth.bin", "1234"]).is_err());
        // No argument anywhere in the tree is called like a code.
        fn walk(c: &clap::Command) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                assert!(
                    id == "code_stdin" || !id.contains("code") && !id.contains("pin"),
                    "{id}"
                );
            }
            for s in c.get_subcommands() {
                walk(s);
            }
        }
        walk(&Cli::command());
    }

    #[test]
    fn admin_commands_parse() {
        let c = parse(&["--socket", "/tmp/a.sock", "audit", "--limit", "5"]).expect("audit");
        assert_eq!(c.socket, PathBuf::from("/tmp/a.sock"));
        assert!(matches!(c.cmd, Cmd::Audit { limit: 5 }));
        let c = parse(&["pair", "--name", "phone", "--out", "x.cred"]).expect("pair");
        assert!(matches!(c.cmd, Cmd::Pair { ref name, out: Some(_), .. } if name == "phone"));
        assert!(parse(&["lock"]).is_err(), "credential required");
        assert!(parse(&["revoke"]).is_err(), "device id required");
        assert!(parse(&["arm-recovery"]).is_err(), "authorization required");
        let c = parse(&["arm-recovery", "auth.txt"]).expect("arm");
        assert!(
            matches!(c.cmd, Cmd::ArmRecovery { ref authorization } if authorization == Path::new("auth.txt"))
        );
        let c = parse(&["confirm-recovery", "--code-stdin"]).expect("confirm only");
        assert!(matches!(
            c.cmd,
            Cmd::ConfirmRecovery {
                authorization: None,
                ..
            }
        ));
        let c = parse(&["confirm-recovery", "auth.txt"]).expect("arm + confirm");
        assert!(matches!(
            c.cmd,
            Cmd::ConfirmRecovery {
                authorization: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn remote_options_parse() {
        let c = parse(&[
            "start",
            "-c",
            "p.cred",
            "--run-secs",
            "300",
            "--ttl-s",
            "30",
            "--timeout-s",
            "9",
            "--host",
            "broker.example",
            "--port",
            "18883",
            "--ca",
            "ca.pem",
            "--cert",
            "be.pem",
            "--key",
            "be.key",
        ])
        .expect("start");
        let Cmd::Start { run_secs, remote } = &c.cmd else {
            panic!("not start: {:?}", c.cmd)
        };
        assert_eq!(*run_secs, Some(300));
        assert_eq!((remote.ttl_s, remote.timeout_s), (30, 9));
        let conn = remote.mqtt.conn().expect("conn");
        assert_eq!((conn.host.as_str(), conn.port), ("broker.example", 18883));
        assert_eq!(conn.tls.ca, PathBuf::from("ca.pem"));
        assert_eq!(conn.tls.cert_chain, PathBuf::from("be.pem"));
        assert_eq!(conn.tls.key, PathBuf::from("be.key"));
        // Defaults; missing TLS files are a usage error naming the option.
        let c = parse(&["lock", "-c", "p.cred"]).expect("lock");
        let r = remote_args(&c.cmd).expect("remote");
        assert_eq!((r.ttl_s, r.timeout_s), (60, 30));
        if std::env::var_os("TELEMATICSCTL_CA").is_none() {
            let e = r.mqtt.conn().expect_err("no --ca");
            assert!(e.to_string().contains("--ca"), "{e}");
        }
    }

    #[test]
    fn watch_and_key_commands_parse() {
        let c = parse(&[
            "watch",
            "--vin",
            "V1",
            "--count",
            "3",
            "--topics",
            "telemetry,status",
        ])
        .expect("watch");
        let Cmd::Watch {
            vin, count, topics, ..
        } = &c.cmd
        else {
            panic!("not watch")
        };
        assert_eq!((vin.as_str(), *count), ("V1", Some(3)));
        assert_eq!(topics, &[WatchTopic::Telemetry, WatchTopic::Status]);
        let c = parse(&["watch", "--vin", "V1"]).expect("watch");
        assert!(matches!(&c.cmd, Cmd::Watch { topics, .. } if topics.len() == 4));
        assert!(parse(&["watch", "--vin", "V1", "--topics", "commands"]).is_err());
        assert!(
            parse(&["backend-keygen", "--out", "k"]).is_err(),
            "public-out needed"
        );
        let c = parse(&["reset-auth", "--vin", "V1", "--key", "k.pk8"]).expect("reset-auth");
        assert!(matches!(
            c.cmd,
            Cmd::ResetAuth {
                ttl_s: 3600,
                out: None,
                ..
            }
        ));
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("5  no result within"), "{help}");
        let mut cmd = Cli::command();
        let lock = cmd.find_subcommand_mut("lock").expect("lock");
        assert!(
            lock.render_help()
                .to_string()
                .contains("3  remote command rejected")
        );
    }

    #[test]
    fn qr_renders() {
        let q = qr_text("tmd1:abcdef").expect("qr");
        assert!(q.lines().count() > 10);
    }
}
