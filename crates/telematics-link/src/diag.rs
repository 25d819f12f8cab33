//! What the link knows for troubleshooting: the class of the last connection error (typed, from
//! the rustls / io / MQTT error values, never from their text) and when the link last worked.
//! `telematicsctl doctor` reads it through the daemon's admin socket.

use std::error::Error as StdError;
use std::io;

use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::{AlertDescription, CertificateError};
use serde::{Deserialize, Serialize};

/// Why the last connection attempt or connection failed, as an owner-facing class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectErrorClass {
    /// The broker's certificate is not signed by the pinned CA (`mqtt.ca`).
    UnknownCa,
    /// The broker's certificate has expired (or the vehicle clock is far ahead).
    CertExpired,
    /// The broker's certificate is not valid yet (or the vehicle clock is behind).
    CertNotYetValid,
    /// The broker's certificate is otherwise invalid (wrong host name, bad encoding, ...).
    CertInvalid,
    /// The broker refused the vehicle's client certificate during the TLS handshake (unknown
    /// CA, expired, revoked).
    ClientCertRejected,
    /// Another TLS failure (protocol, cipher suites).
    Tls,
    /// The broker answered the MQTT CONNECT with a refusal (CONNACK return code).
    BrokerRefused,
    /// Connected, but the broker refused the commands subscription (SUBACK failure code).
    SubscribeRefused,
    /// The broker host name does not resolve.
    Dns,
    /// Nothing listens on the broker port or the host is unreachable (broker down, firewall).
    Unreachable,
    /// The connection attempt or the keep-alive timed out.
    Timeout,
    /// The connection was closed or reset by the peer, or another network error.
    Network,
    /// A local failure of the link (outbox, internal channel).
    Internal,
}

impl ConnectErrorClass {
    /// Stable name (the serde form), e.g. `unknown_ca`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectErrorClass::UnknownCa => "unknown_ca",
            ConnectErrorClass::CertExpired => "cert_expired",
            ConnectErrorClass::CertNotYetValid => "cert_not_yet_valid",
            ConnectErrorClass::CertInvalid => "cert_invalid",
            ConnectErrorClass::ClientCertRejected => "client_cert_rejected",
            ConnectErrorClass::Tls => "tls",
            ConnectErrorClass::BrokerRefused => "broker_refused",
            ConnectErrorClass::SubscribeRefused => "subscribe_refused",
            ConnectErrorClass::Dns => "dns",
            ConnectErrorClass::Unreachable => "unreachable",
            ConnectErrorClass::Timeout => "timeout",
            ConnectErrorClass::Network => "network",
            ConnectErrorClass::Internal => "internal",
        }
    }
}

/// The last connection error: class, when, and the error text (for the log and support).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// The class.
    pub class: ConnectErrorClass,
    /// Unix seconds.
    pub at: u64,
    /// The error as rumqttc / rustls printed it.
    pub detail: String,
}

/// Troubleshooting facts of the link, see [`crate::LinkHandle::diagnostics`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDiagnostics {
    /// Last time (Unix s) the broker accepted a connection (CONNACK), or the link was seen
    /// connected (refreshed on every acknowledged publish).
    pub last_connected_at: Option<u64>,
    /// The last connection error since the start, if any (kept after a later success).
    pub last_error: Option<LastError>,
}

/// Classifies a rumqttc connection error by the error values it carries.
pub fn classify(e: &ConnectionError) -> ConnectErrorClass {
    match e {
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => {
            ConnectErrorClass::Timeout
        }
        ConnectionError::ConnectionRefused(_) => ConnectErrorClass::BrokerRefused,
        ConnectionError::Tls(rumqttc::TlsError::TLS(t)) => classify_rustls(t),
        ConnectionError::Tls(rumqttc::TlsError::DNSName(_) | rumqttc::TlsError::Addr(_)) => {
            ConnectErrorClass::Dns
        }
        other => classify_chain(other),
    }
}

/// The broker's CONNACK refusal as text (`not_authorized`, ...), when `e` is one.
pub fn refusal_reason(e: &ConnectionError) -> Option<&'static str> {
    match e {
        ConnectionError::ConnectionRefused(code) => Some(match code {
            ConnectReturnCode::Success => "success",
            ConnectReturnCode::RefusedProtocolVersion => "refused_protocol_version",
            ConnectReturnCode::BadClientId => "bad_client_id",
            ConnectReturnCode::ServiceUnavailable => "service_unavailable",
            ConnectReturnCode::BadUserNamePassword => "bad_user_name_password",
            ConnectReturnCode::NotAuthorized => "not_authorized",
        }),
        _ => None,
    }
}

/// Walks the error chain (including the inner error of an `io::Error`) for a rustls error or an
/// io error kind.
fn classify_chain(e: &(dyn StdError + 'static)) -> ConnectErrorClass {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return classify_rustls(t);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return classify_rustls(t);
            }
            return classify_io(io.kind());
        }
        cur = err.source();
    }
    ConnectErrorClass::Network
}

fn classify_io(kind: io::ErrorKind) -> ConnectErrorClass {
    use io::ErrorKind as K;
    match kind {
        K::TimedOut => ConnectErrorClass::Timeout,
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            ConnectErrorClass::Unreachable
        }
        _ => ConnectErrorClass::Network,
    }
}

fn classify_rustls(e: &rustls::Error) -> ConnectErrorClass {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => ConnectErrorClass::UnknownCa,
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => ConnectErrorClass::CertExpired,
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => ConnectErrorClass::CertNotYetValid,
        E::InvalidCertificate(_) => ConnectErrorClass::CertInvalid,
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired,
        ) => ConnectErrorClass::ClientCertRejected,
        _ => ConnectErrorClass::Tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_io(e: rustls::Error) -> ConnectionError {
        ConnectionError::Tls(rumqttc::TlsError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            e,
        )))
    }

    #[test]
    fn certificate_errors_by_value() {
        let cert = |c| tls_io(rustls::Error::InvalidCertificate(c));
        assert_eq!(
            classify(&cert(CertificateError::UnknownIssuer)),
            ConnectErrorClass::UnknownCa
        );
        assert_eq!(
            classify(&cert(CertificateError::Expired)),
            ConnectErrorClass::CertExpired
        );
        assert_eq!(
            classify(&cert(CertificateError::NotValidYet)),
            ConnectErrorClass::CertNotYetValid
        );
        assert_eq!(
            classify(&cert(CertificateError::NotValidForName)),
            ConnectErrorClass::CertInvalid
        );
        assert_eq!(
            classify(&ConnectionError::Tls(rumqttc::TlsError::TLS(
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ))),
            ConnectErrorClass::UnknownCa
        );
        assert_eq!(
            classify(&tls_io(rustls::Error::AlertReceived(
                AlertDescription::CertificateExpired
            ))),
            ConnectErrorClass::ClientCertRejected
        );
        // The alert can also arrive after the handshake, on the first read.
        assert_eq!(
            classify(&ConnectionError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(AlertDescription::UnknownCA)
            ))),
            ConnectErrorClass::ClientCertRejected
        );
        assert_eq!(
            classify(&tls_io(rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure
            ))),
            ConnectErrorClass::Tls
        );
    }

    #[test]
    fn network_and_mqtt_errors() {
        let io = |k| ConnectionError::Io(io::Error::from(k));
        assert_eq!(
            classify(&io(io::ErrorKind::ConnectionRefused)),
            ConnectErrorClass::Unreachable
        );
        assert_eq!(
            classify(&io(io::ErrorKind::TimedOut)),
            ConnectErrorClass::Timeout
        );
        assert_eq!(
            classify(&io(io::ErrorKind::ConnectionReset)),
            ConnectErrorClass::Network
        );
        assert_eq!(
            classify(&ConnectionError::NetworkTimeout),
            ConnectErrorClass::Timeout
        );
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_eq!(classify(&refused), ConnectErrorClass::BrokerRefused);
        assert_eq!(refusal_reason(&refused), Some("not_authorized"));
        assert_eq!(refusal_reason(&ConnectionError::NetworkTimeout), None);
        assert_eq!(ConnectErrorClass::UnknownCa.as_str(), "unknown_ca");
    }
}
