//! Virtual vehicle buses: the TCP virtual bus of `telematicsctl sim` and bench rigs
//! (`can.source = "tcp"`) and, with the `sim` feature only, the in-process simulated demo car
//! (`can.source = "sim"`). The shipped daemon is built without `sim`: no simulator code is
//! linked into it, and its configuration refuses `sim` (`Config::validate`).

use std::sync::Arc;

use telematics_canio::{CanIoError, TcpBusClient};

use crate::runtime::CanPorts;
#[cfg(feature = "sim")]
pub use in_process::{in_process_connector, in_process_with};

/// Receive queue of the daemon's TCP bus client, frames.
pub const TCP_QUEUE: usize = 256;

/// Connects to a TCP virtual bus at `addr` (`host:port`).
pub async fn connect_tcp(addr: &str) -> Result<CanPorts, CanIoError> {
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| CanIoError::Io(format!("bad virtual bus address {addr:?}")))?;
    // A short receive queue: frames waiting in it age (freshness is each frame's own
    // timestamp); beyond it the hub drops for this client and counts.
    let port = TcpBusClient::connect_with(sock, TCP_QUEUE).await?;
    let sink = Arc::new(port.sender());
    Ok(CanPorts {
        source: Box::new(port),
        sink,
    })
}

#[cfg(feature = "sim")]
mod in_process {
    use std::sync::{Arc, Mutex};

    use telematics_can::sim::BodyController;
    use telematics_canio::CanBus;
    use tokio_util::sync::CancellationToken;

    use crate::runtime::{CanConnector, CanPorts};

    /// A connector to an in-process simulated demo car: the first connection creates the bus and
    /// starts the body controller on it (inside the caller's tokio runtime); the controller stops
    /// with the process. The returned handle gives access to the car (tests, demo).
    pub fn in_process_connector() -> CanConnector {
        in_process_with(Arc::new(tokio::sync::Mutex::new(BodyController::demo())))
    }

    /// [`in_process_connector`] for a given controller (so the caller can change the car).
    pub fn in_process_with(car: Arc<tokio::sync::Mutex<BodyController>>) -> CanConnector {
        let bus: Arc<Mutex<Option<CanBus>>> = Arc::new(Mutex::new(None));
        Arc::new(move || {
            let bus = bus.clone();
            let car = car.clone();
            Box::pin(async move {
                let node = {
                    let mut guard = bus.lock().unwrap_or_else(|p| p.into_inner());
                    let b = guard.get_or_insert_with(|| {
                        let b = CanBus::new(4096);
                        let ctl_node = b.node();
                        tokio::spawn(async move {
                            if let Err(e) = telematics_canio::run_body_controller(
                                car,
                                ctl_node,
                                CancellationToken::new(),
                            )
                            .await
                            {
                                tracing::error!(error = %e, "simulated body controller stopped");
                            }
                        });
                        b
                    });
                    b.node()
                };
                let sink = Arc::new(node.sender());
                Ok(CanPorts {
                    source: Box::new(node),
                    sink,
                })
            })
        })
    }
}
