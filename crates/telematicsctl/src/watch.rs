//! `watch`: subscribe to a vehicle's topics and print every message decoded, one per line.

use rumqttc::{Event, Packet, QoS};
use telematics_link::{Presence, Status, topics};
use telematics_telemetry::{
    Alert, AlertState, CommandResult, SignalValue, Telemetry, TelemetryKind,
};

use crate::CtlError;
use crate::mqtt::{MqttConn, check_connack, check_suback, connect, disconnect, sanitize};
use crate::output::{alert_json, result_json, rfc3339_ms, telemetry_json};
use crate::remote::format_result;
use serde_json::json;

/// A watchable vehicle topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchTopic {
    /// `vehicles/{vin}/telemetry`.
    Telemetry,
    /// `vehicles/{vin}/alerts`.
    Alerts,
    /// `vehicles/{vin}/results`.
    Results,
    /// `vehicles/{vin}/status` (retained).
    Status,
}

impl WatchTopic {
    /// All topics, in display order.
    pub const ALL: [WatchTopic; 4] = [
        WatchTopic::Telemetry,
        WatchTopic::Alerts,
        WatchTopic::Results,
        WatchTopic::Status,
    ];

    /// The topic name for `vin`.
    pub fn topic(self, vin: &str) -> String {
        match self {
            WatchTopic::Telemetry => topics::telemetry(vin),
            WatchTopic::Alerts => topics::alerts(vin),
            WatchTopic::Results => topics::results(vin),
            WatchTopic::Status => topics::status(vin),
        }
    }

    /// The short name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WatchTopic::Telemetry => "telemetry",
            WatchTopic::Alerts => "alerts",
            WatchTopic::Results => "results",
            WatchTopic::Status => "status",
        }
    }
}

fn value(v: &SignalValue) -> String {
    match v {
        SignalValue::Bool(b) => b.to_string(),
        SignalValue::Int(i) => i.to_string(),
        SignalValue::Float(f) => f.to_string(),
        SignalValue::Text(t) => format!("{:?}", sanitize(t)),
    }
}

fn telemetry_line(t: &Telemetry) -> String {
    let kind = match t.kind {
        TelemetryKind::Snapshot => "snapshot",
        TelemetryKind::Delta => "delta",
    };
    // Every signal: a snapshot carries them all (the line used to stop after 8).
    let mut line = format!("telemetry {kind} seq={} at={}", t.seq, rfc3339_ms(t.at));
    for (path, v) in &t.signals {
        line.push_str(&format!(" {}={}", sanitize(path), value(v)));
    }
    if !t.stale.is_empty() {
        let stale: Vec<String> = t.stale.iter().map(|s| sanitize(s)).collect();
        line.push_str(&format!(" stale=[{}]", stale.join(",")));
    }
    line
}

fn alert_line(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Raised => "raised",
        AlertState::Cleared => "cleared",
    };
    let mut line = format!(
        "alert {} {state} at={}",
        sanitize(&a.kind),
        rfc3339_ms(a.at)
    );
    if let Some(s) = &a.signal {
        line.push_str(&format!(" signal={}", sanitize(s)));
    }
    if let Some(v) = &a.value {
        line.push_str(&format!(" value={}", value(v)));
    }
    if let Some(t) = a.threshold {
        line.push_str(&format!(" threshold={t}"));
    }
    if let Some(n) = a.count {
        line.push_str(&format!(" count={n}"));
    }
    if let Some(d) = &a.device {
        line.push_str(&format!(" device={}", sanitize(d)));
    }
    if let Some(u) = a.until {
        line.push_str(&format!(" until={}", rfc3339_ms(u)));
    }
    line
}

fn status_line(s: &Status) -> String {
    let state = match s.state {
        Presence::Online => "online",
        Presence::Offline => "offline",
        Presence::CommandsRefused => "commands_refused",
    };
    format!(
        "status {state} agent={} build={} config={} dbc={} mapping={} profile={} at={}",
        sanitize(&s.agent_version),
        sanitize(&s.build),
        sanitize(&s.config_version),
        sanitize(&s.dbc_hash),
        sanitize(&s.mapping_hash),
        sanitize(&s.profile_hash),
        rfc3339_ms(s.at)
    )
}

/// Decodes one message received on `topic` (a topic of `vin`) into a display line.
/// Undecodable payloads give `<topic>: undecodable (<error code>)`; a topic that is not one of
/// the vehicle's gives `<topic>: unexpected topic`.
pub fn format_message(vin: &str, topic: &str, payload: &[u8]) -> String {
    let kind = WatchTopic::ALL.into_iter().find(|t| t.topic(vin) == topic);
    let decoded = match kind {
        None => return format!("{}: unexpected topic", sanitize(topic)),
        Some(WatchTopic::Telemetry) => Telemetry::decode(payload)
            .map(|t| telemetry_line(&t))
            .map_err(|e| e.code()),
        Some(WatchTopic::Alerts) => Alert::decode(payload)
            .map(|a| alert_line(&a))
            .map_err(|e| e.code()),
        Some(WatchTopic::Results) => CommandResult::decode(payload)
            .map(|r| format!("result {} {}", hex::encode(r.command_id), format_result(&r)))
            .map_err(|e| e.code()),
        // The status is the link's own payload (one type: telematics_link::Status).
        Some(WatchTopic::Status) => Status::from_cbor(payload)
            .map(|s| status_line(&s))
            .ok_or("status_schema"),
    };
    decoded.unwrap_or_else(|code| format!("{}: undecodable ({code})", sanitize(topic)))
}

/// [`format_message`] as one JSON object (a line of NDJSON): `{"type": "telemetry" | "alert" |
/// "result" | "status", ...}` with every field, or `{"type": "undecodable", "topic", "code"}`.
pub fn format_message_json(vin: &str, topic: &str, payload: &[u8]) -> String {
    let kind = WatchTopic::ALL.into_iter().find(|t| t.topic(vin) == topic);
    let decoded = match kind {
        None => Err("unexpected_topic"),
        Some(WatchTopic::Telemetry) => Telemetry::decode(payload)
            .map(|t| telemetry_json(&t))
            .map_err(|e| e.code()),
        Some(WatchTopic::Alerts) => Alert::decode(payload)
            .map(|a| alert_json(&a))
            .map_err(|e| e.code()),
        Some(WatchTopic::Results) => CommandResult::decode(payload)
            .map(|r| result_json(&r))
            .map_err(|e| e.code()),
        Some(WatchTopic::Status) => Status::from_cbor(payload)
            .and_then(|s| serde_json::to_value(s).ok())
            .map(|mut v| {
                v["type"] = json!("status");
                v
            })
            .ok_or("status_schema"),
    };
    decoded
        .unwrap_or_else(|code| json!({ "type": "undecodable", "topic": topic, "code": code }))
        .to_string()
}

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// The vehicle.
    pub vin: String,
    /// Topics to subscribe to (non-empty).
    pub topics: Vec<WatchTopic>,
    /// Stop after this many messages (`None`: until the connection ends or the task is
    /// cancelled).
    pub count: Option<u64>,
    /// One JSON object per message ([`format_message_json`]) instead of a readable line.
    pub json: bool,
}

/// Checks that a VIN can be used inside a topic name.
pub(crate) fn check_vin(vin: &str) -> Result<(), CtlError> {
    if vin.is_empty() || vin.len() > 64 || vin.contains(['/', '+', '#', '\0']) {
        return Err(CtlError::Invalid(format!(
            "vin {:?} must be 1..64 characters without / + # or NUL",
            sanitize(vin)
        )));
    }
    Ok(())
}

/// Subscribes to the requested topics of `spec.vin` and calls `on_line` with one decoded line
/// per message; `on_ready` is called once every subscription is acknowledged. Returns after
/// `spec.count` messages; connection errors are `Err`.
pub async fn watch(
    conn: &MqttConn,
    spec: &WatchSpec,
    mut on_ready: impl FnMut(),
    mut on_line: impl FnMut(&str),
) -> Result<(), CtlError> {
    check_vin(&spec.vin)?;
    if spec.topics.is_empty() {
        return Err(CtlError::Invalid("no topics to watch".into()));
    }
    if spec.count == Some(0) {
        return Ok(());
    }
    let (client, mut ev) = connect(conn)?;
    let mut pending = 0usize;
    for t in &spec.topics {
        client
            .subscribe(t.topic(&spec.vin), QoS::AtLeastOnce)
            .await
            .map_err(|e| CtlError::Mqtt(e.to_string()))?;
        pending += 1;
    }
    let mut seen = 0u64;
    loop {
        let event = ev
            .poll()
            .await
            .map_err(|e| CtlError::Mqtt(format!("{}:{}: {e}", conn.host, conn.port)))?;
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => check_connack(ack.code)?,
            Event::Incoming(Packet::SubAck(ack)) => {
                check_suback(&ack, &format!("vehicles/{}/…", spec.vin))?;
                pending = pending.saturating_sub(1);
                if pending == 0 {
                    on_ready();
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let format = if spec.json {
                    format_message_json
                } else {
                    format_message
                };
                on_line(&format(&spec.vin, &p.topic, &p.payload));
                seen += 1;
                if spec.count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            _ => {}
        }
    }
    disconnect(&client, &mut ev).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;
    use telematics_telemetry::ResultState;

    const VIN: &str = "WBA3A5C51CF256985";

    #[test]
    fn decodes_each_kind() {
        let mut signals = BTreeMap::new();
        signals.insert("Vehicle.Speed".to_string(), SignalValue::Float(42.5));
        signals.insert(
            "Vehicle.Cabin.Door.IsLocked".into(),
            SignalValue::Bool(true),
        );
        let t = Telemetry {
            kind: TelemetryKind::Delta,
            vin: VIN.into(),
            seq: 7,
            at: 1000,
            signals,
            stale: vec!["Vehicle.Powertrain.FuelSystem.Level".into()],
        };
        let line = format_message(VIN, &topics::telemetry(VIN), &t.encode().unwrap());
        assert_eq!(
            line,
            "telemetry delta seq=7 at=1970-01-01T00:00:01.000Z Vehicle.Cabin.Door.IsLocked=true \
             Vehicle.Speed=42.5 stale=[Vehicle.Powertrain.FuelSystem.Level]"
        );
        let a = Alert {
            vin: VIN.into(),
            at: 5,
            kind: "low_fuel".into(),
            signal: Some("Vehicle.Powertrain.FuelSystem.Level".into()),
            state: AlertState::Raised,
            value: Some(SignalValue::Int(9)),
            threshold: Some(10.0),
            count: None,
            device: None,
            until: None,
        };
        assert_eq!(
            format_message(VIN, &topics::alerts(VIN), &a.encode().unwrap()),
            "alert low_fuel raised at=1970-01-01T00:00:00.005Z signal=Vehicle.Powertrain.FuelSystem.Level value=9 \
             threshold=10"
        );
        let mut e = Alert::event(VIN, "security_wrong_code", 5);
        e.count = Some(2);
        e.device = Some("a1b2".into());
        e.until = Some(1_000);
        assert_eq!(
            format_message(VIN, &topics::alerts(VIN), &e.encode().unwrap()),
            "alert security_wrong_code raised at=1970-01-01T00:00:00.005Z count=2 device=a1b2 \
             until=1970-01-01T00:00:01.000Z"
        );
        let r = CommandResult {
            command_id: [0xab; 16],
            state: ResultState::Rejected,
            reason_code: Some("wrong_code".into()),
            detail: None,
            at: 9,
            retry_after_s: None,
        };
        assert_eq!(
            format_message(VIN, &topics::results(VIN), &r.encode().unwrap()),
            format!("result {} rejected: wrong_code", "ab".repeat(16))
        );
        let mut s = Status {
            state: Presence::Offline,
            agent_version: "0.1.0".into(),
            config_version: "c1".into(),
            at: 3_000,
            build: "g1".into(),
            dbc_hash: "d1".into(),
            mapping_hash: "m1".into(),
            profile_hash: "p1".into(),
            cert_serial: "0a".into(),
            cert_not_after: 0,
        };
        assert_eq!(
            format_message(VIN, &topics::status(VIN), &s.to_cbor()),
            "status offline agent=0.1.0 build=g1 config=c1 dbc=d1 mapping=m1 profile=p1 at=1970-01-01T00:00:03.000Z"
        );
        s.state = Presence::CommandsRefused;
        assert_eq!(
            format_message(VIN, &topics::status(VIN), &s.to_cbor()),
            "status commands_refused agent=0.1.0 build=g1 config=c1 dbc=d1 mapping=m1 profile=p1 at=1970-01-01T00:00:03.000Z"
        );
    }

    #[test]
    fn every_signal_is_shown_and_json_parses() {
        let signals = (0..12)
            .map(|i| (format!("Vehicle.S{i:02}"), SignalValue::Int(i)))
            .collect();
        let t = Telemetry {
            kind: TelemetryKind::Snapshot,
            vin: VIN.into(),
            seq: 1,
            at: 1,
            signals,
            stale: vec![],
        };
        let line = format_message(VIN, &topics::telemetry(VIN), &t.encode().unwrap());
        assert!(line.ends_with("Vehicle.S10=10 Vehicle.S11=11"), "{line}");
        assert!(!line.contains("more"), "{line}");
        let j: serde_json::Value = serde_json::from_str(&format_message_json(
            VIN,
            &topics::telemetry(VIN),
            &t.encode().unwrap(),
        ))
        .unwrap();
        assert_eq!(j["type"], "telemetry");
        assert_eq!(j["signals"].as_object().map(|m| m.len()), Some(12));
        assert_eq!(j["signals"]["Vehicle.S11"], 11);
        let bad: serde_json::Value =
            serde_json::from_str(&format_message_json(VIN, &topics::telemetry(VIN), b"\xff"))
                .unwrap();
        assert_eq!(bad["type"], "undecodable");
    }

    #[test]
    fn garbage_is_reported_not_fatal() {
        let line = format_message(VIN, &topics::telemetry(VIN), b"\xff\x00garbage");
        assert_eq!(
            line,
            format!("{}: undecodable (telemetry_decode)", topics::telemetry(VIN))
        );
        let line = format_message(VIN, &topics::status(VIN), &[0xa0]); // empty map
        assert_eq!(
            line,
            format!("{}: undecodable (status_schema)", topics::status(VIN))
        );
        assert_eq!(
            format_message(VIN, "vehicles/OTHER/telemetry", b""),
            "vehicles/OTHER/telemetry: unexpected topic"
        );
    }

    #[test]
    fn topic_names_parse() {
        use clap::ValueEnum;
        for t in WatchTopic::ALL {
            assert_eq!(WatchTopic::from_str(t.name(), false).unwrap(), t);
        }
        assert!(WatchTopic::from_str("commands", false).is_err());
        assert!(check_vin("a/b").is_err() && check_vin("").is_err() && check_vin(VIN).is_ok());
    }
}
