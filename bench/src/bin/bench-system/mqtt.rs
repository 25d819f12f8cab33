//! Plain MQTT clients over the same mTLS transport as the daemon (rumqttc + rustls/ring):
//! a back-end subscriber that timestamps what it receives and an echo "vehicle" that is the
//! transport-only peer of the daemon.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{
    AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS, TlsConfiguration, Transport,
};
use telematics_link::{TlsFiles, client_config};
use telematics_testkit::TestPki;
use tokio::sync::{mpsc, oneshot};

/// A message as received, with its arrival time.
#[derive(Debug)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// When the event loop handed it over.
    pub at: Instant,
}

/// Connects as `cn` (a client certificate with that CN is issued from `pki`), subscribes to
/// `filters` (QoS 1) and returns the client and the stream of received publishes. Returns
/// once every subscription is acknowledged. `nodelay` sets `TCP_NODELAY` (the daemon's link
/// does not set it; rumqttc's default is off).
pub async fn connect(
    pki: &TestPki,
    cn: &str,
    port: u16,
    filters: &[String],
    nodelay: bool,
) -> Result<(AsyncClient, mpsc::UnboundedReceiver<Received>)> {
    let files = pki.client(cn).context("client certificate")?;
    let tls = client_config(&TlsFiles {
        cert_chain: files.cert,
        key: files.key,
        ca: pki.ca_cert().to_path_buf(),
    })
    .context("client TLS config")?;
    let mut id = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("random client id"))?;
    let mut o = MqttOptions::new(format!("{cn}-{}", hex::encode(id)), "localhost", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut ev) = AsyncClient::new(o, 1024);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(nodelay);
    ev.set_network_options(net);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let sub = client.clone();
    let filters = filters.to_vec();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut acks = 0usize;
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    acks = 0;
                    for f in &filters {
                        if sub.subscribe(f.clone(), QoS::AtLeastOnce).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks >= filters.len()
                        && let Some(t) = ready_tx.take()
                    {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let r = Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        at: Instant::now(),
                    };
                    if tx.send(r).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .context("MQTT connect/subscribe timed out")?
        .context("MQTT event loop ended")?;
    Ok((client, rx))
}

/// The transport peer of the daemon: a client with a vehicle certificate (CN `vin`) that
/// republishes every command it receives on `vehicles/{vin}/results`, unchanged, QoS 1 (the
/// daemon's result path without verification and actuation). `nodelay` as in [`connect`].
pub async fn spawn_echo_vehicle(pki: &TestPki, vin: &str, port: u16, nodelay: bool) -> Result<()> {
    let (client, mut rx) = connect(
        pki,
        vin,
        port,
        &[telematics_link::topics::commands(vin)],
        nodelay,
    )
    .await
    .context("echo vehicle")?;
    let results = format!("vehicles/{vin}/results");
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if client
                .publish(results.clone(), QoS::AtLeastOnce, false, m.payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(())
}
