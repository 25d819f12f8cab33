//! Output conventions of every command: human-readable by default (times as RFC 3339 UTC plus
//! a relative phrase such as `in 30 s`), or with the global `--json` one JSON document on stdout
//! (NDJSON, one object per line, for streams: `watch`, the results of a remote command).
//! Errors and "no result within the timeout" go to stderr, as JSON objects
//! `{"error": {"code", "message", ...}}` under `--json`. Secrets (a device credential) are
//! printed only where asked for (`pair` without `--out`).

use serde_json::{Value, json};
use telematics_telemetry::{
    Alert, AlertState, CommandResult, SignalValue, Telemetry, TelemetryKind,
};

/// `2026-12-02T04:05:06Z` for Unix seconds.
pub fn rfc3339(unix_s: u64) -> String {
    let days = unix_s / 86_400;
    let rem = unix_s % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `2026-12-02T04:05:06.789Z` for Unix milliseconds.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let s = rfc3339(unix_ms / 1000);
    format!("{}.{:03}Z", s.trim_end_matches('Z'), unix_ms % 1000)
}

/// `in 30 s` / `5 min ago` for `at` relative to `now` (Unix s).
pub fn relative(at: u64, now: u64) -> String {
    use telematics_admin::diagnostics::human_duration;
    if at >= now {
        format!("in {}", human_duration(at - now))
    } else {
        format!("{} ago", human_duration(now - at))
    }
}

/// `RFC 3339 (relative)`.
pub fn when(at: u64, now: u64) -> String {
    format!("{} ({})", rfc3339(at), relative(at, now))
}

/// (year, month, day) of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Prints an error on stderr: `telematicsctl: <message>`, or under `--json`
/// `{"error": {"code", "message", "retry_after_s"?}}`.
pub fn print_error(json: bool, code: &str, message: &str, retry_after_s: Option<u64>) {
    if json {
        let mut e = json!({ "code": code, "message": message });
        if let Some(r) = retry_after_s {
            e["retry_after_s"] = json!(r);
        }
        eprintln!("{}", json!({ "error": e }));
    } else {
        eprintln!("telematicsctl: {message}");
    }
}

fn value(v: &SignalValue) -> Value {
    match v {
        SignalValue::Bool(b) => json!(b),
        SignalValue::Int(i) => json!(i),
        SignalValue::Float(f) => json!(f),
        SignalValue::Text(t) => json!(t),
    }
}

/// A command result as JSON (`at` in Unix ms, as on the wire).
pub fn result_json(r: &CommandResult) -> Value {
    json!({
        "type": "result",
        "command_id": hex::encode(r.command_id),
        "state": r.state.as_str(),
        "reason_code": r.reason_code,
        "detail": r.detail,
        "retry_after_s": r.retry_after_s,
        "at": r.at,
    })
}

/// A telemetry message as JSON (every signal).
pub fn telemetry_json(t: &Telemetry) -> Value {
    let signals: serde_json::Map<String, Value> = t
        .signals
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect();
    json!({
        "type": "telemetry",
        "kind": match t.kind {
            TelemetryKind::Snapshot => "snapshot",
            TelemetryKind::Delta => "delta",
        },
        "vin": t.vin,
        "seq": t.seq,
        "at": t.at,
        "signals": signals,
        "stale": t.stale,
    })
}

/// An alert as JSON.
pub fn alert_json(a: &Alert) -> Value {
    json!({
        "type": "alert",
        "vin": a.vin,
        "kind": a.kind,
        "state": match a.state {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
        },
        "at": a.at,
        "signal": a.signal,
        "value": a.value.as_ref().map(value),
        "threshold": a.threshold,
        "count": a.count,
        "device": a.device,
        "until": a.until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339_ms(1_709_208_000_042), "2024-02-29T12:00:00.042Z");
        assert_eq!(relative(130, 100), "in 30 s");
        assert_eq!(relative(100, 400), "5 min ago");
        assert_eq!(when(30, 0), "1970-01-01T00:00:30Z (in 30 s)");
    }
}
