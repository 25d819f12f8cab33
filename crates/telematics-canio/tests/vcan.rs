//! Real-SocketCAN round trip through [`telematics_canio::socket`] on a vcan interface.
//!
//! Opt-in signal: the `TELEMATICS_VCAN` environment variable (interface name, e.g. `vcan0`).
//! When it is unset the test prints a "skipped" note to stderr and passes, so a normal
//! `cargo test` stays green on hosts whose kernel has no CAN. `scripts/qemu-vcan/run.sh`
//! always exports `TELEMATICS_VCAN=vcan0` in the guest (vcan0 with MTU 72, i.e. CAN FD):
//!
//! ```text
//! cargo test -p telematics-canio --target x86_64-unknown-linux-musl --no-run --test vcan
//! scripts/qemu-vcan/run.sh target/x86_64-unknown-linux-musl/debug/deps/vcan-<hash> --test-threads=1
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use telematics_canio::{CanFrame, CanSink, CanSource, socket};

/// Per-frame receive deadline; generous because the VM runs under TCG emulation.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn frame(id: u32, extended: bool, fd: bool, data: Vec<u8>) -> CanFrame {
    CanFrame {
        id,
        extended,
        fd,
        remote: false,
        data,
        timestamp_us: None,
    }
}

#[tokio::test]
async fn vcan_roundtrip_socketcan() {
    let Ok(iface) = std::env::var("TELEMATICS_VCAN") else {
        eprintln!("skipped: set TELEMATICS_VCAN=vcan0 (run under scripts/qemu-vcan/run.sh)");
        return;
    };

    let tx = socket::open(&iface)
        .unwrap_or_else(|e| panic!("open {iface} for sending (is it up, MTU 72?): {e}"));
    let mut rx = socket::open(&iface)
        .unwrap_or_else(|e| panic!("open {iface} for receiving (is it up, MTU 72?): {e}"));
    eprintln!(
        "vcan: iface={} kernel_timestamps={}",
        rx.iface(),
        rx.kernel_timestamps()
    );

    let frames = [
        // Standard 11-bit id, classic 8-byte payload.
        frame(
            0x123,
            false,
            false,
            vec![0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04],
        ),
        // Extended 29-bit id (J1939-style), classic payload.
        frame(0x18FF_1020, true, false, vec![0x11, 0x22, 0x33, 0x44, 0x55]),
        // CAN FD, 64-byte payload, every byte distinct.
        frame(0x600, false, true, (0u8..64).map(|i| i ^ 0xA5).collect()),
    ];

    for sent in &frames {
        let before_us = now_us();
        tx.send(sent)
            .await
            .unwrap_or_else(|e| panic!("send {:#x} on {iface}: {e}", sent.id));
        let got = tokio::time::timeout(RECV_TIMEOUT, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no frame {:#x} on {iface} within {RECV_TIMEOUT:?}", sent.id)
            })
            .unwrap_or_else(|e| panic!("recv {:#x} on {iface}: {e}", sent.id))
            .expect("SocketCAN source never ends");
        let after_us = now_us();

        assert_eq!(got.id, sent.id, "id");
        assert_eq!(
            got.extended, sent.extended,
            "extended flag of {:#x}",
            sent.id
        );
        assert_eq!(got.fd, sent.fd, "fd flag of {:#x}", sent.id);
        assert!(!got.remote, "remote flag of {:#x}", sent.id);
        assert_eq!(got.data, sent.data, "data of {:#x}", sent.id);

        let ts = got
            .timestamp_us
            .unwrap_or_else(|| panic!("frame {:#x} has no timestamp", sent.id));
        if rx.kernel_timestamps() {
            // Kernel CLOCK_REALTIME receive stamp: between send and receive (1 s slack).
            assert!(
                ts + 1_000_000 >= before_us && ts <= after_us + 1_000_000,
                "kernel timestamp {ts} of {:#x} outside [{before_us}, {after_us}]",
                sent.id
            );
        }
        eprintln!(
            "vcan: ok id={:#x} ext={} fd={} len={} ts_us={ts}",
            got.id,
            got.extended,
            got.fd,
            got.data.len()
        );
    }
}
