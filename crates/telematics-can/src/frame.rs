//! CAN identifiers and frames shared by the core and the I/O shells.

/// A CAN identifier (11-bit standard or 29-bit extended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanId {
    /// Identifier bits (no flag bits).
    pub id: u32,
    /// True for 29-bit extended ids.
    pub extended: bool,
}

impl CanId {
    /// Standard 11-bit id.
    pub fn standard(id: u16) -> CanId {
        CanId {
            id: u32::from(id) & 0x7FF,
            extended: false,
        }
    }
    /// Extended 29-bit id.
    pub fn extended(id: u32) -> CanId {
        CanId {
            id: id & 0x1FFF_FFFF,
            extended: true,
        }
    }
}

/// A CAN or CAN FD frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanFrame {
    /// Identifier bits.
    pub id: u32,
    /// 29-bit extended id.
    pub extended: bool,
    /// CAN FD frame (payload up to 64 bytes).
    pub fd: bool,
    /// Remote transmission request (no payload).
    pub remote: bool,
    /// Payload (0..=8 bytes classic, 0..=64 FD).
    pub data: Vec<u8>,
    /// Source timestamp in microseconds since the Unix epoch (kernel, log, or receive time).
    pub timestamp_us: Option<u64>,
}

impl CanFrame {
    /// A classic data frame.
    pub fn new(id: CanId, data: &[u8]) -> CanFrame {
        CanFrame {
            id: id.id,
            extended: id.extended,
            fd: data.len() > 8,
            remote: false,
            data: data.to_vec(),
            timestamp_us: None,
        }
    }
    /// The frame's id.
    pub fn can_id(&self) -> CanId {
        CanId {
            id: self.id,
            extended: self.extended,
        }
    }
}

/// Valid CAN FD payload lengths.
pub const FD_LENGTHS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];
