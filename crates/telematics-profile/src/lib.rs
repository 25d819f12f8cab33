//! The vehicle profile: everything about a vehicle that the daemon used to hard-code, as data
//! next to the DBC and the VSS mapping (TOML; docs/vehicle-profile.md describes every key).
//!
//! - per action (lock, unlock, engine_start, engine_stop, flash_lights, horn): the bus, the DBC
//!   message and signal values to send, the repetition, the alive-counter signal and the frame
//!   protection ([`telematics_can::actuation::FrameSpec`]), the preconditions, what confirms it
//!   and its timeout;
//! - the acknowledgement: the answering message, the counter it echoes, the outcome and the
//!   table from refusal codes to result reasons ([`telematics_can::actuation::AckSpec`]);
//! - `[signals]`: the executor's vehicle signals bound to VSS paths ([`Binding`]).
//!
//! Sans-IO: [`VehicleProfile::parse`] takes the text, the DBC and the mapped VSS paths and
//! returns a validated profile or a [`ProfileError`] naming the key
//! (`actions.unlock.message: no message "X" in the DBC`); [`VehicleProfile::from_path`] is the
//! only function that reads a file.

mod binding;
mod error;
mod raw;
pub mod sim;

pub use binding::{Binding, Expected, Test};
pub use error::ProfileError;

use std::path::Path;

use telematics_can::Dbc;
use telematics_can::actuation::{AckSpec, FrameSpec, SignalSetting};
use telematics_exec::{Actuate, Check, Confirm, Confirmation, SignalKind};

use raw::{RawAck, RawAction, RawBinding, RawProfile};

/// The bus name used when an action or the ack names none.
pub const DEFAULT_BUS: &str = "body";

/// How often an actuation frame is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    /// Frames sent (at least 1).
    pub count: u32,
    /// Pause between two of them (ms).
    pub interval_ms: u64,
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat {
            count: 1,
            interval_ms: 0,
        }
    }
}

/// One action of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionProfile {
    /// The action.
    pub actuate: Actuate,
    /// The bus its frame goes to.
    pub bus: String,
    /// The frame.
    pub frame: FrameSpec,
    /// Its repetition.
    pub repeat: Repeat,
    /// Preconditions, in order.
    pub preconditions: Vec<Check>,
    /// What confirms it, and its timeout.
    pub confirmation: Confirmation,
}

/// The acknowledgement of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct AckProfile {
    /// The bus it is heard on.
    pub bus: String,
    /// How it is decoded.
    pub spec: AckSpec,
}

/// A validated vehicle profile; see the [crate docs](crate).
#[derive(Clone, Debug, PartialEq)]
pub struct VehicleProfile {
    /// The actions the vehicle supports (others are refused `not_supported`).
    pub actions: Vec<ActionProfile>,
    /// The acknowledgement, if the vehicle sends one.
    pub ack: Option<AckProfile>,
    /// The executor's signals bound to VSS paths.
    pub signals: Vec<Binding>,
}

impl VehicleProfile {
    /// Parses and validates `text` against `dbc` and the VSS paths of the mapping: a vehicle
    /// on one bus (every bus name the profile gives is that bus; see
    /// [`parse_on_buses`](Self::parse_on_buses) for several).
    pub fn parse(text: &str, dbc: &Dbc, mapped: &[&str]) -> Result<Self, ProfileError> {
        Self::parse_with(text, &|_| Some(dbc), mapped)
    }

    /// Parses and validates `text` for a vehicle on several buses: each action's frame and
    /// the ack are checked against the DBC of the bus they name (`buses`: name and DBC), and
    /// a bus not in `buses` is an error naming the key (`actions.unlock.bus`).
    pub fn parse_on_buses(
        text: &str,
        buses: &[(&str, &Dbc)],
        mapped: &[&str],
    ) -> Result<Self, ProfileError> {
        let p = Self::parse_with(
            text,
            &|name| buses.iter().find(|(n, _)| *n == name).map(|(_, d)| *d),
            mapped,
        )?;
        let known: Vec<&str> = buses.iter().map(|(n, _)| *n).collect();
        p.check_buses(&known)?;
        Ok(p)
    }

    fn parse_with<'d>(
        text: &str,
        dbc_of: &dyn Fn(&str) -> Option<&'d Dbc>,
        mapped: &[&str],
    ) -> Result<Self, ProfileError> {
        let raw: RawProfile = toml::from_str(text)
            .map_err(|e| ProfileError::Toml(e.to_string().replace('\n', " ").trim().to_string()))?;
        let mut signals = Vec::new();
        for (name, b) in &raw.signals {
            signals.push(binding(name, b, mapped)?);
        }
        if !signals.iter().any(|b| b.kind == SignalKind::Speed) {
            return Err(ProfileError::at(
                "signals.speed",
                "missing (every vehicle needs one)",
            ));
        }
        let ack = raw.ack.as_ref().map(|a| ack(a, dbc_of)).transpose()?;
        let mut actions = Vec::new();
        for (name, a) in &raw.actions {
            actions.push(action(name, a, dbc_of, &signals, ack.is_some())?);
        }
        Ok(VehicleProfile {
            actions,
            ack,
            signals,
        })
    }

    /// Reads and parses the profile file at `path` (the only I/O of this crate).
    pub fn from_path(path: &Path, dbc: &Dbc, mapped: &[&str]) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, dbc, mapped)
    }

    /// The profile of an action, if the vehicle supports it.
    pub fn action(&self, a: Actuate) -> Option<&ActionProfile> {
        self.actions.iter().find(|p| p.actuate == a)
    }

    /// The precondition table for the executor, `(action, check)` in order.
    pub fn rules(&self) -> Vec<(Actuate, Check)> {
        Actuate::ALL
            .into_iter()
            .filter_map(|a| self.action(a))
            .flat_map(|p| p.preconditions.iter().map(move |c| (p.actuate, *c)))
            .collect()
    }

    /// The executor's confirmations.
    pub fn confirmations(&self) -> Vec<Confirmation> {
        self.actions.iter().map(|p| p.confirmation).collect()
    }

    /// The VSS paths of each bound signal (for `stale_state` details).
    pub fn signal_paths(&self) -> Vec<(SignalKind, Vec<String>)> {
        self.signals
            .iter()
            .map(|b| (b.kind, b.paths.clone()))
            .collect()
    }

    /// What the simulated body controller needs to play this vehicle (each action's frame by
    /// name, the ack); `None` without an ack.
    pub fn sim_profile(&self) -> Option<telematics_can::sim::SimProfile> {
        Some(telematics_can::sim::SimProfile {
            commands: self
                .actions
                .iter()
                .map(|a| (a.actuate.name().to_string(), a.frame.clone()))
                .collect(),
            ack: self.ack.as_ref()?.spec.clone(),
            ack_bus: self.ack.as_ref()?.bus.clone(),
        })
    }

    /// Every bus the profile names (actions and ack).
    pub fn buses(&self) -> Vec<&str> {
        let mut b: Vec<&str> = self
            .actions
            .iter()
            .map(|a| a.bus.as_str())
            .chain(self.ack.iter().map(|a| a.bus.as_str()))
            .collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    /// Checks every bus the profile names is one of `known`.
    pub fn check_buses(&self, known: &[&str]) -> Result<(), ProfileError> {
        for a in &self.actions {
            if !known.contains(&a.bus.as_str()) {
                return Err(ProfileError::at(
                    format!("actions.{}.bus", a.actuate.name()),
                    format!("no bus \"{}\" (buses: {})", a.bus, known.join(", ")),
                ));
            }
        }
        if let Some(a) = self
            .ack
            .as_ref()
            .filter(|a| !known.contains(&a.bus.as_str()))
        {
            return Err(ProfileError::at(
                "ack.bus",
                format!("no bus \"{}\" (buses: {})", a.bus, known.join(", ")),
            ));
        }
        Ok(())
    }
}

fn binding(name: &str, b: &RawBinding, mapped: &[&str]) -> Result<Binding, ProfileError> {
    let key = format!("signals.{name}");
    let kind = SignalKind::from_name(name).ok_or_else(|| {
        ProfileError::at(
            &key,
            format!(
                "no such signal (one of {})",
                SignalKind::ALL.map(SignalKind::name).join(", ")
            ),
        )
    })?;
    let paths = match (&b.path, &b.all) {
        (Some(p), None) => vec![p.clone()],
        (None, Some(all)) if !all.is_empty() => all.clone(),
        _ => {
            return Err(ProfileError::at(
                &key,
                "give either `path` or a non-empty `all`",
            ));
        }
    };
    // The brake pedal is optional: a profile may bind it for a car whose mapping has it.
    if kind != SignalKind::BrakePressed {
        for p in &paths {
            if !mapped.contains(&p.as_str()) {
                return Err(ProfileError::at(
                    format!("{key}.path"),
                    format!("no VSS path \"{p}\" in the mapping"),
                ));
            }
        }
    }
    let test = match (&b.equals, b.above, kind) {
        (None, None, SignalKind::Speed) => Test::Number,
        (Some(v), None, k) if k != SignalKind::Speed => Test::Equals(match v {
            toml::Value::Boolean(x) => Expected::Bool(*x),
            toml::Value::Integer(i) => Expected::Number(*i as f64),
            toml::Value::Float(f) => Expected::Number(*f),
            toml::Value::String(s) => Expected::Text(s.clone()),
            _ => {
                return Err(ProfileError::at(
                    format!("{key}.equals"),
                    "a boolean, number or text",
                ));
            }
        }),
        (None, Some(x), k) if k != SignalKind::Speed && x.is_finite() => Test::Above(x),
        (_, _, SignalKind::Speed) => {
            return Err(ProfileError::at(&key, "speed takes no `equals` or `above`"));
        }
        _ => {
            return Err(ProfileError::at(
                &key,
                "give exactly one of `equals` or `above` (finite)",
            ));
        }
    };
    Ok(Binding { kind, paths, test })
}

fn bus(key: &str, b: &Option<String>) -> Result<String, ProfileError> {
    match b.as_deref() {
        None => Ok(DEFAULT_BUS.to_string()),
        Some("") => Err(ProfileError::at(format!("{key}.bus"), "empty bus name")),
        Some(b) => Ok(b.to_string()),
    }
}

fn message_exists(key: &str, dbc: &Dbc, name: &str) -> Result<(), ProfileError> {
    dbc.message_by_name(name).map(|_| ()).ok_or_else(|| {
        ProfileError::at(
            format!("{key}.message"),
            format!("no message \"{name}\" in the DBC"),
        )
    })
}

fn signal_exists(key: &str, dbc: &Dbc, message: &str, signal: &str) -> Result<(), ProfileError> {
    dbc.message_by_name(message)
        .and_then(|m| m.signal(signal))
        .map(|_| ())
        .ok_or_else(|| {
            ProfileError::at(
                key,
                format!("no signal \"{signal}\" in message \"{message}\""),
            )
        })
}

/// The DBC of the bus `key` names (`key.bus`, default [`DEFAULT_BUS`]).
fn bus_dbc<'d>(
    key: &str,
    b: &Option<String>,
    dbc_of: &dyn Fn(&str) -> Option<&'d Dbc>,
) -> Result<(String, &'d Dbc), ProfileError> {
    let name = bus(key, b)?;
    let dbc = dbc_of(&name)
        .ok_or_else(|| ProfileError::at(format!("{key}.bus"), format!("no bus \"{name}\"")))?;
    Ok((name, dbc))
}

fn ack<'d>(
    a: &RawAck,
    dbc_of: &dyn Fn(&str) -> Option<&'d Dbc>,
) -> Result<AckProfile, ProfileError> {
    let (bus_name, dbc) = bus_dbc("ack", &a.bus, dbc_of)?;
    message_exists("ack", dbc, &a.message)?;
    signal_exists("ack.outcome", dbc, &a.message, &a.outcome)?;
    // Without the echoed counter any acknowledgement heard after a command would answer it
    // (a cyclic or repeated ack of an earlier frame): required.
    let Some(c) = &a.counter else {
        return Err(ProfileError::at(
            "ack.counter",
            "required: the ack signal echoing the command's alive counter",
        ));
    };
    signal_exists("ack.counter", dbc, &a.message, c)?;
    if let Some(r) = &a.reason {
        signal_exists("ack.reason", dbc, &a.message, r)?;
    }
    if a.ok.is_empty() {
        return Err(ProfileError::at(
            "ack.ok",
            "list the outcome values that mean accepted",
        ));
    }
    let mut refusals = Vec::new();
    for (code, reason) in &a.refusals {
        let key = format!("ack.refusals.{code}");
        let c: i64 = code
            .parse()
            .map_err(|_| ProfileError::at(&key, "the key must be the integer refusal code"))?;
        if reason.is_empty()
            || !reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ProfileError::at(&key, "a reason is a snake_case code"));
        }
        if a.reason.is_none() && a.ok.contains(&c) {
            return Err(ProfileError::at(&key, "this code is listed in `ack.ok`"));
        }
        refusals.push((c, reason.clone()));
    }
    Ok(AckProfile {
        bus: bus_name,
        spec: AckSpec {
            message: a.message.clone(),
            counter: a.counter.clone(),
            outcome: a.outcome.clone(),
            ok: a.ok.clone(),
            reason: a.reason.clone(),
            refusals,
        },
    })
}

fn action<'d>(
    name: &str,
    a: &RawAction,
    dbc_of: &dyn Fn(&str) -> Option<&'d Dbc>,
    signals: &[Binding],
    has_ack: bool,
) -> Result<ActionProfile, ProfileError> {
    let key = format!("actions.{name}");
    let actuate = Actuate::from_name(name).ok_or_else(|| {
        ProfileError::at(
            &key,
            format!(
                "no such action (one of {})",
                Actuate::ALL.map(Actuate::name).join(", ")
            ),
        )
    })?;
    let (bus_name, dbc) = bus_dbc(&key, &a.bus, dbc_of)?;
    message_exists(&key, dbc, &a.message)?;
    let mut values = Vec::new();
    for (sig, v) in &a.signals {
        let k = format!("{key}.signals.{sig}");
        signal_exists(&k, dbc, &a.message, sig)?;
        values.push((
            sig.clone(),
            match v {
                toml::Value::String(l) => SignalSetting::Label(l.clone()),
                toml::Value::Integer(i) => SignalSetting::Raw(*i),
                _ => return Err(ProfileError::at(k, "a value-table label or a raw integer")),
            },
        ));
    }
    if values.is_empty() {
        return Err(ProfileError::at(
            format!("{key}.signals"),
            "name the signal values of the command",
        ));
    }
    if let Some(c) = &a.counter {
        signal_exists(&format!("{key}.counter"), dbc, &a.message, c)?;
    }
    let protection = a.protection.clone().unwrap_or_default();
    if let Some(m) = dbc.message_by_name(&a.message) {
        protection
            .validate(m.size)
            .map_err(|e| ProfileError::at(format!("{key}.protection"), e.to_string()))?;
    }
    let mut frame = FrameSpec {
        message: a.message.clone(),
        values,
        counter: a.counter.clone(),
        protection,
        secoc: None,
    };
    frame
        .validate(dbc)
        .map_err(|e| ProfileError::at(&key, e.to_string()))?;
    if let Some(sec) = a.secoc {
        frame.secoc = Some(sec);
        frame
            .validate(dbc)
            .map_err(|e| ProfileError::at(format!("{key}.secoc"), e.to_string()))?;
    }
    let repeat = match &a.repeat {
        None => Repeat::default(),
        Some(r) if a.secoc.is_some() && r.count != 1 => {
            return Err(ProfileError::at(
                format!("{key}.repeat.count"),
                "1 with secoc: every SecOC frame needs its own freshness value",
            ));
        }
        Some(r) if r.count == 0 || r.count > 20 => {
            return Err(ProfileError::at(format!("{key}.repeat.count"), "1..=20"));
        }
        Some(r) if r.interval_ms > 1_000 => {
            return Err(ProfileError::at(
                format!("{key}.repeat.interval_ms"),
                "at most 1000",
            ));
        }
        Some(r) => Repeat {
            count: r.count,
            interval_ms: r.interval_ms,
        },
    };
    let mut preconditions = Vec::new();
    for (i, c) in a.preconditions.iter().enumerate() {
        let k = format!("{key}.preconditions[{i}]");
        let check = Check::from_name(c).ok_or_else(|| {
            ProfileError::at(
                &k,
                format!(
                    "no check \"{c}\" (one of {})",
                    Check::ALL.map(Check::name).join(", ")
                ),
            )
        })?;
        if !signals.iter().any(|b| b.kind == check.signal()) {
            return Err(ProfileError::at(
                k,
                format!(
                    "reads signals.{}, which the profile does not bind",
                    check.signal().name()
                ),
            ));
        }
        preconditions.push(check);
    }
    let ck = format!("{key}.confirm");
    let confirm = match (a.confirm.on.as_str(), &a.confirm.signal, a.confirm.equals) {
        ("signal", Some(s), Some(equals)) => {
            let kind = SignalKind::from_name(s)
                .filter(|k| *k != SignalKind::Speed)
                .ok_or_else(|| {
                    ProfileError::at(format!("{ck}.signal"), format!("no boolean signal \"{s}\""))
                })?;
            if !signals.iter().any(|b| b.kind == kind) {
                return Err(ProfileError::at(
                    format!("{ck}.signal"),
                    format!("signals.{s} is not bound"),
                ));
            }
            Confirm::Signal { kind, equals }
        }
        ("signal", _, _) => {
            return Err(ProfileError::at(
                ck,
                "`on = \"signal\"` needs `signal` and `equals`",
            ));
        }
        ("ack", None, None) if has_ack => Confirm::Ack,
        ("ack", None, None) => {
            return Err(ProfileError::at(
                ck,
                "confirmed by the ack, but the profile has no [ack]",
            ));
        }
        ("sent", None, None) => Confirm::Sent,
        (on, _, _) => {
            return Err(ProfileError::at(
                format!("{ck}.on"),
                format!("\"{on}\": one of signal (with signal, equals), ack, sent"),
            ));
        }
    };
    if a.timeout_ms == Some(0) {
        return Err(ProfileError::at(format!("{key}.timeout_ms"), "must be > 0"));
    }
    Ok(ActionProfile {
        actuate,
        bus: bus_name,
        frame,
        repeat,
        preconditions,
        confirmation: Confirmation {
            actuate,
            confirm,
            timeout_ms: a.timeout_ms,
        },
    })
}

#[cfg(test)]
mod tests;
