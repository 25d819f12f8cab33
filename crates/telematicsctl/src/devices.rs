//! Paired devices from the owner's / back end's side (docs/topics.md "Paired devices"):
//! `devices --remote` reads the vehicle's retained device list over MQTT (asking for a fresh
//! one on `vehicles/{vin}/devices/request`), `revoke-device --remote` revokes a device either
//! as the back end (signs a COSE_Sign1 revocation with the back-end key and publishes it on
//! `vehicles/{vin}/devices/revoke`, then waits for the outcome on
//! `vehicles/{vin}/devices/revocations`) or as another paired device (the `revoke_device`
//! command, security code required, through [`crate::remote::send_command`]). Without
//! `--remote` both use the admin socket in the car. `--json` prints one JSON object.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use ring::rand::SystemRandom;
use rumqttc::{Event, Packet, QoS};
use telematics_admin::{self as admin, Request, Response};

use crate::output::{print_error, rfc3339};
use telematics_link::topics;
use telematics_security::{Action, KeyId};
use telematics_telemetry::{DeviceList, DeviceStatus, RevocationOutcome};

use crate::cli::{CodeInput, MqttArgs, read_code};
use crate::mqtt::{MqttConn, check_connack, check_suback, connect, disconnect, sanitize};
use crate::remote::{CommandOutcome, CommandSpec, EXIT_REJECTED, EXIT_TIMEOUT, send_command};
use crate::{CtlError, counter, keys, remote, watch};

/// Longest validity `revoke-device --remote --backend-key` signs (the vehicle's cap).
pub const MAX_REVOKE_TTL_S: u64 = telematics_security::revocation::MAX_REVOKE_TTL_SECS;

/// `telematicsctl devices`.
#[derive(Args, Debug, Clone)]
pub struct DevicesArgs {
    /// Read the list the vehicle publishes over MQTT (back end / owner's app) instead of the
    /// admin socket in the car.
    #[arg(long)]
    pub remote: bool,
    /// VIN (with --remote).
    #[arg(long, required_if_eq("remote", "true"))]
    pub vin: Option<String>,
    /// Print one JSON object: the global `--json` (set by the command dispatch).
    #[arg(skip)]
    pub json: bool,
    /// Seconds to wait for the list (with --remote).
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    /// Broker connection (with --remote).
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

/// `telematicsctl revoke-device`.
#[derive(Args, Debug, Clone)]
pub struct RevokeDeviceArgs {
    /// Key id of the device to revoke (hex, as listed by `devices`).
    pub device_id: String,
    /// Revoke over MQTT: as the back end (`--backend-key`) or as another paired device
    /// (`--credential`, security code required); without it, through the admin socket.
    #[arg(long)]
    pub remote: bool,
    /// VIN (with --remote --backend-key; a device credential names its own).
    #[arg(long)]
    pub vin: Option<String>,
    /// Back-end signing key (PKCS#8, e.g. from `backend-keygen`): sign the revocation as the
    /// back end.
    #[arg(long, conflicts_with = "credential")]
    pub backend_key: Option<PathBuf>,
    /// Credential of another paired device of the same car (`TMDC1:`): send `revoke_device`
    /// as that device (its counter is kept in `<credential>.counter`).
    #[arg(long, short = 'c')]
    pub credential: Option<PathBuf>,
    /// Validity in seconds (back end: at most 7 days; device: the command TTL).
    #[arg(long, default_value_t = 60)]
    pub ttl_s: u64,
    /// Seconds to wait for the outcome.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Print one JSON object: the global `--json` (set by the command dispatch).
    #[arg(skip)]
    pub json: bool,
    /// Broker connection (with --remote).
    #[command(flatten)]
    pub mqtt: MqttArgs,
    /// Code input (with --credential).
    #[command(flatten)]
    pub code: CodeInput,
}

/// The published form of a status, for JSON and tables.
fn status_fields(s: DeviceStatus) -> (&'static str, Option<u64>) {
    match s {
        DeviceStatus::Active => ("active", None),
        DeviceStatus::Revoked { at } | DeviceStatus::VoidedByRecovery { at } => {
            (s.as_str(), Some(at))
        }
    }
}

/// JSON form of a device list (`key_id` in hex; times in Unix milliseconds, as published).
pub fn device_list_json(l: &DeviceList) -> serde_json::Value {
    let devices: Vec<_> = l
        .devices
        .iter()
        .map(|d| {
            let (status, status_at) = status_fields(d.status);
            serde_json::json!({
                "key_id": hex::encode(&d.key_id),
                "name": d.name,
                "paired_at": d.paired_at,
                "last_command_at": d.last_command_at,
                "status": status,
                "status_at": status_at,
            })
        })
        .collect();
    serde_json::json!({ "vin": l.vin, "at": l.at, "devices": devices })
}

/// One line per device: key id, name, paired at, last command at, status.
pub fn device_list_table(l: &DeviceList) -> String {
    let time = |ms: u64| rfc3339(ms / 1000);
    let mut out = format!(
        "{:<18} {:<20} {:<20} {:<20} STATUS\n",
        "KEY_ID", "NAME", "PAIRED_AT", "LAST_CMD_AT"
    );
    for d in &l.devices {
        let (status, at) = status_fields(d.status);
        let last = d.last_command_at.map_or("-".to_string(), time);
        let status = at.map_or(status.to_string(), |t| format!("{status} at {}", time(t)));
        out.push_str(&format!(
            "{:<18} {:<20} {:<20} {:<20} {status}\n",
            hex::encode(&d.key_id),
            sanitize(&d.name),
            time(d.paired_at),
            last
        ));
    }
    out
}

/// Subscribes to `listen`, publishes `payload` on `send` once the subscription is granted, and
/// returns the first message on `listen` that `accept` takes (`None` after `timeout`).
async fn publish_and_wait<T>(
    conn: &MqttConn,
    listen: &str,
    send: &str,
    payload: Vec<u8>,
    timeout: Duration,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Result<Option<T>, CtlError> {
    let (client, mut ev) = connect(conn)?;
    client
        .subscribe(listen, QoS::AtLeastOnce)
        .await
        .map_err(|e| CtlError::Mqtt(e.to_string()))?;
    let mut sent = false;
    let run = async {
        loop {
            let event = ev
                .poll()
                .await
                .map_err(|e| CtlError::Mqtt(format!("{}:{}: {e}", conn.host, conn.port)))?;
            match event {
                Event::Incoming(Packet::ConnAck(ack)) => check_connack(ack.code)?,
                Event::Incoming(Packet::SubAck(ack)) if !sent => {
                    check_suback(&ack, listen)?;
                    client
                        .publish(send, QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .map_err(|e| CtlError::Mqtt(e.to_string()))?;
                    sent = true;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == listen => {
                    if let Some(v) = accept(&p.payload) {
                        return Ok::<T, CtlError>(v);
                    }
                }
                _ => {}
            }
        }
    };
    let out = match tokio::time::timeout(timeout, run).await {
        Ok(r) => Some(r?),
        Err(_elapsed) => None,
    };
    disconnect(&client, &mut ev).await;
    Ok(out)
}

/// Reads the device list `vin` publishes (the retained one, or the fresh one the request
/// asks for, whichever arrives first); `None` if none within `timeout`.
pub async fn fetch_devices(
    conn: &MqttConn,
    vin: &str,
    timeout: Duration,
) -> Result<Option<DeviceList>, CtlError> {
    watch::check_vin(vin)?;
    publish_and_wait(
        conn,
        &topics::devices(vin),
        &topics::devices_request(vin),
        Vec::new(),
        timeout,
        |b| DeviceList::decode(b).ok().filter(|l| l.vin == vin),
    )
    .await
}

/// Back end: signs a revocation of `key_id` for `vin` (valid `ttl_s` from now), publishes it
/// and returns the vehicle's outcome for its nonce (`None` if none within `timeout`: vehicle
/// offline; it takes effect when the vehicle receives it, until it expires).
pub async fn revoke_as_backend(
    conn: &MqttConn,
    key: &ring::signature::Ed25519KeyPair,
    vin: &str,
    key_id: &[u8],
    ttl_s: u64,
    timeout: Duration,
) -> Result<Option<RevocationOutcome>, CtlError> {
    watch::check_vin(vin)?;
    if ttl_s == 0 || ttl_s > MAX_REVOKE_TTL_S {
        return Err(CtlError::Invalid(format!(
            "ttl must be 1..={MAX_REVOKE_TTL_S} seconds"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CtlError::Invalid("system clock before 1970".into()))?
        .as_secs();
    let rev = telematics_security::DeviceRevocation::new(
        vin,
        key_id,
        now,
        now.saturating_add(ttl_s),
        &SystemRandom::new(),
    )?;
    let signed = rev.sign(key)?;
    publish_and_wait(
        conn,
        &topics::devices_revocations(vin),
        &topics::devices_revoke(vin),
        signed,
        timeout,
        |b| {
            RevocationOutcome::decode(b)
                .ok()
                .filter(|o| o.nonce == rev.nonce)
        },
    )
    .await
}

fn parse_key_id(s: &str) -> Result<Vec<u8>, CtlError> {
    match hex::decode(s.trim()) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(CtlError::Invalid(format!(
            "device id {:?} must be hex",
            sanitize(s)
        ))),
    }
}

async fn admin_call(socket: &std::path::Path, req: Request) -> anyhow::Result<Response> {
    use anyhow::Context;
    admin::call(socket, &req)
        .await
        .with_context(|| format!("admin socket {}", socket.display()))
}

/// Runs `telematicsctl devices`; returns the exit code (5: no list within the timeout).
pub async fn run_devices(args: DevicesArgs, socket: &std::path::Path) -> anyhow::Result<u8> {
    if !args.remote {
        // The admin socket's answer, printed like every admin response (`--json`: its serde
        // form, tagged by `result`).
        crate::cli::print_response(admin_call(socket, Request::ListDevices).await?, args.json)?;
        return Ok(0);
    }
    let conn = args.mqtt.conn()?;
    let vin = args.vin.unwrap_or_default();
    match fetch_devices(&conn, &vin, Duration::from_secs(args.timeout_s)).await? {
        Some(l) if args.json => println!("{}", device_list_json(&l)),
        Some(l) => print!("{}", device_list_table(&l)),
        None => {
            let msg = format!("no device list from {vin} within {} s", args.timeout_s);
            print_error(args.json, "no_result", &msg, None);
            return Ok(EXIT_TIMEOUT);
        }
    }
    Ok(0)
}

/// Runs `telematicsctl revoke-device`; returns the exit code (0 revoked, 3 refused, 5 no
/// outcome within the timeout).
pub async fn run_revoke_device(
    args: RevokeDeviceArgs,
    socket: &std::path::Path,
) -> anyhow::Result<u8> {
    let key_id = parse_key_id(&args.device_id)?;
    let print = |v: serde_json::Value, text: String| {
        if args.json {
            println!("{v}");
        } else {
            println!("{text}");
        }
    };
    if !args.remote {
        let r = admin_call(
            socket,
            Request::RevokeDevice {
                device_id: hex::encode(&key_id),
            },
        )
        .await?;
        return Ok(match r {
            Response::Done => {
                print(
                    serde_json::json!({"outcome": "revoked", "key_id": hex::encode(&key_id)}),
                    format!("revoked {}", hex::encode(&key_id)),
                );
                0
            }
            Response::Error { code, message, .. } => {
                print(
                    serde_json::json!({"outcome": "refused", "reason_code": code}),
                    format!("refused [{code}]: {message}"),
                );
                EXIT_REJECTED
            }
            other => anyhow::bail!("daemon answered {other:?}"),
        });
    }
    let conn = args.mqtt.conn()?;
    let timeout = Duration::from_secs(args.timeout_s);
    if let Some(key) = &args.backend_key {
        let Some(vin) = args.vin.as_deref() else {
            anyhow::bail!("--vin is required with --backend-key");
        };
        let pair = keys::load_backend_key(key)?;
        let outcome = revoke_as_backend(&conn, &pair, vin, &key_id, args.ttl_s, timeout).await?;
        let kid = hex::encode(&key_id);
        return Ok(match outcome {
            Some(o) => match o.refused {
                None => {
                    print(
                        serde_json::json!({"outcome": "revoked", "key_id": kid, "nonce": hex::encode(&o.nonce)}),
                        format!("revoked {kid}"),
                    );
                    0
                }
                Some(code) => {
                    let code = sanitize(&code);
                    print(
                        serde_json::json!({"outcome": "refused", "key_id": kid, "reason_code": code}),
                        format!("refused: {code}"),
                    );
                    EXIT_REJECTED
                }
            },
            None => {
                let msg = format!(
                    "no outcome for {kid} within {} s (vehicle offline? the revocation still \
                     takes effect when it arrives, until it expires)",
                    args.timeout_s
                );
                print_error(args.json, "no_result", &msg, None);
                EXIT_TIMEOUT
            }
        });
    }
    let Some(cred_path) = &args.credential else {
        anyhow::bail!(
            "--remote needs --backend-key (as the back end) or --credential (as a device)"
        );
    };
    let cred = remote::read_credential(cred_path)?;
    let code = read_code(&args.code, "Security code: ")?;
    let spec = CommandSpec {
        action: Action::RevokeDevice {
            key_id: KeyId(key_id.clone()),
        },
        code: code.0,
        ttl_s: args.ttl_s,
        timeout,
    };
    let counter_file = counter::counter_path(cred_path);
    let (outcome, sent) = send_command(&conn, &cred, &counter_file, &spec, |_| {}).await?;
    let kid = hex::encode(&key_id);
    let command = hex::encode(sent.command_id.0);
    let (json, text) = match &outcome {
        CommandOutcome::Executed => (
            serde_json::json!({"outcome": "revoked", "key_id": kid, "command_id": command}),
            format!("revoked {kid}"),
        ),
        CommandOutcome::Rejected { reason, .. } | CommandOutcome::Failed { reason, .. } => (
            serde_json::json!({"outcome": "refused", "key_id": kid, "reason_code": sanitize(reason), "command_id": command}),
            format!("refused: {}", sanitize(reason)),
        ),
        CommandOutcome::Timeout { .. } => {
            let msg = format!(
                "no result for command {command} within {} s",
                args.timeout_s
            );
            print_error(args.json, "no_result", &msg, None);
            return Ok(outcome.exit_code());
        }
    };
    print(json, text);
    Ok(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::Parser;
    use telematics_telemetry::DeviceEntry;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("telematicsctl").chain(args.iter().copied()))
    }

    #[test]
    fn subcommands_parse_and_refuse_contradictions() {
        let c = parse(&["devices", "--remote", "--vin", "V1", "--json"]).unwrap();
        assert!(
            c.json
                && matches!(c.cmd, Cmd::Devices(a) if a.remote && a.vin.as_deref() == Some("V1"))
        );
        assert!(parse(&["devices", "--remote"]).is_err(), "--vin required");
        assert!(matches!(parse(&["devices"]).unwrap().cmd, Cmd::Devices(a) if !a.remote));
        let c = parse(&[
            "revoke-device",
            "0102",
            "--remote",
            "--vin",
            "V",
            "--backend-key",
            "k",
        ]);
        assert!(matches!(c.unwrap().cmd, Cmd::RevokeDevice(a) if a.backend_key.is_some()));
        let both = [
            "revoke-device",
            "0102",
            "--remote",
            "--backend-key",
            "k",
            "-c",
            "cred",
        ];
        assert!(parse(&both).is_err(), "back end or device, not both");
        assert!(parse(&["revoke-device"]).is_err(), "device id required");
        assert!(parse_key_id("zz").is_err() && parse_key_id("").is_err());
        assert_eq!(parse_key_id("0A0b").unwrap(), vec![10, 11]);
    }

    #[test]
    fn list_prints_every_field_and_no_escape() {
        let l = DeviceList {
            vin: "V".into(),
            at: 5,
            devices: vec![
                DeviceEntry {
                    key_id: vec![1; 8],
                    name: "a\x1b[31m".into(),
                    paired_at: 10_000,
                    last_command_at: Some(20_000),
                    status: DeviceStatus::Active,
                },
                DeviceEntry {
                    key_id: vec![2; 8],
                    name: "b".into(),
                    paired_at: 11_000,
                    last_command_at: None,
                    status: DeviceStatus::Revoked { at: 30_000 },
                },
            ],
        };
        let t = device_list_table(&l);
        assert!(
            t.contains("0101010101010101") && t.contains("revoked at 1970-01-01T00:00:30Z"),
            "{t}"
        );
        assert!(!t.contains('\x1b'), "{t}");
        let j = device_list_json(&l);
        assert_eq!(j["devices"][0]["last_command_at"], 20_000);
        assert_eq!(j["devices"][1]["status"], "revoked");
        assert_eq!(j["devices"][1]["status_at"], 30_000);
        assert!(j["devices"][1]["last_command_at"].is_null());
    }
}
