//! Parser for can-utils `candump -L` log lines: `(1700000000.123456) can0 123#DEADBEEF`.
//!
//! Also accepted: CAN FD `123##1DEADBEEF` (flags nibble after `##`), remote frames `123#R` /
//! `123#R4`, the classic DLC suffix `123#11223344_A`, and `.` separators inside the payload.
//! A 3-digit id is standard, an 8-digit id extended (as candump writes them).

use std::io::BufRead;

use crate::error::CandumpError;
use crate::frame::{CanFrame, FD_LENGTHS};

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFrame {
    /// Timestamp in microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Interface name, e.g. `can0`.
    pub iface: String,
    /// CAN FD flags nibble (BRS=1, ESI=2) for FD frames, else 0.
    pub fd_flags: u8,
    /// The frame (its `timestamp_us` is set).
    pub frame: CanFrame,
}

fn parse_ts(s: &str) -> Result<u64, CandumpError> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or(CandumpError::BadTimestamp)?;
    let (sec, frac) = inner.split_once('.').ok_or(CandumpError::BadTimestamp)?;
    if sec.is_empty()
        || frac.is_empty()
        || frac.len() > 9
        || !sec.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(CandumpError::BadTimestamp);
    }
    let sec: u64 = sec.parse().map_err(|_| CandumpError::BadTimestamp)?;
    let mut frac_us: u64 = frac.parse().map_err(|_| CandumpError::BadTimestamp)?;
    // normalise to microseconds
    let digits = frac.len() as u32;
    if digits < 6 {
        frac_us *= 10u64.pow(6 - digits);
    } else {
        frac_us /= 10u64.pow(digits - 6);
    }
    sec.checked_mul(1_000_000)
        .and_then(|v| v.checked_add(frac_us))
        .ok_or(CandumpError::BadTimestamp)
}

fn hex_nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_hex_data(s: &str, max: usize) -> Result<Vec<u8>, CandumpError> {
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut hi: Option<u8> = None;
    for b in s.bytes() {
        if b == b'.' {
            if hi.is_some() {
                return Err(CandumpError::BadData);
            }
            continue;
        }
        let n = hex_nibble(b).ok_or(CandumpError::BadData)?;
        match hi.take() {
            None => hi = Some(n),
            Some(h) => {
                if out.len() >= max {
                    return Err(CandumpError::BadData);
                }
                out.push((h << 4) | n);
            }
        }
    }
    if hi.is_some() {
        return Err(CandumpError::BadData);
    }
    Ok(out)
}

/// Parse one `candump -L` line.
pub fn parse_line(line: &str) -> Result<LogFrame, CandumpError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(CandumpError::Empty);
    }
    let mut parts = line.split_ascii_whitespace();
    let ts = parse_ts(parts.next().ok_or(CandumpError::Empty)?)?;
    let iface = parts.next().ok_or(CandumpError::MissingField)?;
    let body = parts.next().ok_or(CandumpError::MissingField)?;
    // trailing tokens (e.g. candump's "T"/"R" direction markers) are ignored
    let (id_s, rest) = body.split_once('#').ok_or(CandumpError::MissingField)?;
    if id_s.is_empty() || id_s.len() > 8 || !id_s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CandumpError::BadId);
    }
    let id = u32::from_str_radix(id_s, 16).map_err(|_| CandumpError::BadId)?;
    let extended = id_s.len() > 3;
    if (extended && id > 0x1FFF_FFFF) || (!extended && id > 0x7FF) {
        return Err(CandumpError::BadId);
    }
    let mut frame = CanFrame {
        id,
        extended,
        fd: false,
        remote: false,
        data: Vec::new(),
        timestamp_us: Some(ts),
    };
    let mut fd_flags = 0;
    if let Some(fd) = rest.strip_prefix('#') {
        let mut b = fd.bytes();
        let flags = b
            .next()
            .and_then(hex_nibble)
            .ok_or(CandumpError::BadFlags)?;
        fd_flags = flags;
        frame.fd = true;
        frame.data = parse_hex_data(fd.get(1..).ok_or(CandumpError::BadFlags)?, 64)?;
        if !FD_LENGTHS.contains(&frame.data.len()) {
            return Err(CandumpError::BadData);
        }
    } else if let Some(r) = rest.strip_prefix(['R', 'r']) {
        frame.remote = true;
        if !r.is_empty() {
            let dlc = r.strip_prefix('_').unwrap_or(r);
            if dlc.len() != 1 || !dlc.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(CandumpError::BadFlags);
            }
        }
    } else {
        let data = match rest.split_once('_') {
            Some((d, dlc)) => {
                if dlc.len() != 1 || !dlc.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(CandumpError::BadFlags);
                }
                d
            }
            None => rest,
        };
        frame.data = parse_hex_data(data, 8)?;
    }
    Ok(LogFrame {
        timestamp_us: ts,
        iface: iface.to_string(),
        fd_flags,
        frame,
    })
}

/// A rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarbageLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it was rejected.
    pub error: CandumpError,
}

/// Keep at most this many garbage-line reports (the count keeps growing).
pub const MAX_GARBAGE_REPORTS: usize = 100;

/// Iterator over the frames of a candump log; garbage lines are skipped, counted and reported.
pub struct CandumpReader<R> {
    reader: R,
    buf: String,
    line: usize,
    garbage_count: u64,
    garbage: Vec<GarbageLine>,
    io_error: Option<String>,
}

impl<R: BufRead> CandumpReader<R> {
    /// Wrap a buffered reader.
    pub fn new(reader: R) -> Self {
        CandumpReader {
            reader,
            buf: String::new(),
            line: 0,
            garbage_count: 0,
            garbage: Vec::new(),
            io_error: None,
        }
    }
    /// Number of garbage lines seen so far (blank lines and `#` comments are not garbage).
    pub fn garbage_count(&self) -> u64 {
        self.garbage_count
    }
    /// The first [`MAX_GARBAGE_REPORTS`] garbage lines with line numbers.
    pub fn garbage(&self) -> &[GarbageLine] {
        &self.garbage
    }
    /// The I/O error that ended iteration, if any.
    pub fn io_error(&self) -> Option<&str> {
        self.io_error.as_deref()
    }
    /// Lines read so far.
    pub fn lines_read(&self) -> usize {
        self.line
    }
}

impl<'a> CandumpReader<&'a [u8]> {
    /// Iterate over a string.
    pub fn from_text(s: &'a str) -> Self {
        CandumpReader::new(s.as_bytes())
    }
}

impl<R: BufRead> Iterator for CandumpReader<R> {
    type Item = LogFrame;
    fn next(&mut self) -> Option<LogFrame> {
        loop {
            self.buf.clear();
            // Invalid UTF-8 is replaced rather than aborting the log.
            let mut bytes = Vec::new();
            match self.reader.read_until(b'\n', &mut bytes) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.io_error = Some(e.to_string());
                    return None;
                }
            }
            self.line += 1;
            self.buf.push_str(&String::from_utf8_lossy(&bytes));
            let t = self.buf.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match parse_line(t) {
                Ok(f) => return Some(f),
                Err(error) => {
                    self.garbage_count += 1;
                    if self.garbage.len() < MAX_GARBAGE_REPORTS {
                        self.garbage.push(GarbageLine {
                            line: self.line,
                            error,
                        });
                    }
                }
            }
        }
    }
}

/// Format a frame as a `candump -L` line.
pub fn format_line(timestamp_us: u64, iface: &str, frame: &CanFrame) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "({}.{:06}) {} ",
        timestamp_us / 1_000_000,
        timestamp_us % 1_000_000,
        iface
    );
    if frame.extended {
        let _ = write!(s, "{:08X}", frame.id);
    } else {
        let _ = write!(s, "{:03X}", frame.id);
    }
    if frame.remote {
        s.push_str("#R");
        return s;
    }
    s.push('#');
    if frame.fd {
        s.push_str("#0");
    }
    for b in &frame.data {
        let _ = write!(s, "{b:02X}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_classic() {
        let f = parse_line("(1700000000.123456) can0 123#DEADBEEF").expect("valid");
        assert_eq!(f.timestamp_us, 1_700_000_000_123_456);
        assert_eq!(f.iface, "can0");
        assert_eq!(f.frame.id, 0x123);
        assert!(!f.frame.extended && !f.frame.fd && !f.frame.remote);
        assert_eq!(f.frame.data, vec![0xDE, 0xAD, 0xBE, 0xEF]);
    }

    #[test]
    fn parses_extended_fd_remote_and_empty() {
        let f = parse_line("(1.5) vcan1 18DAF110##1").expect("fd empty");
        assert!(f.frame.extended && f.frame.fd);
        assert_eq!(f.frame.id, 0x18DA_F110);
        assert_eq!(f.fd_flags, 1);
        assert_eq!(f.timestamp_us, 1_500_000);
        let f = parse_line("(2.000001) can0 123##311223344556677889900AABB").expect("fd 12");
        assert_eq!(f.frame.data.len(), 12);
        assert_eq!(f.fd_flags, 3);
        let f = parse_line("(2.000001) can0 7FF#R").expect("remote");
        assert!(f.frame.remote);
        let f = parse_line("(2.000001) can0 7FF#R3").expect("remote dlc");
        assert!(f.frame.remote);
        let f = parse_line("(2.000001) can0 001#").expect("empty data");
        assert!(f.frame.data.is_empty());
        let f = parse_line("(2.000001) can0 001#11.22").expect("dots");
        assert_eq!(f.frame.data, vec![0x11, 0x22]);
    }

    #[test]
    fn rejects_garbage_with_codes() {
        assert_eq!(parse_line(""), Err(CandumpError::Empty));
        assert_eq!(parse_line("hello"), Err(CandumpError::BadTimestamp));
        assert_eq!(parse_line("(1.0) can0"), Err(CandumpError::MissingField));
        assert_eq!(parse_line("(1.0) can0 800#00"), Err(CandumpError::BadId));
        assert_eq!(
            parse_line("(1.0) can0 3FFFFFFF#00"),
            Err(CandumpError::BadId)
        );
        assert_eq!(parse_line("(1.0) can0 123#ABC"), Err(CandumpError::BadData));
        assert_eq!(
            parse_line("(1.0) can0 123#001122334455667788"),
            Err(CandumpError::BadData)
        );
        assert_eq!(
            parse_line("(1.0) can0 123##1001122334455667788"),
            Err(CandumpError::BadData)
        );
        assert_eq!(parse_line("(1.0) can0 123##"), Err(CandumpError::BadFlags));
        assert_eq!(CandumpError::BadId.code(), "candump_bad_id");
    }

    #[test]
    fn reader_counts_garbage_with_line_numbers() {
        let log = "(1.0) can0 123#01\ngarbage here\n\n# comment\n(2.0) can0 124#02\n(x) can0 1#\n";
        let mut r = CandumpReader::from_text(log);
        let frames: Vec<_> = r.by_ref().collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].frame.id, 0x124);
        assert_eq!(r.garbage_count(), 2);
        assert_eq!(r.garbage()[0].line, 2);
        assert_eq!(r.garbage()[1].line, 6);
    }

    #[test]
    fn format_roundtrip() {
        let fr = CanFrame {
            id: 0x1ABCDEF,
            extended: true,
            fd: true,
            remote: false,
            data: vec![1; 12],
            timestamp_us: None,
        };
        let line = format_line(1_700_000_000_000_042, "can0", &fr);
        let back = parse_line(&line).expect("roundtrip");
        assert_eq!(back.frame.data, fr.data);
        assert_eq!(back.frame.id, fr.id);
        assert!(back.frame.fd && back.frame.extended);
        assert_eq!(back.timestamp_us, 1_700_000_000_000_042);
    }
}
