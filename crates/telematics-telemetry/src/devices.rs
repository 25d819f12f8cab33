//! The paired-device payloads (docs/payloads.cddl): the retained [`DeviceList`] on
//! `vehicles/{vin}/devices` and the [`RevocationOutcome`] of a back-end revocation on
//! `vehicles/{vin}/devices/revocations`. Neither carries a secret: a device is its key id
//! (public, it is the COSE `kid` of every command), its name, times and status.

use ciborium::Value;

use crate::TelemetryError;
use crate::payload::{Fields, bad, text, to_bytes, uint};

/// Status of a paired device as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Can send commands.
    Active,
    /// Revoked (in the car, by the back end or by another device), with when.
    Revoked {
        /// Unix milliseconds (whole seconds).
        at: u64,
    },
    /// Voided by a completed recovery (code reset), with when.
    VoidedByRecovery {
        /// Unix milliseconds (whole seconds).
        at: u64,
    },
}

impl DeviceStatus {
    /// Wire name: `active`, `revoked`, `voided_by_recovery`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Revoked { .. } => "revoked",
            DeviceStatus::VoidedByRecovery { .. } => "voided_by_recovery",
        }
    }
}

/// One paired device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Key id (the COSE `kid` of its commands).
    pub key_id: Vec<u8>,
    /// Name given at pairing.
    pub name: String,
    /// Paired at, Unix milliseconds (whole seconds).
    pub paired_at: u64,
    /// Last command that passed verification, Unix milliseconds (whole seconds).
    pub last_command_at: Option<u64>,
    /// Status.
    pub status: DeviceStatus,
}

/// The vehicle's paired devices, published retained on `vehicles/{vin}/devices` whenever it
/// changes and on request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// VIN.
    pub vin: String,
    /// When the list was built, Unix milliseconds.
    pub at: u64,
    /// Every device ever paired since the last state reset, in pairing order.
    pub devices: Vec<DeviceEntry>,
}

fn opt_uint(f: &Fields, key: &'static str) -> Result<Option<u64>, TelemetryError> {
    match f.opt(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => f.uint(key).map(Some),
    }
}

fn field_bytes(f: &Fields, key: &'static str) -> Result<Vec<u8>, TelemetryError> {
    match f.get(key)? {
        Value::Bytes(b) => Ok(b.clone()),
        _ => Err(bad(key, "expected bytes")),
    }
}

impl DeviceEntry {
    fn to_value(&self) -> Value {
        let mut m = vec![
            (text("key_id"), Value::Bytes(self.key_id.clone())),
            (text("name"), text(&self.name)),
            (text("paired_at"), uint(self.paired_at)),
            (
                text("last_command_at"),
                self.last_command_at.map_or(Value::Null, uint),
            ),
            (text("status"), text(self.status.as_str())),
        ];
        match self.status {
            DeviceStatus::Active => {}
            DeviceStatus::Revoked { at } | DeviceStatus::VoidedByRecovery { at } => {
                m.push((text("status_at"), uint(at)));
            }
        }
        Value::Map(m)
    }

    fn from_fields(f: &Fields) -> Result<Self, TelemetryError> {
        let at = || f.uint("status_at");
        let status = match f.text("status")?.as_str() {
            "active" => DeviceStatus::Active,
            "revoked" => DeviceStatus::Revoked { at: at()? },
            "voided_by_recovery" => DeviceStatus::VoidedByRecovery { at: at()? },
            _ => {
                return Err(bad(
                    "status",
                    "expected active, revoked or voided_by_recovery",
                ));
            }
        };
        Ok(DeviceEntry {
            key_id: field_bytes(f, "key_id")?,
            name: f.text("name")?,
            paired_at: f.uint("paired_at")?,
            last_command_at: opt_uint(f, "last_command_at")?,
            status,
        })
    }
}

impl DeviceList {
    /// Encode to CBOR.
    pub fn encode(&self) -> Result<Vec<u8>, TelemetryError> {
        to_bytes(&Value::Map(vec![
            (text("vin"), text(&self.vin)),
            (text("at"), uint(self.at)),
            (
                text("devices"),
                Value::Array(self.devices.iter().map(DeviceEntry::to_value).collect()),
            ),
        ]))
    }

    /// Decode from CBOR; bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let f = Fields::parse(bytes)?;
        let devices = match f.get("devices")? {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::Map(m) => DeviceEntry::from_fields(&Fields(m.clone())),
                    _ => Err(bad("devices", "expected a map per device")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad("devices", "expected an array")),
        };
        Ok(DeviceList {
            vin: f.text("vin")?,
            at: f.uint("at")?,
            devices,
        })
    }

    /// The entry of `key_id`, if listed.
    pub fn device(&self, key_id: &[u8]) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.key_id == key_id)
    }
}

/// The vehicle's answer to an authentic (signature-verified) back-end revocation, published on
/// `vehicles/{vin}/devices/revocations`. Messages whose signature does not verify get no
/// answer (anyone could provoke it); they are audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationOutcome {
    /// VIN.
    pub vin: String,
    /// When it was decided, Unix milliseconds.
    pub at: u64,
    /// The revocation's nonce (identifies the request).
    pub nonce: Vec<u8>,
    /// The key id it named.
    pub key_id: Vec<u8>,
    /// `None`: revoked; `Some(code)`: refused with this stable fault code (docs/protocol.md).
    pub refused: Option<String>,
}

impl RevocationOutcome {
    /// Encode to CBOR.
    pub fn encode(&self) -> Result<Vec<u8>, TelemetryError> {
        let mut m = vec![
            (text("vin"), text(&self.vin)),
            (text("at"), uint(self.at)),
            (text("nonce"), Value::Bytes(self.nonce.clone())),
            (text("key_id"), Value::Bytes(self.key_id.clone())),
            (
                text("outcome"),
                text(if self.refused.is_some() {
                    "refused"
                } else {
                    "revoked"
                }),
            ),
        ];
        if let Some(code) = &self.refused {
            m.push((text("reason_code"), text(code)));
        }
        to_bytes(&Value::Map(m))
    }

    /// Decode from CBOR; bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let f = Fields::parse(bytes)?;
        let refused = match f.text("outcome")?.as_str() {
            "revoked" => None,
            "refused" => Some(f.text("reason_code")?),
            _ => return Err(bad("outcome", "expected revoked or refused")),
        };
        Ok(RevocationOutcome {
            vin: f.text("vin")?,
            at: f.uint("at")?,
            nonce: field_bytes(&f, "nonce")?,
            key_id: field_bytes(&f, "key_id")?,
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_list_round_trips_every_status_and_rejects_bad_input() {
        let l = DeviceList {
            vin: "1M8GDM9AXKP042788".into(),
            at: 1_800_000_000_123,
            devices: vec![
                DeviceEntry {
                    key_id: vec![1; 8],
                    name: "phone".into(),
                    paired_at: 1_800_000_000,
                    last_command_at: Some(1_800_000_100),
                    status: DeviceStatus::Active,
                },
                DeviceEntry {
                    key_id: vec![2; 8],
                    name: "lost".into(),
                    paired_at: 1_800_000_001,
                    last_command_at: None,
                    status: DeviceStatus::Revoked { at: 1_800_000_200 },
                },
                DeviceEntry {
                    key_id: vec![3; 8],
                    name: "old".into(),
                    paired_at: 1,
                    last_command_at: None,
                    status: DeviceStatus::VoidedByRecovery { at: 2 },
                },
            ],
        };
        let b = l.encode().unwrap();
        assert_eq!(DeviceList::decode(&b).unwrap(), l);
        assert_eq!(l.device(&[2; 8]).unwrap().name, "lost");
        assert!(DeviceList::decode(b"\xa0").is_err());
        assert!(DeviceList::decode(&b[..b.len() - 3]).is_err());
        let o = RevocationOutcome {
            vin: l.vin.clone(),
            at: 5,
            nonce: vec![7; 16],
            key_id: vec![2; 8],
            refused: Some("nonce_reused".into()),
        };
        assert_eq!(RevocationOutcome::decode(&o.encode().unwrap()).unwrap(), o);
        let ok = RevocationOutcome { refused: None, ..o };
        assert_eq!(
            RevocationOutcome::decode(&ok.encode().unwrap()).unwrap(),
            ok
        );
    }
}
