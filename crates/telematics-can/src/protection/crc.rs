//! The CRC algorithms of the protection schemes, table-driven, MSB-first (none of them reflects):
//! CRC-8 SAE J1850 (polynomial 0x1D), CRC-8 0x2F ("H2F", E2E profile 2) and CRC-16
//! CCITT-FALSE (polynomial 0x1021, E2E profile 5).
//!
//! Each [`Crc8`] / [`Crc16`] exposes the raw register ([`Crc8::update`]) besides the finished
//! checksum, because the E2E profiles chain several calls of the AUTOSAR CRC library with start
//! values: profile 1, for instance, is CRC-8 0x1D run from register 0x00 with no final XOR.

/// The byte-wise lookup table of an MSB-first CRC of `width` (8 or 16) bits with generator
/// `poly`: entry `i` is the register after shifting the byte `i` through it.
const fn table(poly: u16, width: u32) -> [u16; 256] {
    let top = 1u16 << (width - 1);
    let mask = if width == 16 {
        u16::MAX
    } else {
        (1u16 << width) - 1
    };
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u16) << (width - 8);
        let mut bit = 0;
        while bit < 8 {
            r = if r & top != 0 {
                (r << 1) ^ poly
            } else {
                r << 1
            } & mask;
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

/// An 8-bit MSB-first CRC: polynomial, initial register value and final XOR.
#[derive(Clone)]
pub struct Crc8 {
    table: [u8; 256],
    init: u8,
    xor_out: u8,
}

impl Crc8 {
    /// The CRC with generator `poly` (without the x^8 term), register start `init` and final
    /// XOR `xor_out`.
    pub const fn new(poly: u8, init: u8, xor_out: u8) -> Self {
        let wide = table(poly as u16, 8);
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            table[i] = wide[i] as u8;
            i += 1;
        }
        Crc8 {
            table,
            init,
            xor_out,
        }
    }

    /// Feed `data` into the raw register `reg` (no initial value, no final XOR applied).
    pub fn update(&self, reg: u8, data: &[u8]) -> u8 {
        data.iter().fold(reg, |r, b| self.table[usize::from(r ^ b)])
    }

    /// The finished checksum of `data`.
    pub fn checksum(&self, data: &[u8]) -> u8 {
        self.update(self.init, data) ^ self.xor_out
    }
}

/// A 16-bit MSB-first CRC: polynomial, initial register value and final XOR.
#[derive(Clone)]
pub struct Crc16 {
    table: [u16; 256],
    init: u16,
    xor_out: u16,
}

impl Crc16 {
    /// The CRC with generator `poly` (without the x^16 term), register start `init` and final
    /// XOR `xor_out`.
    pub const fn new(poly: u16, init: u16, xor_out: u16) -> Self {
        Crc16 {
            table: table(poly, 16),
            init,
            xor_out,
        }
    }

    /// The register value before any data (the algorithm's initial value).
    pub fn init(&self) -> u16 {
        self.init
    }

    /// Feed `data` into the raw register `reg` (no initial value, no final XOR applied).
    pub fn update(&self, reg: u16, data: &[u8]) -> u16 {
        data.iter().fold(reg, |r, b| {
            (r << 8) ^ self.table[usize::from((r >> 8) as u8 ^ b)]
        })
    }

    /// The finished checksum of `data`.
    pub fn checksum(&self, data: &[u8]) -> u16 {
        self.update(self.init, data) ^ self.xor_out
    }
}

/// CRC-8 SAE J1850: polynomial 0x1D, init 0xFF, final XOR 0xFF (check value 0x4B).
pub const CRC8_SAE_J1850: Crc8 = Crc8::new(0x1D, 0xFF, 0xFF);
/// CRC-8 0x2F as the AUTOSAR CRC library's `Crc_CalculateCRC8H2F` (CRC-8/AUTOSAR in the CRC
/// catalogue): init 0xFF, final XOR 0xFF (check value 0xDF).
pub const CRC8_H2F: Crc8 = Crc8::new(0x2F, 0xFF, 0xFF);
/// CRC-16 CCITT-FALSE (CRC-16/IBM-3740 in the CRC catalogue): polynomial 0x1021, init 0xFFFF,
/// no final XOR (check value 0x29B1).
pub const CRC16_CCITT_FALSE: Crc16 = Crc16::new(0x1021, 0xFFFF, 0x0000);

#[cfg(test)]
mod tests {
    use super::*;

    // Check values ("123456789"): the CRC RevEng catalogue (reveng.sourceforge.io/crc-catalogue),
    // entries CRC-8/SAE-J1850 (0x4B), CRC-8/AUTOSAR (0xDF), CRC-16/IBM-3740 alias
    // CRC-16/CCITT-FALSE (0x29B1).
    #[test]
    fn catalogue_check_values() {
        assert_eq!(CRC8_SAE_J1850.checksum(b"123456789"), 0x4B);
        assert_eq!(CRC8_H2F.checksum(b"123456789"), 0xDF);
        assert_eq!(CRC16_CCITT_FALSE.checksum(b"123456789"), 0x29B1);
    }

    // The example tables of the AUTOSAR CRC library (AUTOSAR_SWS_CRCLibrary, 7.2.1.1 8-bit SAE
    // J1850, 7.2.1.2 8-bit 0x2F, 7.2.2.1 16-bit CCITT-FALSE); the same values are asserted by
    // the autosar-e2e test suite (test/test_crc.py).
    const SWS_INPUTS: [&[u8]; 7] = [
        &[0x00, 0x00, 0x00, 0x00],
        &[0xF2, 0x01, 0x83],
        &[0x0F, 0xAA, 0x00, 0x55],
        &[0x00, 0xFF, 0x55, 0x11],
        &[0x33, 0x22, 0x55, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF],
        &[0x92, 0x6B, 0x55],
        &[0xFF, 0xFF, 0xFF, 0xFF],
    ];

    #[test]
    fn autosar_crc_library_examples() {
        let j1850 = [0x59, 0x37, 0x79, 0xB8, 0xCB, 0x8C, 0x74];
        let h2f = [0x12, 0xC2, 0xC6, 0x77, 0x11, 0x33, 0x6C];
        let ccitt = [0x84C0, 0xD374, 0x2023, 0xB8F9, 0xF53F, 0x0745, 0x1D0F];
        for (i, input) in SWS_INPUTS.iter().enumerate() {
            assert_eq!(
                CRC8_SAE_J1850.checksum(input),
                j1850[i],
                "J1850 {input:02X?}"
            );
            assert_eq!(CRC8_H2F.checksum(input), h2f[i], "H2F {input:02X?}");
            assert_eq!(
                CRC16_CCITT_FALSE.checksum(input),
                ccitt[i],
                "CCITT {input:02X?}"
            );
        }
    }

    #[test]
    fn chained_updates_equal_one_pass() {
        let data = SWS_INPUTS[4];
        let (a, b) = data.split_at(4);
        let r = CRC8_SAE_J1850.update(CRC8_SAE_J1850.update(0xFF, a), b);
        assert_eq!(r ^ 0xFF, 0xCB);
        let r = CRC16_CCITT_FALSE.update(CRC16_CCITT_FALSE.update(0xFFFF, a), b);
        assert_eq!(r, 0xF53F);
    }
}
