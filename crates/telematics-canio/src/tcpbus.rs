//! A virtual CAN bus over TCP (in the spirit of cannelloni / socketcand), so the simulated
//! vehicle (`telematicsctl sim`), the daemon and test harnesses can share a bus across process
//! boundaries on machines without kernel CAN.
//!
//! Topology: one [`TcpBusHub`] accepts TCP clients ([`TcpBusClient::connect`]) and hosts any
//! number of in-process nodes ([`TcpBusHub::local_node`]). Every frame a member sends reaches
//! every *other* member, in order, as on a real bus.
//!
//! Wire format, both directions: one `candump -L` line per frame,
//! `(sec.usec) <iface> <ID>#<DATA>\n` (see [`telematics_can::format_line`] /
//! [`telematics_can::parse_line`]); the hub writes the interface name [`WIRE_IFACE`]. Lines
//! longer than [`MAX_LINE`] bytes or that do not parse are counted and skipped, never fatal;
//! empty lines are ignored.
//!
//! Timestamps: a received frame carries its **receive time** on the receiver's wall clock (the
//! hub stamps a frame when it takes it in, a client when it reads the line off its socket), as
//! a SocketCAN receiver gets its kernel's receive time. The timestamp on the wire is the
//! sender's, informative only (`candump -L` needs one): the hosts' clocks need not agree, and
//! a sender cannot make a frame look older or newer than it is to the daemon. Time a frame
//! spends in the hub's queue for a member or in the socket buffers before the member reads it
//! is not counted (SocketCAN's kernel stamps before its socket buffer); time in the member's
//! own receive queue is.
//!
//! Back-pressure: a member's receive queue is bounded ([`HubOptions::queue_capacity`]). When
//! it is full the frame is dropped for that member only and counted
//! ([`HubStats::frames_dropped`]): a slow or stuck client never blocks the bus.

use crate::bus::validate;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::BoxFuture;
use telematics_can::{format_line, parse_line};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CanFrame, CanIoError, CanSink, CanSource, unix_us};

/// Longest accepted line (without the newline); longer lines are counted as bad and skipped.
pub const MAX_LINE: usize = 512;
/// Default per-member receive queue, in frames.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default maximum number of connected TCP clients.
pub const DEFAULT_MAX_CLIENTS: usize = 256;
/// Interface name written in the lines the bus sends.
pub const WIRE_IFACE: &str = "tcpbus";
/// Largest batch of lines written with one `write_all`.
const WRITE_BATCH: usize = 64 * 1024;

/// Hub tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubOptions {
    /// Frames queued per member (client or local node) before frames are dropped for it
    /// (minimum 1).
    pub queue_capacity: usize,
    /// Connections beyond this many clients are closed at once.
    pub max_clients: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

/// Hub counters (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// TCP clients connected now.
    pub clients: usize,
    /// Local nodes attached now.
    pub local_nodes: usize,
    /// Frames received from members (clients and local nodes).
    pub frames_received: u64,
    /// Frame deliveries queued to members (one frame to three members counts three).
    pub frames_forwarded: u64,
    /// Deliveries dropped because the member's queue was full.
    pub frames_dropped: u64,
    /// Lines from clients that were too long or did not parse.
    pub bad_lines: u64,
    /// Connections refused because `max_clients` were connected.
    pub clients_refused: u64,
}

type Delivery = Arc<CanFrame>;

#[derive(Debug)]
struct Member {
    tx: mpsc::Sender<Delivery>,
    client: bool,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    bad_lines: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug)]
struct HubInner {
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
    counters: Counters,
    options: HubOptions,
    shutdown: CancellationToken,
}

impl HubInner {
    fn members(&self) -> MutexGuard<'_, HashMap<u64, Member>> {
        // a panic while holding the lock cannot leave the map inconsistent (single operations)
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a member; `None` when the hub is shut down or full (clients only).
    fn join(&self, client: bool) -> Option<(u64, mpsc::Receiver<Delivery>)> {
        let mut members = self.members();
        if self.shutdown.is_cancelled() {
            return None;
        }
        if client && members.values().filter(|m| m.client).count() >= self.options.max_clients {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.options.queue_capacity.max(1));
        members.insert(id, Member { tx, client });
        Some((id, rx))
    }

    fn leave(&self, id: u64) {
        self.members().remove(&id);
    }

    /// Queues `frame` for every member except `from`; never waits.
    fn broadcast(&self, from: u64, mut frame: CanFrame) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        frame.timestamp_us = Some(unix_us(std::time::SystemTime::now()));
        let frame = Arc::new(frame);
        let mut gone = Vec::new();
        let mut members = self.members();
        for (id, m) in members.iter() {
            if *id == from {
                continue;
            }
            match m.tx.try_send(frame.clone()) {
                Ok(()) => {
                    self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            members.remove(&id);
        }
    }

    fn close(&self) {
        self.shutdown.cancel();
        self.members().clear();
    }
}

/// The hub of a TCP virtual CAN bus. Dropping it shuts the bus down (like [`shutdown`]).
///
/// [`shutdown`]: TcpBusHub::shutdown
#[derive(Debug)]
pub struct TcpBusHub {
    inner: Arc<HubInner>,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl TcpBusHub {
    /// Listens on `addr` (port 0 picks a free port) with [`HubOptions::default`]. Must be
    /// called inside a tokio runtime.
    pub async fn bind(addr: SocketAddr) -> Result<TcpBusHub, CanIoError> {
        TcpBusHub::bind_with(addr, HubOptions::default()).await
    }

    /// Listens on `addr` with explicit options.
    pub async fn bind_with(addr: SocketAddr, options: HubOptions) -> Result<TcpBusHub, CanIoError> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let inner = Arc::new(HubInner {
            members: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            options,
            shutdown: CancellationToken::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, inner.clone()));
        tracing::debug!(%local_addr, "TCP CAN bus hub listening");
        Ok(TcpBusHub {
            inner,
            local_addr,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Attaches a new in-process node: it receives every frame sent by clients and other local
    /// nodes, and what it sends goes to all of them. After [`shutdown`](Self::shutdown) the
    /// node is closed from the start.
    pub fn local_node(&self) -> TcpBusPort {
        let (rx, id) = match self.inner.join(false) {
            Some((id, rx)) => (rx, id),
            None => (mpsc::channel(1).1, 0),
        };
        TcpBusPort {
            rx,
            sender: TcpBusSender {
                kind: SenderKind::Local {
                    hub: self.inner.clone(),
                    id,
                },
            },
            bad_lines: Arc::new(AtomicU64::new(0)),
            reader: None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        let (clients, local_nodes) = {
            let m = self.inner.members();
            let clients = m.values().filter(|m| m.client).count();
            (clients, m.len() - clients)
        };
        HubStats {
            clients,
            local_nodes,
            frames_received: c.received.load(Ordering::Relaxed),
            frames_forwarded: c.forwarded.load(Ordering::Relaxed),
            frames_dropped: c.dropped.load(Ordering::Relaxed),
            bad_lines: c.bad_lines.load(Ordering::Relaxed),
            clients_refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, disconnects every client and closes the local nodes (their `recv`
    /// returns [`CanIoError::Closed`], their `send` fails with it). Idempotent.
    pub fn shutdown(&self) {
        self.inner.close();
        self.accept.abort();
    }
}

impl Drop for TcpBusHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, hub: Arc<HubInner>) {
    loop {
        let accepted = tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some((id, rx)) = hub.join(true) else {
                    tracing::warn!(%peer, "TCP CAN bus: client refused (hub full or closing)");
                    continue; // dropping the stream closes it
                };
                tracing::debug!(%peer, id, "TCP CAN bus: client connected");
                tokio::spawn(serve_client(stream, id, rx, hub.clone()));
            }
            Err(e) => {
                // e.g. EMFILE: back off instead of spinning
                tracing::warn!(error = %e, "TCP CAN bus: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_client(
    stream: TcpStream,
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    hub: Arc<HubInner>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let stop = hub.shutdown.child_token();
    let writer = tokio::spawn(write_loop(wr, rx, stop.clone()));
    let mut reader = BufReader::new(rd);
    let mut line = Vec::with_capacity(128);
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => break,
            r = read_line_bounded(&mut reader, &mut line) => r,
        };
        match r {
            Ok(Some(LineStatus::Complete)) => match parse_wire_line(&line) {
                Some(Ok(frame)) => hub.broadcast(id, frame),
                Some(Err(())) => {
                    hub.counters.bad_lines.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            },
            Ok(Some(LineStatus::TooLong)) => {
                hub.counters.bad_lines.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(id, error = %e, "TCP CAN bus: client read failed");
                break;
            }
        }
        if writer.is_finished() {
            break;
        }
    }
    hub.leave(id);
    stop.cancel();
    let _ = writer.await;
    tracing::debug!(id, "TCP CAN bus: client disconnected");
}

/// Writes queued frames as lines, batching whatever is queued; ends when the queue closes,
/// on `stop` or on a write error.
async fn write_loop<W, F>(mut wr: W, mut rx: mpsc::Receiver<F>, stop: CancellationToken)
where
    W: AsyncWrite + Unpin,
    F: std::ops::Deref<Target = CanFrame>,
{
    let mut buf = String::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
        };
        buf.clear();
        push_line(&mut buf, &first);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => push_line(&mut buf, &f),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            _ = stop.cancelled() => break,
            r = wr.write_all(buf.as_bytes()) => r,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "TCP CAN bus: write failed");
            break;
        }
    }
    let _ = wr.shutdown().await;
}

fn push_line(buf: &mut String, frame: &CanFrame) {
    let ts = frame
        .timestamp_us
        .unwrap_or_else(|| unix_us(std::time::SystemTime::now()));
    buf.push_str(&format_line(ts, WIRE_IFACE, frame));
    buf.push('\n');
}

enum LineStatus {
    /// `line` holds a complete line (without `\n` / `\r\n`).
    Complete,
    /// The line exceeded [`MAX_LINE`] and was discarded.
    TooLong,
}

/// Reads one line into `line`, never buffering more than [`MAX_LINE`] bytes of it. `Ok(None)`
/// at end of stream (an unterminated last line is discarded).
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<LineStatus>> {
    line.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(None);
        }
        let (chunk, used, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(pos) => (avail.get(..pos).unwrap_or_default(), pos + 1, true),
            None => (avail, avail.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        r.consume(used);
        if done {
            if too_long {
                return Ok(Some(LineStatus::TooLong));
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(LineStatus::Complete));
        }
    }
}

/// `None` for an empty line, `Some(Err)` for garbage.
fn parse_wire_line(line: &[u8]) -> Option<Result<CanFrame, ()>> {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(_) => return Some(Err(())),
    };
    if text.trim().is_empty() {
        return None;
    }
    Some(
        parse_line(text)
            .map_err(|_| ())
            .and_then(|lf| validate(&lf.frame).map(|()| lf.frame).map_err(|_| ())),
    )
}

/// Connects to a [`TcpBusHub`].
#[derive(Debug)]
pub struct TcpBusClient;

impl TcpBusClient {
    /// Connects to the hub at `addr` with the default queue size.
    pub async fn connect(addr: SocketAddr) -> Result<TcpBusPort, CanIoError> {
        TcpBusClient::connect_with(addr, DEFAULT_QUEUE_CAPACITY).await
    }

    /// Connects with a receive / send queue of `queue_capacity` frames each. When the
    /// receive queue is full the client stops reading the socket, so the hub drops frames for
    /// this client (counted there) rather than anything blocking.
    pub async fn connect_with(
        addr: SocketAddr,
        queue_capacity: usize,
    ) -> Result<TcpBusPort, CanIoError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let cap = queue_capacity.max(1);
        let (in_tx, in_rx) = mpsc::channel(cap);
        let (out_tx, out_rx) = mpsc::channel::<Box<CanFrame>>(cap);
        let bad_lines = Arc::new(AtomicU64::new(0));
        let closed = CancellationToken::new();
        let reader = tokio::spawn(client_read_loop(
            BufReader::new(rd),
            in_tx,
            bad_lines.clone(),
            closed.clone(),
        ));
        // the writer ends when every sender is dropped, the hub closed the connection or on a
        // write error
        tokio::spawn(write_loop(wr, out_rx, closed.clone()));
        Ok(TcpBusPort {
            rx: in_rx,
            sender: TcpBusSender {
                kind: SenderKind::Remote { tx: out_tx, closed },
            },
            bad_lines,
            reader: Some(reader),
        })
    }
}

async fn client_read_loop<R: AsyncBufRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<Delivery>,
    bad_lines: Arc<AtomicU64>,
    closed: CancellationToken,
) {
    // runs before `tx` is dropped: senders see the connection closed no later than `recv`
    let _closed = closed.drop_guard();
    let mut line = Vec::with_capacity(128);
    loop {
        match read_line_bounded(&mut rd, &mut line).await {
            Ok(Some(LineStatus::Complete)) => match parse_wire_line(&line) {
                Some(Ok(mut frame)) => {
                    frame.timestamp_us = Some(unix_us(std::time::SystemTime::now()));
                    if tx.send(Arc::new(frame)).await.is_err() {
                        return; // port dropped
                    }
                }
                Some(Err(())) => {
                    bad_lines.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            },
            Ok(Some(LineStatus::TooLong)) => {
                bad_lines.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "TCP CAN bus: read failed");
                return;
            }
        }
    }
}

/// One endpoint of a TCP virtual bus: a client connection ([`TcpBusClient::connect`]) or a
/// hub-local node ([`TcpBusHub::local_node`]).
///
/// [`CanSource::recv`] yields frames from the other members, each stamped with its receive
/// time (see the module docs). When the bus goes away (hub shut down, connection lost) it returns
/// **`Err(CanIoError::Closed)`**, never `Ok(None)`, so a consumer can tell a lost bus (reconnect)
/// from a finished replay. `recv` is cancel-safe.
///
/// Dropping the port ends the membership: a client connection is closed (senders obtained
/// from [`sender`](Self::sender) then fail with [`CanIoError::Closed`]), a local node leaves
/// the hub.
#[derive(Debug)]
pub struct TcpBusPort {
    rx: mpsc::Receiver<Delivery>,
    sender: TcpBusSender,
    bad_lines: Arc<AtomicU64>,
    reader: Option<JoinHandle<()>>,
}

impl TcpBusPort {
    /// A cloneable sending handle (e.g. an `Arc<dyn CanSink>` while the port is the source).
    pub fn sender(&self) -> TcpBusSender {
        self.sender.clone()
    }

    /// Lines received from the hub that were too long or did not parse (client ports; always 0
    /// for local nodes, whose frames are never serialised).
    pub fn bad_lines(&self) -> u64 {
        self.bad_lines.load(Ordering::Relaxed)
    }

    /// Receives the next frame; `Err(CanIoError::Closed)` once the bus is gone.
    pub async fn recv_frame(&mut self) -> Result<CanFrame, CanIoError> {
        match self.rx.recv().await {
            Some(f) => Ok(Arc::unwrap_or_clone(f)),
            None => Err(CanIoError::Closed),
        }
    }

    /// Sends a frame to every other member (see [`TcpBusSender::send_frame`]).
    pub async fn send_frame(&self, frame: &CanFrame) -> Result<(), CanIoError> {
        self.sender.send_frame(frame).await
    }
}

impl Drop for TcpBusPort {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        if let SenderKind::Local { hub, id } = &self.sender.kind {
            hub.leave(*id);
        }
    }
}

impl CanSource for TcpBusPort {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<CanFrame>, CanIoError>> {
        async move { self.recv_frame().await.map(Some) }.boxed()
    }
}

impl CanSink for TcpBusPort {
    fn send<'a>(&'a self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        self.sender.send(frame)
    }
}

#[derive(Debug, Clone)]
enum SenderKind {
    Local {
        hub: Arc<HubInner>,
        id: u64,
    },
    Remote {
        tx: mpsc::Sender<Box<CanFrame>>,
        closed: CancellationToken,
    },
}

/// The sending half of a [`TcpBusPort`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct TcpBusSender {
    kind: SenderKind,
}

impl TcpBusSender {
    /// Puts a frame on the bus. Frames without a timestamp get the current wall time (the
    /// wire's informative timestamp; receivers stamp their own receive time).
    /// Fails with [`CanIoError::InvalidFrame`] for frames no CAN bus can carry and
    /// [`CanIoError::Closed`] when the bus is gone. A local node never waits; a client waits
    /// only while its own send queue to the hub is full.
    pub async fn send_frame(&self, frame: &CanFrame) -> Result<(), CanIoError> {
        validate(frame)?;
        let mut frame = frame.clone();
        if frame.timestamp_us.is_none() {
            frame.timestamp_us = Some(unix_us(std::time::SystemTime::now()));
        }
        match &self.kind {
            SenderKind::Local { hub, id } => {
                if hub.shutdown.is_cancelled() {
                    return Err(CanIoError::Closed);
                }
                hub.broadcast(*id, frame);
                Ok(())
            }
            SenderKind::Remote { tx, closed } => {
                if closed.is_cancelled() {
                    return Err(CanIoError::Closed);
                }
                tx.send(Box::new(frame))
                    .await
                    .map_err(|_| CanIoError::Closed)
            }
        }
    }
}

impl CanSink for TcpBusSender {
    fn send<'a>(&'a self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        self.send_frame(frame).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8]) -> Vec<Result<String, &'static str>> {
        let mut r = BufReader::with_capacity(16, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        while let Some(s) = read_line_bounded(&mut r, &mut line).await.expect("io") {
            out.push(match s {
                LineStatus::Complete => Ok(String::from_utf8_lossy(&line).into_owned()),
                LineStatus::TooLong => Err("too long"),
            });
        }
        out
    }

    #[tokio::test]
    async fn bounded_lines_split_and_skip_overlong() {
        let long = "x".repeat(MAX_LINE + 1);
        let exact = "y".repeat(MAX_LINE);
        let input = format!("a\r\n\nb\n{long}\n{exact}\nc\nunterminated");
        assert_eq!(
            read_all(input.as_bytes()).await,
            vec![
                Ok("a".to_string()),
                Ok(String::new()),
                Ok("b".to_string()),
                Err("too long"),
                Ok(exact),
                Ok("c".to_string()),
            ]
        );
    }

    #[test]
    fn wire_lines_parse_validate_or_count() {
        let f = parse_wire_line(b"(1.000001) tcpbus 123#0102")
            .expect("not empty")
            .expect("valid");
        assert_eq!((f.id, f.data.as_slice()), (0x123, &[1u8, 2][..]));
        assert_eq!(f.timestamp_us, Some(1_000_001));
        assert!(parse_wire_line(b"   ").is_none());
        assert!(matches!(parse_wire_line(b"garbage"), Some(Err(()))));
        assert!(matches!(parse_wire_line(&[0xFF, 0xFE]), Some(Err(()))));
        assert!(matches!(
            parse_wire_line(b"(1.0) x 123#00112233445566778899"),
            Some(Err(()))
        ));
    }
}
