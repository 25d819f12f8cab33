//! Proves real SocketCAN works in the qemu VM: send on one socket, receive on another.
use socketcan::{
    CanFdFrame, CanFdSocket, CanFrame, CanSocket, EmbeddedFrame, Frame, Socket, StandardId,
};
use std::time::Duration;

fn run(iface: &str) -> Result<(), String> {
    let tx = CanSocket::open(iface).map_err(|e| format!("open tx {iface}: {e}"))?;
    let rx = CanSocket::open(iface).map_err(|e| format!("open rx {iface}: {e}"))?;
    rx.set_read_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let id = StandardId::new(0x123).ok_or("id")?;
    let data = [0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4];
    let f = CanFrame::new(id, &data).ok_or("frame")?;
    tx.write_frame(&f).map_err(|e| format!("write: {e}"))?;
    let got = rx.read_frame().map_err(|e| format!("read: {e}"))?;
    if got.raw_id() != 0x123 || got.data() != data {
        return Err(format!("classic mismatch: {got:?}"));
    }
    println!("classic frame ok");
    // CAN FD: vcan supports MTU 72 once set (`ip link set vcan0 mtu 72`).
    let fdtx = CanFdSocket::open(iface).map_err(|e| format!("open fd tx: {e}"))?;
    let fdrx = CanFdSocket::open(iface).map_err(|e| format!("open fd rx: {e}"))?;
    fdrx.set_read_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let fd_data: Vec<u8> = (0u8..64).collect();
    let ff = CanFdFrame::new(id, &fd_data).ok_or("fd frame")?;
    match fdtx.write_frame(&ff) {
        Ok(()) => {
            let got = fdrx.read_frame().map_err(|e| format!("fd read: {e}"))?;
            if got.data() != fd_data.as_slice() {
                return Err(format!("fd mismatch: {got:?}"));
            }
            println!("CAN FD frame ok");
        }
        Err(e) => println!("CAN FD not available on {iface} (mtu 16?): {e}"),
    }
    Ok(())
}

fn main() {
    let iface = std::env::args().nth(1).unwrap_or_else(|| "vcan0".into());
    match run(&iface) {
        Ok(()) => println!("VCAN-PROBE-OK"),
        Err(e) => {
            eprintln!("VCAN-PROBE-ERROR: {e}");
            std::process::exit(1);
        }
    }
}
