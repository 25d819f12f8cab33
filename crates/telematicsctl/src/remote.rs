//! Remote commands: build an authenticated command envelope, publish it over mTLS MQTT and
//! follow the vehicle's results for it.
//!
//! Order of operations (each step before the next): parse the credential, check the code
//! format, reserve the counter durably ([`crate::counter::next`]), build the envelope, connect,
//! subscribe to `vehicles/{vin}/results` and wait for the SubAck, publish QoS 1 to
//! `vehicles/{vin}/commands`, then print the results carrying our command id until a terminal
//! state (`executed`, `failed`, `rejected`) or the timeout.
//!
//! Faults detected before the vehicle can decrypt the command (`decode`, `unknown_key`,
//! `revoked_key`, `aead`) produce no result at all — the vehicle cannot authenticate the
//! command id — so those end in [`CommandOutcome::Timeout`].

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use rumqttc::{Event, Packet, QoS};
use telematics_link::topics;
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId, ExportedCredential};
use telematics_telemetry::{CommandResult, ResultState};

use crate::mqtt::{MqttConn, check_connack, check_suback, connect, disconnect, sanitize};
use crate::{CtlError, counter};

/// Exit code: the command was executed.
pub const EXIT_EXECUTED: u8 = 0;
/// Exit code: other error (I/O, TLS, broker, bad credential).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: usage error (clap).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the vehicle rejected the command.
pub const EXIT_REJECTED: u8 = 3;
/// Exit code: the vehicle accepted the command but it failed.
pub const EXIT_FAILED: u8 = 4;
/// Exit code: no terminal result within the timeout.
pub const EXIT_TIMEOUT: u8 = 5;

/// Longest command TTL the tool will sign (the vehicle enforces its own, usually shorter, cap).
pub const MAX_TTL_S: u64 = 3600;

/// What one command is.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The action.
    pub action: Action,
    /// The owner's security code (never logged; `Debug` is redacted).
    pub code: String,
    /// Validity of the command in seconds from now (1..=[`MAX_TTL_S`]).
    pub ttl_s: u64,
    /// How long to wait for a terminal result (connection included).
    pub timeout: Duration,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("action", &self.action)
            .field("code", &"<redacted>")
            .field("ttl_s", &self.ttl_s)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The vehicle confirmed execution.
    Executed,
    /// The vehicle refused the command.
    Rejected {
        /// Stable reason code (e.g. `wrong_code`, `locked_out`, `stale_state`).
        reason: String,
        /// Detail text from the vehicle, if any.
        detail: Option<String>,
        /// For `locked_out` / a `wrong_code` that started a wait: seconds until a code check
        /// is allowed again.
        retry_after_s: Option<u64>,
    },
    /// The vehicle accepted the command but execution failed.
    Failed {
        /// Stable reason code.
        reason: String,
        /// Detail text from the vehicle, if any.
        detail: Option<String>,
    },
    /// No terminal result within the timeout.
    Timeout {
        /// The broker acknowledged the command (PubAck): it was delivered to the broker, the
        /// vehicle is offline or could not authenticate it.
        published: bool,
        /// A non-terminal result (`accepted`) arrived.
        accepted: bool,
    },
}

impl CommandOutcome {
    /// The process exit code for this outcome (0 executed, 3 rejected, 4 failed, 5 timeout).
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandOutcome::Executed => EXIT_EXECUTED,
            CommandOutcome::Rejected { .. } => EXIT_REJECTED,
            CommandOutcome::Failed { .. } => EXIT_FAILED,
            CommandOutcome::Timeout { .. } => EXIT_TIMEOUT,
        }
    }
}

/// What a command was sent with (for tests and logs; no secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentCommand {
    /// The random command id.
    pub command_id: CommandId,
    /// The counter value used.
    pub counter: u64,
}

/// One readable line for a result: `accepted`, `executed`, `rejected: wrong_code`,
/// `rejected: locked_out (retry in 60 s)`, `failed: timeout (detail)`. Untrusted text is
/// stripped of control characters.
pub fn format_result(r: &CommandResult) -> String {
    let state = r.state.as_str();
    let Some(reason) = r.reason_code.as_deref() else {
        return match r.detail.as_deref() {
            Some(d) if r.state != ResultState::Accepted && r.state != ResultState::Executed => {
                format!("{state} ({})", sanitize(d))
            }
            _ => state.to_string(),
        };
    };
    let reason = sanitize(reason);
    let detail = match (r.retry_after_s, r.detail.as_deref()) {
        (Some(s), _) => Some(format!("retry in {s} s")),
        (None, Some("until_recovery")) if reason == "locked_out" => {
            Some("locked until recovery".to_string())
        }
        (None, d) => d.map(sanitize),
    };
    match detail {
        Some(d) if !d.is_empty() => format!("{state}: {reason} ({d})"),
        _ => format!("{state}: {reason}"),
    }
}

/// The message printed on [`CommandOutcome::Timeout`].
pub fn timeout_message(outcome: &CommandOutcome, timeout: Duration) -> Option<String> {
    let CommandOutcome::Timeout {
        published,
        accepted,
    } = outcome
    else {
        return None;
    };
    let s = timeout.as_secs();
    Some(if *accepted {
        format!("accepted, but no final result within {s} s")
    } else if *published {
        format!("no result within {s} s (vehicle offline, or credential unknown/revoked)")
    } else {
        format!("command not acknowledged by the broker within {s} s (broker unreachable?)")
    })
}

fn unix_now() -> Result<u64, CtlError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CtlError::Invalid("system clock before 1970".into()))
}

/// Reads a credential file (`TMDC1:...` text); a malformed one is `ctl.invalid`.
pub fn read_credential(path: &Path) -> Result<ExportedCredential, CtlError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CtlError::io("reading credential", path, e))?;
    ExportedCredential::from_text(&text).map_err(|e| {
        CtlError::Invalid(format!("credential {}: {e} ({})", path.display(), e.code()))
    })
}

/// The local check of a typed security code before anything is sent. A code that breaks the
/// code rules cannot be the vehicle's code: refuse it locally rather than spending a counter
/// and a lockout attempt on a typo. The error is the security crate's
/// [`telematics_security::Error::WeakCode`]: its message names the rule that failed, the
/// same text the daemon's admin socket gives.
pub fn check_code(code: &str) -> Result<(), CtlError> {
    Ok(telematics_security::validate_code(code)?)
}

/// Sends one command and follows its results; see the module docs for the order of steps.
/// `counter_file` is reserved (incremented durably) before anything is published, also when
/// the command then fails or times out. `on_result` is called for every result carrying our
/// command id (including duplicates and `accepted`). Errors (TLS, broker refusal, I/O) are
/// `Err`; every vehicle answer or timeout is an `Ok` [`CommandOutcome`].
pub async fn send_command(
    conn: &MqttConn,
    cred: &ExportedCredential,
    counter_file: &Path,
    spec: &CommandSpec,
    mut on_result: impl FnMut(&CommandResult),
) -> Result<(CommandOutcome, SentCommand), CtlError> {
    if spec.ttl_s == 0 || spec.ttl_s > MAX_TTL_S {
        return Err(CtlError::Invalid(format!(
            "ttl must be 1..={MAX_TTL_S} seconds"
        )));
    }
    check_code(&spec.code)?;
    let rng = SystemRandom::new();
    let mut id = [0u8; 16];
    rng.fill(&mut id)
        .map_err(|_| CtlError::Security(telematics_security::Error::Rng))?;
    let command_id = CommandId(id);
    // Durable before publishing: a counter is never reused, even after a crash.
    let counter = counter::next(counter_file)?;
    let now = unix_now()?;
    let req = CommandRequest {
        command_id,
        action: spec.action.clone(),
        counter,
        issued_at: now,
        expires_at: now.saturating_add(spec.ttl_s),
        code: spec.code.clone(),
    };
    let envelope = build_command(cred, &req, &rng)?;
    drop(req);
    let sent = SentCommand {
        command_id,
        counter,
    };

    let (client, mut ev) = connect(conn)?;
    let results_topic = topics::results(&cred.vin);
    let commands_topic = topics::commands(&cred.vin);
    client
        .subscribe(results_topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| CtlError::Mqtt(e.to_string()))?;

    let mut published = false;
    let mut accepted = false;
    let mut publish_sent = false;
    let run = async {
        loop {
            let event = ev.poll().await.map_err(|e| {
                let hint = if publish_sent {
                    " (after sending the command: it may still be executed)"
                } else {
                    ""
                };
                CtlError::Mqtt(format!("{}:{}: {e}{hint}", conn.host, conn.port))
            })?;
            match event {
                Event::Incoming(Packet::ConnAck(ack)) => check_connack(ack.code)?,
                Event::Incoming(Packet::SubAck(ack)) if !publish_sent => {
                    check_suback(&ack, &results_topic)?;
                    client
                        .publish(
                            commands_topic.clone(),
                            QoS::AtLeastOnce,
                            false,
                            envelope.clone(),
                        )
                        .await
                        .map_err(|e| CtlError::Mqtt(e.to_string()))?;
                    publish_sent = true;
                }
                Event::Incoming(Packet::PubAck(_)) => published = true,
                Event::Incoming(Packet::Publish(p)) if p.topic == results_topic => {
                    // Results of other commands, or garbage, are not ours to judge.
                    let Ok(r) = CommandResult::decode(&p.payload) else {
                        continue;
                    };
                    if r.command_id != command_id.0 {
                        continue;
                    }
                    on_result(&r);
                    let reason = || r.reason_code.clone().unwrap_or_else(|| "unknown".into());
                    match r.state {
                        ResultState::Accepted => accepted = true,
                        ResultState::Executed => {
                            return Ok::<_, CtlError>(CommandOutcome::Executed);
                        }
                        ResultState::Rejected => {
                            return Ok(CommandOutcome::Rejected {
                                reason: reason(),
                                detail: r.detail.clone(),
                                retry_after_s: r.retry_after_s,
                            });
                        }
                        ResultState::Failed => {
                            return Ok(CommandOutcome::Failed {
                                reason: reason(),
                                detail: r.detail.clone(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    };
    let outcome = tokio::time::timeout(spec.timeout, run).await;
    let outcome = match outcome {
        Ok(r) => r?,
        Err(_elapsed) => CommandOutcome::Timeout {
            published,
            accepted,
        },
    };
    disconnect(&client, &mut ev).await;
    Ok((outcome, sent))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn res(state: ResultState, reason: Option<&str>, detail: Option<&str>) -> CommandResult {
        CommandResult {
            command_id: [7; 16],
            state,
            reason_code: reason.map(str::to_owned),
            detail: detail.map(str::to_owned),
            at: 1,
            retry_after_s: None,
        }
    }

    #[test]
    fn result_lines() {
        use ResultState::*;
        assert_eq!(format_result(&res(Accepted, None, None)), "accepted");
        assert_eq!(format_result(&res(Executed, None, None)), "executed");
        assert_eq!(
            format_result(&res(Rejected, Some("wrong_code"), None)),
            "rejected: wrong_code"
        );
        assert_eq!(
            format_result(&CommandResult {
                retry_after_s: Some(60),
                ..res(Rejected, Some("locked_out"), None)
            }),
            "rejected: locked_out (retry in 60 s)"
        );
        assert_eq!(
            format_result(&res(Rejected, Some("locked_out"), Some("until_recovery"))),
            "rejected: locked_out (locked until recovery)"
        );
        assert_eq!(
            format_result(&res(Failed, Some("timeout"), Some("no\x1b[2Jconfirmation"))),
            "failed: timeout (no?[2Jconfirmation)"
        );
        assert_eq!(
            format_result(&res(Rejected, Some("stale_state"), Some("Vehicle.Speed"))),
            "rejected: stale_state (Vehicle.Speed)"
        );
    }

    #[test]
    fn outcome_exit_codes() {
        let r = |reason: &str| CommandOutcome::Rejected {
            reason: reason.into(),
            detail: None,
            retry_after_s: None,
        };
        assert_eq!(CommandOutcome::Executed.exit_code(), 0);
        assert_eq!(r("wrong_code").exit_code(), 3);
        let f = CommandOutcome::Failed {
            reason: "timeout".into(),
            detail: None,
        };
        assert_eq!(f.exit_code(), 4);
        let t = CommandOutcome::Timeout {
            published: true,
            accepted: false,
        };
        assert_eq!(t.exit_code(), 5);
        assert_eq!(
            timeout_message(&t, Duration::from_secs(30)).unwrap(),
            "no result within 30 s (vehicle offline, or credential unknown/revoked)"
        );
        assert_eq!(timeout_message(&f, Duration::from_secs(30)), None);
    }

    #[test]
    fn spec_debug_redacts_code() {
        let s = CommandSpec {
            action: Action::Lock,
            code: "2580".into(),
            ttl_s: 60,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{s:?}").contains("2580"));
    }

    #[tokio::test]
    async fn invalid_code_or_ttl_spends_no_counter() {
        let d = tempfile::tempdir().unwrap();
        let counter_file = d.path().join("c.counter");
        let cred = ExportedCredential {
            vin: "WBA3A5C51CF256985".into(),
            key_id: telematics_security::KeyId(vec![1; 8]),
            secret: [2; 32],
            name: "phone".into(),
        };
        let conn = MqttConn {
            host: "localhost".into(),
            port: 1,
            tls: telematics_link::TlsFiles {
                cert_chain: "/nonexistent".into(),
                key: "/nonexistent".into(),
                ca: "/nonexistent".into(),
            },
        };
        for (code, ttl) in [("12a4", 60), ("", 60), ("2580", 0), ("2580", MAX_TTL_S + 1)] {
            let spec = CommandSpec {
                action: Action::Lock,
                code: code.into(),
                ttl_s: ttl,
                timeout: Duration::from_secs(1),
            };
            let e = send_command(&conn, &cred, &counter_file, &spec, |_| {})
                .await
                .unwrap_err();
            let want = if ttl == 60 {
                "weak_code"
            } else {
                "ctl.invalid"
            };
            assert_eq!(e.code(), want, "{code:?}/{ttl}");
            assert!(!counter_file.exists(), "{code:?}/{ttl}: no counter spent");
        }
    }
}
