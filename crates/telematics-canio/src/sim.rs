//! Runs a simulated body controller ([`telematics_can::sim::BodyController`]) on a bus port:
//! answers commands and sends the periodic status frames in real time. Used by
//! `telematicsctl sim`, the daemon's in-process `sim` source and the end-to-end tests.

use std::sync::Arc;

use telematics_can::sim::{BodyController, SimEvent};
use tokio::sync::Mutex;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::{CanFrame, CanIoError, CanSink, CanSource};

/// Runs `controller` on `port` until `shutdown` is cancelled (`Ok(())`), the source ends
/// (`Ok(None)`, `Ok(())`) or the port fails (the error, e.g. [`CanIoError::Closed`] when a
/// TCP bus hub goes away). Events are logged with `tracing` at info level.
///
/// The controller is shared so callers can change the car or the fault knobs while it runs;
/// the lock is never held across an await on the bus. `port.recv()` must be cancel-safe (it is
/// for [`crate::BusNode`], [`crate::tcpbus::TcpBusPort`] and [`crate::socket::SocketCan`], not
/// for a replay source). Time starts at 0 when the loop starts (tokio time, so paused test
/// time works).
pub async fn run_body_controller<P>(
    controller: Arc<Mutex<BodyController>>,
    port: P,
    shutdown: CancellationToken,
) -> Result<(), CanIoError>
where
    P: CanSource + CanSink,
{
    run_body_controller_with(controller, port, shutdown, |e| {
        tracing::info!(target: "telematics_canio::sim", "{e}");
    })
    .await
}

/// Like [`run_body_controller`], but every [`SimEvent`] (command received, refused, delayed
/// actuation, ...) is passed to `on_event` instead of being logged.
pub async fn run_body_controller_with<P, F>(
    controller: Arc<Mutex<BodyController>>,
    port: P,
    shutdown: CancellationToken,
    on_event: F,
) -> Result<(), CanIoError>
where
    P: CanSource + CanSink,
    F: FnMut(&SimEvent) + Send,
{
    run_body_controller_on_buses(controller, vec![(String::new(), port)], shutdown, on_event).await
}

/// [`run_body_controller_with`] on several buses (name and port): commands are heard on any
/// of them; each frame the controller sends goes to the bus it names
/// ([`BodyController::bus_of`]), to the first port when it names none or a bus not in
/// `ports` (the demo car on one bus). Ends when any port ends or fails.
pub async fn run_body_controller_on_buses<P, F>(
    controller: Arc<Mutex<BodyController>>,
    mut ports: Vec<(String, P)>,
    shutdown: CancellationToken,
    mut on_event: F,
) -> Result<(), CanIoError>
where
    P: CanSource + CanSink,
    F: FnMut(&SimEvent) + Send,
{
    enum Step {
        Stop,
        Tick,
        Frame(Result<Option<CanFrame>, CanIoError>),
    }
    if ports.is_empty() {
        return Ok(());
    }
    let origin = Instant::now();
    let now_ms = move || u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
    loop {
        let next = controller.lock().await.next_tick();
        let deadline = origin
            .checked_add(Duration::from_millis(next))
            .unwrap_or_else(|| origin + Duration::from_secs(86_400 * 365));
        let step = {
            let recv = futures::future::select_all(ports.iter_mut().map(|(_, p)| p.recv()));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => Step::Stop,
                _ = tokio::time::sleep_until(deadline) => Step::Tick,
                (r, _, _) = recv => Step::Frame(r),
            }
        };
        let (out, events) = match step {
            Step::Stop | Step::Frame(Ok(None)) => return Ok(()),
            Step::Frame(Err(e)) => return Err(e),
            Step::Tick => {
                let mut c = controller.lock().await;
                (c.tick(now_ms()), c.take_events())
            }
            Step::Frame(Ok(Some(frame))) => {
                let mut c = controller.lock().await;
                (c.on_frame(&frame, now_ms()), c.take_events())
            }
        };
        for e in &events {
            on_event(e);
        }
        let routes: Vec<usize> = {
            let c = controller.lock().await;
            out.iter()
                .map(|f| {
                    c.bus_of(f)
                        .and_then(|b| ports.iter().position(|(n, _)| n == b))
                        .unwrap_or(0)
                })
                .collect()
        };
        for (f, i) in out.iter().zip(routes) {
            if let Some((_, p)) = ports.get(i) {
                p.send(f).await?;
            }
        }
    }
}
