//! SocketCAN source/sink (socketcan 4, tokio). Opens a CAN FD-capable raw socket, so both
//! classic and FD frames are received; FD frames can only be sent on an FD interface.
//!
//! Timestamps: `SO_TIMESTAMPNS` is enabled and the kernel's receive timestamp is used (via
//! socketcan's `read_frame_with_timestamp`); if enabling it fails, the receive time is used.
//! Error frames from the controller are skipped and counted.
//!
//! Kernel filter: [`open_filtered`] sets `CAN_RAW_FILTER` to the data frames of the given ids
//! only, so traffic the vehicle does not use never reaches user space (never wakes the
//! daemon). A socket that only sends is opened with [`open_send_only`] (drop-all filter: its
//! receive queue costs nothing). [`CanSource::recv_batch`] reads every queued frame per wakeup
//! (non-blocking reads until `EAGAIN`).
//!
//! Not testable in CI (no CAN in the kernel); exercised under qemu with vcan.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use socketcan::{
    CanAnyFrame, CanDataFrame, CanFdFrame, CanRemoteFrame, EmbeddedFrame, ExtendedId, Frame, Id,
    SocketOptions, StandardId,
};

use crate::{CanFrame, CanId, CanIoError, CanSink, CanSource, unix_us};

/// Most filters the kernel accepts on one socket (`CAN_RAW_FILTER_MAX`); beyond it the socket
/// receives every frame (logged).
pub const MAX_FILTERS: usize = 512;
const CAN_EFF_FLAG: u32 = 0x8000_0000;
const CAN_RTR_FLAG: u32 = 0x4000_0000;
const CAN_SFF_MASK: u32 = 0x0000_07FF;
const CAN_EFF_MASK: u32 = 0x1FFF_FFFF;

/// The `CAN_RAW_FILTER` entry `(can_id, can_mask)` that passes data frames with exactly `id`
/// (standard or extended; remote frames and the other id width are not passed).
pub fn filter_for(id: CanId) -> (u32, u32) {
    if id.extended {
        (
            (id.id & CAN_EFF_MASK) | CAN_EFF_FLAG,
            CAN_EFF_MASK | CAN_EFF_FLAG | CAN_RTR_FLAG,
        )
    } else {
        (
            id.id & CAN_SFF_MASK,
            CAN_SFF_MASK | CAN_EFF_FLAG | CAN_RTR_FLAG,
        )
    }
}

/// A SocketCAN interface (cloneable: clones share the socket, e.g. one task receives while
/// another sends).
#[derive(Clone)]
pub struct SocketCan {
    sock: Arc<socketcan::tokio::CanFdSocket>,
    iface: String,
    kernel_timestamps: bool,
    error_frames: Arc<AtomicU64>,
}

impl std::fmt::Debug for SocketCan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketCan")
            .field("iface", &self.iface)
            .field("kernel_timestamps", &self.kernel_timestamps)
            .finish()
    }
}

/// Open `iface` with the kernel filter set to `ids` (data frames of these ids only; an empty
/// list receives nothing). More than [`MAX_FILTERS`] ids: no filter (every frame).
pub fn open_filtered(iface: &str, ids: &[CanId]) -> Result<SocketCan, CanIoError> {
    let s = open(iface)?;
    let r = if ids.len() > MAX_FILTERS {
        tracing::warn!(
            iface,
            ids = ids.len(),
            max = MAX_FILTERS,
            "too many ids for the kernel filter; receiving every frame"
        );
        Ok(())
    } else if ids.is_empty() {
        s.sock.set_filter_drop_all()
    } else {
        let filters: Vec<socketcan::CanFilter> = ids
            .iter()
            .map(|id| {
                let (can_id, mask) = filter_for(*id);
                socketcan::CanFilter::new(can_id, mask)
            })
            .collect();
        s.sock.set_filters(&filters)
    };
    r.map_err(|e| CanIoError::Io(format!("{iface}: CAN_RAW_FILTER: {e}")))?;
    Ok(s)
}

/// Open `iface` for sending only: the kernel delivers it no frames.
pub fn open_send_only(iface: &str) -> Result<SocketCan, CanIoError> {
    open_filtered(iface, &[])
}

/// Open a SocketCAN interface such as `can0` or `vcan0` (no filter: every frame).
pub fn open(iface: &str) -> Result<SocketCan, CanIoError> {
    let sock = socketcan::tokio::CanFdSocket::open(iface)
        .map_err(|e| CanIoError::Io(format!("open {iface}: {e}")))?;
    let kernel_timestamps = match sock.set_recv_timestamp(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(iface, error = %e, "SO_TIMESTAMPNS unavailable; using receive time");
            false
        }
    };
    Ok(SocketCan {
        sock: Arc::new(sock),
        iface: iface.to_string(),
        kernel_timestamps,
        error_frames: Arc::new(AtomicU64::new(0)),
    })
}

impl SocketCan {
    /// Interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Whether kernel receive timestamps are in use.
    pub fn kernel_timestamps(&self) -> bool {
        self.kernel_timestamps
    }

    /// Controller error frames skipped so far.
    pub fn error_frames(&self) -> u64 {
        self.error_frames.load(Ordering::Relaxed)
    }

    /// Receive the next data/remote frame (error frames are skipped and counted).
    pub async fn recv_frame(&self) -> Result<CanFrame, CanIoError> {
        loop {
            let (any, ts) = if self.kernel_timestamps {
                let (f, t) = self.sock.read_frame_with_timestamp().await?;
                (f, unix_us(t))
            } else {
                let f = self.sock.read_frame().await?;
                (f, unix_us(std::time::SystemTime::now()))
            };
            match from_any(&any, ts) {
                Some(f) => return Ok(f),
                None => {
                    self.error_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Send one frame.
    pub async fn send_frame(&self, frame: &CanFrame) -> Result<(), CanIoError> {
        let any = to_any(frame)?;
        self.sock.write_frame(&any).await?;
        Ok(())
    }
}

/// Convert a socketcan frame; `None` for error frames.
pub fn from_any(any: &CanAnyFrame, timestamp_us: u64) -> Option<CanFrame> {
    let (id, extended, fd, remote, data) = match any {
        CanAnyFrame::Normal(f) => (f.raw_id(), f.is_extended(), false, false, f.data().to_vec()),
        CanAnyFrame::Remote(f) => (f.raw_id(), f.is_extended(), false, true, Vec::new()),
        CanAnyFrame::Fd(f) => (f.raw_id(), f.is_extended(), true, false, f.data().to_vec()),
        CanAnyFrame::Error(_) => return None,
    };
    Some(CanFrame {
        id,
        extended,
        fd,
        remote,
        data,
        timestamp_us: Some(timestamp_us),
    })
}

/// Convert to a socketcan frame.
pub fn to_any(frame: &CanFrame) -> Result<CanAnyFrame, CanIoError> {
    let bad = |m: &str| CanIoError::InvalidFrame(format!("{m} (id {:#x})", frame.id));
    let id: Id = if frame.extended {
        ExtendedId::new(frame.id)
            .ok_or_else(|| bad("extended id out of range"))?
            .into()
    } else {
        u16::try_from(frame.id)
            .ok()
            .and_then(StandardId::new)
            .ok_or_else(|| bad("standard id out of range"))?
            .into()
    };
    if frame.remote {
        if frame.fd {
            return Err(bad("CAN FD has no remote frames"));
        }
        return CanRemoteFrame::new_remote(id, frame.data.len())
            .map(CanAnyFrame::Remote)
            .ok_or_else(|| bad("remote frame"));
    }
    if frame.fd {
        CanFdFrame::new(id, &frame.data)
            .map(CanAnyFrame::Fd)
            .ok_or_else(|| bad("FD payload"))
    } else {
        CanDataFrame::new(id, &frame.data)
            .map(CanAnyFrame::Normal)
            .ok_or_else(|| bad("payload longer than 8"))
    }
}

impl CanSource for SocketCan {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<CanFrame>, CanIoError>> {
        async move { self.recv_frame().await.map(Some) }.boxed()
    }
}

impl CanSink for SocketCan {
    fn send<'a>(&'a self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        self.send_frame(frame).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_conversion_roundtrip() {
        let frames = [
            CanFrame {
                id: 0x123,
                extended: false,
                fd: false,
                remote: false,
                data: vec![1, 2, 3],
                timestamp_us: None,
            },
            CanFrame {
                id: 0x18FF1020,
                extended: true,
                fd: false,
                remote: false,
                data: vec![0; 8],
                timestamp_us: None,
            },
            CanFrame {
                id: 0x600,
                extended: false,
                fd: true,
                remote: false,
                data: vec![7; 64],
                timestamp_us: None,
            },
            CanFrame {
                id: 0x7FF,
                extended: false,
                fd: false,
                remote: true,
                data: vec![],
                timestamp_us: None,
            },
        ];
        for f in frames {
            let any = to_any(&f).expect("convertible");
            let back = from_any(&any, 42).expect("not an error frame");
            assert_eq!(
                back,
                CanFrame {
                    timestamp_us: Some(42),
                    ..f
                }
            );
        }
    }

    /// The kernel passes a frame when `(frame_id & mask) == (filter_id & mask)`: a filter entry
    /// passes data frames of its id only, never the same bits with the other id width or RTR.
    #[test]
    fn filter_entries_match_exactly_one_data_id() {
        let passes = |(id, mask): (u32, u32), frame_id: u32| (frame_id & mask) == (id & mask);
        let std = filter_for(CanId::standard(0x101));
        assert!(passes(std, 0x101));
        assert!(!passes(std, 0x102));
        assert!(
            !passes(std, 0x101 | CAN_EFF_FLAG),
            "extended id with the same low bits"
        );
        assert!(!passes(std, 0x101 | CAN_RTR_FLAG), "remote frame");
        let ext = filter_for(CanId::extended(0x18FF_1020));
        assert!(passes(ext, 0x18FF_1020 | CAN_EFF_FLAG));
        assert!(!passes(ext, 0x18FF_1020), "standard flag");
        assert!(!passes(ext, 0x18FF_1021 | CAN_EFF_FLAG));
        assert!(!passes(filter_for(CanId::extended(0x101)), 0x101));
    }

    #[test]
    fn invalid_frames_rejected() {
        let mut f = CanFrame {
            id: 0x800,
            extended: false,
            fd: false,
            remote: false,
            data: vec![],
            timestamp_us: None,
        };
        assert_eq!(
            to_any(&f).map_err(|e| e.code()).err(),
            Some("can_invalid_frame")
        );
        f.id = 0x100;
        f.data = vec![0; 9];
        assert!(to_any(&f).is_err());
        f.fd = true;
        f.data = vec![0; 65];
        assert!(to_any(&f).is_err());
    }

    #[test]
    fn open_missing_interface_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let r = rt.block_on(async { open("nonexistent-can9") });
        assert_eq!(r.map(|_| ()).map_err(|e| e.code()), Err("can_io"));
    }
}
