//! Actuation frames and their acknowledgement at the bus level: which DBC message a command is
//! sent in, with which signal values, alive counter and frame protection ([`FrameSpec`]), and
//! how the body controller's answer names the command and its outcome ([`AckSpec`]).
//!
//! Data, not code: a vehicle profile (`telematics-profile`) builds these from its TOML; the
//! daemon encodes with them and decodes the answers, the simulated body controller
//! ([`crate::sim`]) decodes the commands and encodes the answers with the same specs, so the
//! two ends cannot disagree about a vehicle. Sans-IO.

use crate::dbc::{Dbc, EncodeValue, MessageDef, RawValue};
use crate::error::CanError;
use crate::frame::CanFrame;
use crate::protection::{Protection, SecOc, SecOcKey};

/// A value to set a signal to: a value-table label or a raw integer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalSetting {
    /// A label of the signal's value table (`"LOCK"`).
    Label(String),
    /// A raw value (no factor/offset).
    Raw(i64),
}

impl SignalSetting {
    fn encode_value(&self) -> EncodeValue<'_> {
        match self {
            SignalSetting::Label(l) => EncodeValue::Label(l),
            SignalSetting::Raw(r) => EncodeValue::Raw(RawValue::Signed(*r)),
        }
    }

    /// The raw value this setting stands for in `message` (a label resolved through the
    /// signal's value table).
    fn raw_in(&self, message: &MessageDef, signal: &str) -> Option<i64> {
        match self {
            SignalSetting::Raw(r) => Some(*r),
            SignalSetting::Label(l) => message.signal(signal)?.raw_for_label(l),
        }
    }
}

/// One actuation frame: a DBC message with fixed signal values, an optional alive counter and
/// a protection ([`Protection`]: none, XOR, CRC-8 SAE J1850, AUTOSAR E2E profile 1/2/5). An
/// E2E profile owns the alive counter (it writes it where the profile puts it); the other
/// schemes use the DBC `counter` signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// The DBC message.
    pub message: String,
    /// Signal values that make this frame the command (`LockRequest = "LOCK"`).
    pub values: Vec<(String, SignalSetting)>,
    /// The alive-counter signal, incremented per frame modulo its range (not with an E2E
    /// protection, which owns the counter).
    pub counter: Option<String>,
    /// The frame protection.
    pub protection: Protection,
    /// AUTOSAR SecOC on this frame: the trailer (truncated freshness value and MAC) takes the
    /// message's last [`SecOc::trailer_len`] bytes, after the signals. Only with protection
    /// `none` (the MAC authenticates the whole payload).
    pub secoc: Option<SecOc>,
}

impl FrameSpec {
    fn message<'a>(&self, dbc: &'a Dbc) -> Result<&'a MessageDef, CanError> {
        dbc.message_by_name(&self.message)
            .ok_or_else(|| CanError::UnknownMessage(self.message.clone()))
    }

    /// Checks the spec against `dbc`: the message, every signal and label exist, the counter
    /// is an unsigned signal of at most 8 bits (and no E2E protection owns the counter), the
    /// protection fits the message's length. Encodes once.
    pub fn validate(&self, dbc: &Dbc) -> Result<(), CanError> {
        let m = self.message(dbc)?;
        if self.counter.is_some() && self.protection.counter_modulus().is_some() {
            return Err(CanError::DbcInvalid(format!(
                "{} owns the alive counter: give no counter signal",
                self.protection.scheme()
            )));
        }
        if let Some(c) = &self.counter {
            let s = m
                .signal(c)
                .ok_or_else(|| CanError::UnknownSignal(c.clone()))?;
            if s.size > 8 {
                return Err(CanError::DbcInvalid(format!(
                    "counter signal {c} has {} bits (at most 8)",
                    s.size
                )));
            }
        }
        self.protection.validate(m.size)?;
        if let Some(sec) = &self.secoc {
            if self.protection != Protection::None {
                return Err(CanError::DbcInvalid(format!(
                    "secoc authenticates the frame: protection must be none, not {}",
                    self.protection.scheme()
                )));
            }
            sec.validate_frame(m.size)?;
            let payload = m.size - sec.trailer_len();
            let named = self
                .values
                .iter()
                .map(|(s, _)| s.as_str())
                .chain(self.counter.as_deref());
            for name in named {
                let s = m
                    .signal(name)
                    .ok_or_else(|| CanError::UnknownSignal(name.to_string()))?;
                if s.end_byte() > payload {
                    return Err(CanError::DbcInvalid(format!(
                        "signal {name} reaches byte {} but the SecOC trailer takes bytes {payload}..{}",
                        s.end_byte(),
                        m.size
                    )));
                }
            }
        }
        self.encode(dbc, 0).map(|_| ())
    }

    /// The secured frame of `frame` (built by [`encode`](Self::encode)) at freshness value
    /// `freshness`: its last bytes replaced by the SecOC trailer over the rest. Unchanged
    /// without SecOC.
    pub fn secure(
        &self,
        frame: &mut CanFrame,
        key: &SecOcKey,
        freshness: u64,
    ) -> Result<(), CanError> {
        let Some(sec) = &self.secoc else {
            return Ok(());
        };
        sec.validate_frame(frame.data.len())?;
        let payload = frame.data.len() - sec.trailer_len();
        frame.data = sec.authenticate(
            key,
            frame.data.get(..payload).unwrap_or_default(),
            freshness,
        )?;
        Ok(())
    }

    /// The counter's modulus (the E2E profile's, else 2^bits of the counter signal; 1 without
    /// a counter).
    pub fn counter_modulus(&self, dbc: &Dbc) -> u16 {
        if let Some(m) = self.protection.counter_modulus() {
            return m;
        }
        self.counter
            .as_deref()
            .and_then(|c| dbc.message_by_name(&self.message)?.signal(c))
            .map_or(1, |s| 1u16 << s.size.min(8))
    }

    /// Encodes the frame with alive counter `counter` and its protection.
    pub fn encode(&self, dbc: &Dbc, counter: u8) -> Result<CanFrame, CanError> {
        let mut v: Vec<(&str, EncodeValue<'_>)> = self
            .values
            .iter()
            .map(|(s, val)| (s.as_str(), val.encode_value()))
            .collect();
        if let Some(c) = &self.counter {
            v.push((c, EncodeValue::Raw(RawValue::Unsigned(u64::from(counter)))));
        }
        let mut f = dbc.encode(&self.message, &v)?;
        self.protection.protect(&mut f.data, counter)?;
        Ok(f)
    }

    /// If `frame` is this command (its message, a valid protection, every value of the spec),
    /// its alive counter (`Some(None)` when the spec has none). A SecOC trailer is not checked
    /// here: [`SecOc::verify`] with the key and the last accepted freshness value is the
    /// receiver's (the simulator's) business.
    pub fn matches(&self, dbc: &Dbc, frame: &CanFrame) -> Option<Option<u8>> {
        let m = dbc.message_by_name(&self.message)?;
        if frame.remote || frame.can_id() != m.id {
            return None;
        }
        let checked = self.protection.check(&frame.data).ok()?;
        let d = m.decode(&frame.data).ok()?;
        for (sig, val) in &self.values {
            if d.get(sig)?.raw.as_i64()? != val.raw_in(m, sig)? {
                return None;
            }
        }
        match &self.counter {
            None => Some(checked.counter),
            Some(c) => Some(Some(u8::try_from(d.get(c)?.raw.as_i64()?).ok()?)),
        }
    }
}

/// The body controller's answer to a command, decoded with an [`AckSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The alive counter of the command it answers (when the ack names it).
    pub counter: Option<u8>,
    /// What the body controller did.
    pub outcome: AckOutcome,
}

/// Outcome of an acknowledged command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Accepted (it is carrying the command out).
    Ok,
    /// Refused with raw `code`; `reason` is the profile's result reason for it (`None` for a
    /// code the profile's table does not list).
    Refused {
        /// The raw refusal code on the bus.
        code: i64,
        /// The mapped reason (`not_in_park`, ...).
        reason: Option<String>,
    },
}

/// How the body controller acknowledges a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckSpec {
    /// The DBC message that answers.
    pub message: String,
    /// The signal echoing the command's alive counter.
    pub counter: Option<String>,
    /// The outcome signal.
    pub outcome: String,
    /// Raw outcome values that mean accepted.
    pub ok: Vec<i64>,
    /// The signal carrying the refusal code (when not the outcome signal itself).
    pub reason: Option<String>,
    /// Refusal code (raw value of `reason`, or of `outcome`) → result reason.
    pub refusals: Vec<(i64, String)>,
}

impl AckSpec {
    fn message<'a>(&self, dbc: &'a Dbc) -> Result<&'a MessageDef, CanError> {
        dbc.message_by_name(&self.message)
            .ok_or_else(|| CanError::UnknownMessage(self.message.clone()))
    }

    /// Checks every named signal exists in the ack message.
    pub fn validate(&self, dbc: &Dbc) -> Result<(), CanError> {
        let m = self.message(dbc)?;
        for s in [
            Some(&self.outcome),
            self.counter.as_ref(),
            self.reason.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            m.signal(s)
                .ok_or_else(|| CanError::UnknownSignal(s.clone()))?;
        }
        Ok(())
    }

    /// The ack in `frame`, if it is the ack message.
    pub fn decode(&self, dbc: &Dbc, frame: &CanFrame) -> Option<Ack> {
        let m = dbc.message_by_name(&self.message)?;
        if frame.remote || frame.can_id() != m.id {
            return None;
        }
        let d = m.decode(&frame.data).ok()?;
        let outcome = d.get(&self.outcome)?.raw.as_i64()?;
        let counter = match &self.counter {
            None => None,
            Some(c) => Some(u8::try_from(d.get(c)?.raw.as_i64()?).ok()?),
        };
        let outcome = if self.ok.contains(&outcome) {
            AckOutcome::Ok
        } else {
            let code = match &self.reason {
                Some(r) => d.get(r)?.raw.as_i64()?,
                None => outcome,
            };
            AckOutcome::Refused {
                code,
                reason: self
                    .refusals
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map(|(_, r)| r.clone()),
            }
        };
        Some(Ack { counter, outcome })
    }

    /// Encodes an ack (the simulated body controller's side). A refusal sets the outcome to
    /// the first value that is not `ok` (or to the code, without a reason signal).
    pub fn encode(
        &self,
        dbc: &Dbc,
        counter: u8,
        refusal: Option<i64>,
    ) -> Result<CanFrame, CanError> {
        let ok = self.ok.first().copied().unwrap_or(0);
        let mut v: Vec<(&str, EncodeValue<'_>)> = Vec::new();
        if let Some(c) = &self.counter {
            v.push((c, EncodeValue::Raw(RawValue::Unsigned(u64::from(counter)))));
        }
        let outcome = match (refusal, &self.reason) {
            (None, _) => ok,
            (Some(code), None) => code,
            (Some(code), Some(r)) => {
                v.push((r, EncodeValue::Raw(RawValue::Signed(code))));
                (0..).find(|x| !self.ok.contains(x)).unwrap_or(1)
            }
        };
        v.push((&self.outcome, EncodeValue::Raw(RawValue::Signed(outcome))));
        dbc.encode(&self.message, &v)
    }

    /// The raw refusal code for a result reason (the simulator refusing with a reason).
    pub fn code_for(&self, reason: &str) -> Option<i64> {
        self.refusals
            .iter()
            .find(|(_, r)| r == reason)
            .map(|(c, _)| *c)
    }
}
