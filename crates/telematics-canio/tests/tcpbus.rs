//! TCP virtual CAN bus: ordering, frame kinds, shutdown, garbage and slow clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use telematics_can::{CanFrame, CanId};
use telematics_canio::tcpbus::{HubOptions, MAX_LINE, TcpBusClient, TcpBusHub, TcpBusPort};
use telematics_canio::{CanIoError, CanSink, CanSource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn any_addr() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn recv(port: &mut TcpBusPort) -> CanFrame {
    timeout(T, port.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("frame")
}

async fn wait_clients(hub: &TcpBusHub, n: usize) {
    timeout(T, async {
        while hub.stats().clients != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("clients registered");
}

fn frames() -> Vec<CanFrame> {
    let mut fd = CanFrame::new(CanId::standard(0x600), &(0..64).collect::<Vec<u8>>());
    fd.timestamp_us = Some(1_700_000_000_000_001);
    let mut remote = CanFrame::new(CanId::standard(0x7DF), &[]);
    remote.remote = true;
    vec![
        CanFrame::new(CanId::standard(0x100), &[1, 2, 3, 4, 5, 6, 7, 8]),
        CanFrame::new(CanId::extended(0x18DA_F110), &[0xAA, 0xBB]),
        fd,
        CanFrame::new(CanId::standard(0x123), &[]),
        remote,
    ]
}

fn same(a: &CanFrame, b: &CanFrame) {
    assert_eq!(
        (a.id, a.extended, a.fd, a.remote, &a.data),
        (b.id, b.extended, b.fd, b.remote, &b.data)
    );
}

#[tokio::test]
async fn clients_and_local_node_exchange_frames_in_order() {
    let hub = TcpBusHub::bind(any_addr()).await.unwrap();
    let mut local = hub.local_node();
    let mut a = TcpBusClient::connect(hub.local_addr()).await.unwrap();
    let mut b = TcpBusClient::connect(hub.local_addr()).await.unwrap();
    wait_clients(&hub, 2).await;

    // client a -> b and local, never back to a; every frame stamped with its receive time,
    // whatever the sender wrote (sent[2] says 2023-11-14)
    let sent = frames();
    let before = wall_us();
    for f in &sent {
        a.send(f).await.unwrap();
    }
    for f in &sent {
        let got_b = recv(&mut b).await;
        let got_l = recv(&mut local).await;
        let after = wall_us();
        same(&got_b, f);
        same(&got_l, f);
        let (tb, tl) = (got_b.timestamp_us.unwrap(), got_l.timestamp_us.unwrap());
        assert!(
            before <= tl && tl <= tb && tb <= after,
            "receive times: hub {tl}, client {tb}, sent after {before}, received by {after}"
        );
    }
    assert_eq!(
        sent[2].timestamp_us,
        Some(1_700_000_000_000_001),
        "the sender's frame is not changed"
    );

    // local -> both clients, in order, via a cloned sender
    let tx = local.sender();
    for i in 0..100u8 {
        tx.send(&CanFrame::new(CanId::standard(0x200), &[i]))
            .await
            .unwrap();
    }
    for i in 0..100u8 {
        assert_eq!(recv(&mut a).await.data, vec![i]);
        assert_eq!(recv(&mut b).await.data, vec![i]);
    }
    // client b -> a and local
    b.send(&CanFrame::new(CanId::extended(0x1234_5678), &[9; 64]))
        .await
        .unwrap();
    assert_eq!(recv(&mut a).await.id, 0x1234_5678);
    assert_eq!(recv(&mut local).await.data, vec![9; 64]);
    // nothing echoed back to the sender
    assert!(
        timeout(Duration::from_millis(100), b.recv()).await.is_err(),
        "no echo"
    );

    let s = hub.stats();
    assert_eq!((s.clients, s.local_nodes), (2, 1));
    assert_eq!(s.frames_received, 5 + 100 + 1);
    assert_eq!(s.frames_forwarded, 5 * 2 + 100 * 2 + 2);
    assert_eq!((s.frames_dropped, s.bad_lines), (0, 0));
}

#[tokio::test]
async fn invalid_frames_are_refused_by_the_sender() {
    let hub = TcpBusHub::bind(any_addr()).await.unwrap();
    let local = hub.local_node();
    let client = TcpBusClient::connect(hub.local_addr()).await.unwrap();
    let mut bad_len = CanFrame::new(CanId::standard(0x100), &[0; 12]);
    bad_len.fd = false;
    let mut bad_id = CanFrame::new(CanId::standard(0x100), &[0]);
    bad_id.id = 0x800;
    for f in [&bad_len, &bad_id] {
        for port in [&local, &client] {
            assert!(matches!(
                port.send(f).await,
                Err(CanIoError::InvalidFrame(_))
            ));
        }
    }
}

#[tokio::test]
async fn hub_shutdown_closes_clients_and_local_nodes() {
    let hub = TcpBusHub::bind(any_addr()).await.unwrap();
    let mut local = hub.local_node();
    let mut client = TcpBusClient::connect(hub.local_addr()).await.unwrap();
    wait_clients(&hub, 1).await;
    hub.shutdown();
    let r = timeout(T, client.recv())
        .await
        .expect("client notices in time");
    assert_eq!(r, Err(CanIoError::Closed));
    assert_eq!(
        timeout(T, local.recv()).await.unwrap(),
        Err(CanIoError::Closed)
    );
    assert_eq!(
        local.send(&CanFrame::new(CanId::standard(1), &[])).await,
        Err(CanIoError::Closed)
    );
    assert_eq!(
        client.send(&CanFrame::new(CanId::standard(1), &[])).await,
        Err(CanIoError::Closed),
        "the connection's writer is gone"
    );
    // a node attached after shutdown is closed from the start
    let mut late = hub.local_node();
    assert_eq!(
        timeout(T, late.recv()).await.unwrap(),
        Err(CanIoError::Closed)
    );
    assert_eq!(hub.stats().clients, 0);
}

#[tokio::test]
async fn dropping_the_hub_shuts_it_down() {
    let hub = TcpBusHub::bind(any_addr()).await.unwrap();
    let addr = hub.local_addr();
    let mut client = TcpBusClient::connect(addr).await.unwrap();
    wait_clients(&hub, 1).await;
    drop(hub);
    assert_eq!(
        timeout(T, client.recv()).await.unwrap(),
        Err(CanIoError::Closed)
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn garbage_lines_are_counted_and_skipped() {
    let hub = TcpBusHub::bind(any_addr()).await.unwrap();
    let mut local = hub.local_node();
    let mut raw = TcpStream::connect(hub.local_addr()).await.unwrap();
    let long = format!("(1.0) can0 123#{}\n", "00".repeat(MAX_LINE));
    let input = format!(
        "(1.000001) can0 101#01\nnot a frame\n\n{long}(1.0) can0 1#\u{0}\n(1.0) can0 123456789#00\n\
         (1.0) can0 100#001122334455667788\r\n(1.000002) can0 102#02\r\n"
    );
    raw.write_all(input.as_bytes()).await.unwrap();
    raw.write_all(&[0xFF, 0xFE, b'\n']).await.unwrap();
    raw.write_all(b"(1.000003) can0 103#03\n").await.unwrap();
    let got: Vec<(u32, Vec<u8>)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let f = recv(&mut local).await;
            // the receive time, not the 1970 the lines say
            assert!(f.timestamp_us.unwrap() > 1_700_000_000_000_000, "{f:?}");
            v.push((f.id, f.data));
        }
        v
    };
    assert_eq!(
        got,
        vec![(0x101, vec![1]), (0x102, vec![2]), (0x103, vec![3])]
    );
    // bad: text, over-long, NUL data, 9-digit id, 9-byte classic payload, invalid UTF-8
    assert_eq!(hub.stats().bad_lines, 6);
    assert_eq!(hub.stats().clients, 1, "garbage is not fatal");

    // and a client port counts garbage the hub would never send, from a fake hub
    let listener = tokio::net::TcpListener::bind(any_addr()).await.unwrap();
    let fake = listener.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"junk\n(2.0) tcpbus 7FF#FF\n").await.unwrap();
        // keep it open until the test is done reading
        let mut r = BufReader::new(s);
        let mut l = String::new();
        let _ = r.read_line(&mut l).await;
    });
    let mut c = TcpBusClient::connect(fake).await.unwrap();
    let f = recv(&mut c).await;
    assert_eq!((f.id, f.data), (0x7FF, vec![0xFF]));
    assert_eq!(c.bad_lines(), 1);
    drop(c);
    serve.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_does_not_block_the_bus_and_its_drops_are_counted() {
    let hub = TcpBusHub::bind_with(
        any_addr(),
        HubOptions {
            queue_capacity: 256,
            ..HubOptions::default()
        },
    )
    .await
    .unwrap();
    // The slow client never reads: a tiny receive buffer makes the hub's writes stall soon.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let _slow = sock.connect(hub.local_addr()).await.unwrap();
    let mut fast = TcpBusClient::connect(hub.local_addr()).await.unwrap();
    let mut local = hub.local_node();
    wait_clients(&hub, 2).await;

    let sender = TcpBusClient::connect(hub.local_addr()).await.unwrap();
    wait_clients(&hub, 3).await;
    // Bursts of 64-byte FD frames until the slow client's queue overflows (its kernel buffers
    // fill first), then some more: the fast members must still see every frame, in order.
    const BURST: u32 = 200;
    const MAX_BURSTS: u32 = 2_000;
    let started = std::time::Instant::now();
    let mut sent = 0u32;
    let mut after_first_drop = None;
    for _ in 0..MAX_BURSTS {
        for _ in 0..BURST {
            let mut payload = [0u8; 64];
            payload[..4].copy_from_slice(&sent.to_be_bytes());
            sender
                .send(&CanFrame::new(CanId::extended(sent), &payload))
                .await
                .unwrap();
            sent += 1;
        }
        for n in sent - BURST..sent {
            assert_eq!(recv(&mut fast).await.id, n);
            assert_eq!(recv(&mut local).await.id, n);
        }
        if hub.stats().frames_dropped > 0 {
            let more = after_first_drop.get_or_insert(10u32);
            if *more == 0 {
                break;
            }
            *more -= 1;
        }
    }
    let elapsed = started.elapsed();
    let s = hub.stats();
    assert_eq!(
        after_first_drop,
        Some(0),
        "drops reached and 10 bursts after: {s:?}"
    );
    assert_eq!(s.frames_received, u64::from(sent));
    assert!(s.frames_dropped > 0, "slow client's drops counted: {s:?}");
    assert!(
        s.frames_dropped < u64::from(sent),
        "only the slow client drops: {s:?}"
    );
    assert_eq!(
        s.frames_forwarded + s.frames_dropped,
        3 * u64::from(sent),
        "{s:?}"
    );
    eprintln!("{sent} frames through 3 members in {elapsed:?}; {s:?}");
}
