//! The MQTT (mTLS) connection used by the remote commands and `watch`.

use std::time::Duration;

use ring::rand::SecureRandom;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet};
use rumqttc::{TlsConfiguration, Transport};
use telematics_link::{TlsFiles, client_config};

use crate::CtlError;

/// Largest incoming MQTT packet accepted (telemetry snapshots can be a few KiB).
const MAX_PACKET: usize = 256 * 1024;

/// Where and how to connect: broker address plus the back end's client certificate, key and
/// the pinned CA (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConn {
    /// Broker host name (also the TLS server name).
    pub host: String,
    /// Broker TLS port.
    pub port: u16,
    /// Client certificate chain, key and CA.
    pub tls: TlsFiles,
}

/// A random client id `ctl-<16 hex>` (clean session, so it never collides with a stored one).
pub fn random_client_id() -> Result<String, CtlError> {
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CtlError::Security(telematics_security::Error::Rng))?;
    Ok(format!("ctl-{}", hex::encode(b)))
}

/// Builds a clean-session rumqttc client over mTLS (ring provider, pinned CA). Nothing is sent
/// until the event loop is polled.
pub fn connect(conn: &MqttConn) -> Result<(AsyncClient, EventLoop), CtlError> {
    if conn.host.is_empty() {
        return Err(CtlError::Invalid("--host is empty".into()));
    }
    let tls = client_config(&conn.tls)?;
    let mut o = MqttOptions::new(random_client_id()?, conn.host.clone(), conn.port);
    o.set_clean_session(true);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    Ok(AsyncClient::new(o, 16))
}

/// Maps a ConnAck return code to an error unless it is `Success`.
pub(crate) fn check_connack(code: ConnectReturnCode) -> Result<(), CtlError> {
    if code == ConnectReturnCode::Success {
        Ok(())
    } else {
        Err(CtlError::Mqtt(format!(
            "broker refused the connection: {code:?}"
        )))
    }
}

/// A SUBACK that refuses any of its filters is an error naming `what` was subscribed (the
/// broker's ACL denies it: waiting on would never receive anything).
pub(crate) fn check_suback(ack: &rumqttc::SubAck, what: &str) -> Result<(), CtlError> {
    if ack
        .return_codes
        .iter()
        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
    {
        Err(CtlError::Mqtt(format!(
            "subscription to {what} refused (broker ACL)"
        )))
    } else {
        Ok(())
    }
}

/// Best-effort clean disconnect: send DISCONNECT and poll until it is written (at most 1 s).
pub(crate) async fn disconnect(client: &AsyncClient, ev: &mut EventLoop) {
    if client.disconnect().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match ev.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(Event::Incoming(Packet::Disconnect)) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Replaces control characters (terminal escapes) in untrusted text with `?`.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn client_ids_are_random_hex() {
        let a = random_client_id().unwrap();
        let b = random_client_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 16);
        assert!(a.starts_with("ctl-"));
        assert!(
            a[4..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn missing_tls_files_are_named() {
        let conn = MqttConn {
            host: "localhost".into(),
            port: 8883,
            tls: TlsFiles {
                cert_chain: "/nonexistent/backend.crt".into(),
                key: "/nonexistent/backend.key".into(),
                ca: "/nonexistent/ca.crt".into(),
            },
        };
        let e = connect(&conn).map(|_| ()).unwrap_err();
        assert_eq!(e.code(), "link.tls_file_unreadable");
        assert!(e.to_string().contains("/nonexistent/backend.crt"), "{e}");
    }

    #[test]
    fn sanitize_strips_escapes() {
        assert_eq!(sanitize("ok\x1b[31mred\n"), "ok?[31mred?");
    }
}
