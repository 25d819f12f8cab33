//! The [`RenewalOutcome`] a vehicle publishes on `vehicles/{vin}/identity/outcome` after it
//! judged a certificate the back end sent on `vehicles/{vin}/identity/certificate` (in-band
//! renewal of its mTLS identity, docs/topics.md). Carries no secret.

use ciborium::Value;

use crate::TelemetryError;
use crate::payload::{Fields, bad, text, to_bytes, uint};

/// The verdict on one certificate answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalOutcome {
    /// VIN.
    pub vin: String,
    /// When it was decided, Unix milliseconds.
    pub at: u64,
    /// The identity generation the renewal is for (the committed one plus one).
    pub generation: u64,
    /// `None`: the certificate was proven and committed; `Some(code)`: refused with this stable
    /// code (`identity.key_mismatch`, `identity.vin_mismatch`, `identity.untrusted`, ...).
    pub refused: Option<String>,
    /// Serial number (hex) of the certificate judged, when it could be read.
    pub serial: Option<String>,
}

impl RenewalOutcome {
    /// Encode to CBOR: `{vin, at, generation, outcome: "renewed" / "refused", ? reason_code,
    /// ? serial}`.
    pub fn encode(&self) -> Result<Vec<u8>, TelemetryError> {
        let outcome = if self.refused.is_some() {
            "refused"
        } else {
            "renewed"
        };
        let mut m = vec![
            (text("vin"), text(&self.vin)),
            (text("at"), uint(self.at)),
            (text("generation"), uint(self.generation)),
            (text("outcome"), text(outcome)),
        ];
        if let Some(code) = &self.refused {
            m.push((text("reason_code"), text(code)));
        }
        if let Some(s) = &self.serial {
            m.push((text("serial"), text(s)));
        }
        to_bytes(&Value::Map(m))
    }

    /// Decode from CBOR; bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let f = Fields::parse(bytes)?;
        let refused = match f.text("outcome")?.as_str() {
            "renewed" => None,
            "refused" => Some(f.text("reason_code")?),
            _ => return Err(bad("outcome", "expected renewed or refused")),
        };
        Ok(RenewalOutcome {
            vin: f.text("vin")?,
            at: f.uint("at")?,
            generation: f.uint("generation")?,
            refused,
            serial: f.opt_text("serial")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outcome_round_trips_and_rejects_bad_input() {
        let ok = RenewalOutcome {
            vin: "V".into(),
            at: 1,
            generation: 2,
            refused: None,
            serial: Some("0a".into()),
        };
        assert_eq!(RenewalOutcome::decode(&ok.encode().unwrap()).unwrap(), ok);
        let no = RenewalOutcome {
            refused: Some("identity.key_mismatch".into()),
            serial: None,
            ..ok
        };
        assert_eq!(RenewalOutcome::decode(&no.encode().unwrap()).unwrap(), no);
        assert!(RenewalOutcome::decode(&[0xff]).is_err());
        let odd = to_bytes(&Value::Map(vec![(text("outcome"), text("maybe"))])).unwrap();
        assert!(RenewalOutcome::decode(&odd).is_err());
    }
}
