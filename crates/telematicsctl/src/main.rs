//! Owner / back-end / dealer tool for telematicsd.
//!
//! Security codes are never accepted as command-line arguments: they are
//! prompted for on the terminal (`rpassword`) or read from stdin with
//! `--code-stdin`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use telematicsd::admin::{self, Request, Response, Secret};

#[derive(Parser, Debug)]
#[command(
    name = "telematicsctl",
    version,
    about = "Control tool for telematicsd"
)]
struct Cli {
    /// Admin socket of the local daemon.
    #[arg(
        long,
        global = true,
        default_value = "/run/telematicsd/admin.sock",
        env = "TELEMATICSCTL_SOCKET"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct CodeInput {
    /// Read the security code from the first line of stdin (scripts).
    #[arg(long)]
    code_stdin: bool,
}

#[derive(Args, Debug, Clone)]
struct RemoteArgs {
    /// Device credential file (from `pair --out`).
    #[arg(long, short = 'c')]
    credential: PathBuf,
    /// MQTT broker host.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// MQTT broker port.
    #[arg(long, default_value_t = 8883)]
    port: u16,
    #[command(flatten)]
    code: CodeInput,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Pair a device (in the car, via the admin socket).
    Pair {
        /// Device name.
        #[arg(long)]
        name: String,
        /// Write the credential to this file (mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        code: CodeInput,
    },
    /// List paired devices.
    Devices,
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
    /// Complete a recovery with a back-end reset authorization and a new code.
    ConfirmRecovery {
        /// File with the signed reset authorization.
        authorization: PathBuf,
        #[command(flatten)]
        code: CodeInput,
    },
    /// Lock the doors.
    Lock(RemoteArgs),
    /// Unlock the doors.
    Unlock(RemoteArgs),
    /// Start the engine.
    Start(RemoteArgs),
    /// Stop the engine.
    Stop(RemoteArgs),
    /// Flash the lights.
    Flash(RemoteArgs),
    /// Sound the horn.
    Horn(RemoteArgs),
    /// Watch telemetry, alerts, results and status.
    Watch {
        /// VIN to watch.
        #[arg(long)]
        vin: String,
    },
    /// Back-end/dealer: sign a reset authorization.
    ResetAuth {
        /// VIN.
        #[arg(long)]
        vin: String,
        /// Back-end signing key.
        #[arg(long)]
        key: PathBuf,
    },
    /// Body-controller simulator on a CAN bus.
    Sim {
        /// CAN interface.
        #[arg(long, default_value = "vcan0")]
        interface: String,
        /// candump log to replay.
        #[arg(long)]
        replay: Option<PathBuf>,
    },
}

fn read_code(input: &CodeInput, prompt: &str) -> anyhow::Result<Secret> {
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

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

fn qr_text(data: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).context("credential too long for a QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build())
}

fn print_response(r: Response) -> anyhow::Result<()> {
    match r {
        Response::Error { code, message } => bail!("daemon error [{code}]: {message}"),
        Response::Status {
            version,
            vin,
            uptime_s,
            components,
        } => {
            println!("telematicsd {version}  VIN {vin}  up {uptime_s}s");
            for (k, v) in components {
                println!("  {k}: {v}");
            }
        }
        Response::Devices { devices } => {
            println!("{:<24} {:<20} {:>12} REVOKED", "ID", "NAME", "PAIRED_AT");
            for d in devices {
                println!(
                    "{:<24} {:<20} {:>12} {}",
                    d.device_id, d.name, d.paired_at, d.revoked
                );
            }
        }
        Response::Lockout {
            failures,
            locked_until,
        } => match locked_until {
            Some(t) => println!("LOCKED until {t} (unix s), {failures} consecutive failures"),
            None => println!("not locked, {failures} consecutive failures"),
        },
        Response::Audit { events } => {
            for e in events {
                println!("{} {:<24} {}", e.at, e.kind, e.detail);
            }
        }
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let s = cli.socket.as_path();
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
                } => {
                    println!("Paired device {device_id}. Credential:\n{credential}\n");
                    println!("{}", qr_text(&credential)?);
                    if let Some(p) = out {
                        write_private(&p, &credential)?;
                        println!("written to {} (mode 0600)", p.display());
                    }
                    Ok(())
                }
                other => print_response(other),
            }
        }
        Cmd::Devices => print_response(admin_call(s, Request::ListDevices).await?),
        Cmd::Revoke { device_id } => {
            print_response(admin_call(s, Request::RevokeDevice { device_id }).await?)
        }
        Cmd::Lockout => print_response(admin_call(s, Request::Lockout).await?),
        Cmd::Audit { limit } => print_response(admin_call(s, Request::Audit { limit }).await?),
        Cmd::Status => print_response(admin_call(s, Request::Status).await?),
        Cmd::ConfirmRecovery {
            authorization,
            code,
        } => {
            let authorization = std::fs::read(&authorization)
                .with_context(|| format!("reading {}", authorization.display()))?;
            let new_code = read_code(&code, "New security code: ")?;
            print_response(
                admin_call(
                    s,
                    Request::ConfirmRecovery {
                        authorization,
                        new_code,
                    },
                )
                .await?,
            )
        }
        Cmd::Lock(_)
        | Cmd::Unlock(_)
        | Cmd::Start(_)
        | Cmd::Stop(_)
        | Cmd::Flash(_)
        | Cmd::Horn(_)
        | Cmd::Watch { .. }
        | Cmd::ResetAuth { .. }
        | Cmd::Sim { .. } => {
            bail!("not available in this build: needs telematics-security/link/canio wiring")
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telematicsctl: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telematicsctl: {e:#}");
            std::process::ExitCode::FAILURE
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
            assert!(
                matches!(ok.cmd, Cmd::Lock(ref r) | Cmd::Unlock(ref r) | Cmd::Start(ref r)
                | Cmd::Stop(ref r) | Cmd::Flash(ref r) | Cmd::Horn(ref r) if r.code.code_stdin)
            );
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
    }

    #[test]
    fn private_file_mode_and_no_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("tctl-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let p = d.join("cred");
        let _ = std::fs::remove_file(&p);
        write_private(&p, "secret-cred").expect("write");
        let m = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        assert!(write_private(&p, "again").is_err(), "never overwrites");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn qr_renders() {
        let q = qr_text("tmd1:abcdef").expect("qr");
        assert!(q.lines().count() > 10);
    }
}
