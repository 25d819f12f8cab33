//! A TCP proxy that can cut the network without closing anything (fault injection).
//!
//! [`CutProxy`] listens on `127.0.0.1:<free port>` and forwards every accepted connection to an
//! upstream address. [`CutProxy::cut`] black-holes all traffic: the proxy stops reading from
//! both sides and forwards nothing, but keeps every socket open, as a pulled cable or a dead
//! radio link would (no FIN, no RST: only the peers' keep-alive can notice). Connections
//! accepted during a cut are held and connected upstream only after [`CutProxy::heal`], so a
//! client's new handshake hangs until its own connect timeout. After healing, forwarding
//! resumes (data the peers wrote into their socket buffers during the cut is then delivered,
//! like TCP retransmissions after a short outage).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Counters of a [`CutProxy`].
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted from clients.
    pub accepted: AtomicU64,
    /// Connections whose upstream side was established (forwarding started).
    pub forwarded: AtomicU64,
    /// Bytes forwarded client -> upstream.
    pub bytes_up: AtomicU64,
    /// Bytes forwarded upstream -> client.
    pub bytes_down: AtomicU64,
}

/// See the [module docs](self).
pub struct CutProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    stats: Arc<ProxyStats>,
    stop: CancellationToken,
}

impl CutProxy {
    /// Starts a proxy to `upstream`. Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let stats = Arc::new(ProxyStats::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            cut_rx,
            stats.clone(),
            stop.clone(),
        ));
        Ok(CutProxy {
            addr,
            cut,
            stats,
            stop,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Black-holes all traffic from now on (sockets stay open).
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Resumes forwarding.
    pub fn heal(&self) {
        let _ = self.cut.send(false);
    }

    /// `true` while the network is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until the network is not cut; `false` when the proxy stopped.
async fn wait_healed(cut: &mut watch::Receiver<bool>, stop: &CancellationToken) -> bool {
    loop {
        if !*cut.borrow_and_update() {
            return true;
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            r = cut.changed() => if r.is_err() { return false },
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: watch::Receiver<bool>,
    stats: Arc<ProxyStats>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (cut, stats, stop) = (cut.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move {
            let mut c = cut.clone();
            // A connection opened during a cut is held (its SYN was answered, nothing else).
            if !wait_healed(&mut c, &stop).await {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let conn = stop.child_token();
            let up = tokio::spawn(pump(cr, sw, cut.clone(), stats.clone(), true, conn.clone()));
            let down = tokio::spawn(pump(sr, cw, cut, stats, false, conn.clone()));
            let _ = up.await;
            let _ = down.await;
        });
    }
}

/// Copies `from` to `to` while the network is up; during a cut it neither reads nor writes.
/// When one direction ends (EOF or error) the whole connection is closed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
    stats: Arc<ProxyStats>,
    upward: bool,
    conn: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !wait_healed(&mut cut, &conn).await {
            break;
        }
        let n = tokio::select! {
            () = conn.cancelled() => break,
            // A cut while waiting for data stops this read before anything is taken.
            r = cut.changed() => { if r.is_err() { break } continue }
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        // Bytes already read when a cut starts are held back until the network heals.
        if !wait_healed(&mut cut, &conn).await {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let counter = if upward {
            &stats.bytes_up
        } else {
            &stats.bytes_down
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    conn.cancel();
    let _ = to.shutdown().await;
}
