//! Byte layout constants of the webroot format. All integers are little-endian.

/// File magic, the first 8 bytes.
pub const MAGIC: [u8; 8] = *b"WEBROOT\0";
/// Format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every body (and of the data, index and meta sections).
pub const ALIGN: u64 = 4096;
/// Most representations per object: identity, gzip, br, zstd.
pub const MAX_REPS: usize = 4;

/// Size of the fixed header at offset 0.
pub const HEADER_LEN: usize = 128;
/// Offset of the header's own checksum (xxh3 of bytes `0..HEADER_SUM_AT`).
pub const HEADER_SUM_AT: usize = 120;

// Header field offsets.
pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 8;
pub const H_HEADER_LEN: usize = 12;
pub const H_OBJECTS: usize = 16;
pub const H_BUCKETS: usize = 20;
pub const H_INDEX_OFF: usize = 24;
pub const H_INDEX_LEN: usize = 32;
pub const H_META_OFF: usize = 40;
pub const H_META_LEN: usize = 48;
pub const H_DATA_OFF: usize = 56;
pub const H_DATA_LEN: usize = 64;
pub const H_FILE_LEN: usize = 72;
pub const H_INDEX_SUM: usize = 80;
pub const H_META_SUM: usize = 88;

/// One index bucket: `hash u64, object number + 1 (0 = empty) u32, reserved u32`.
pub const BUCKET_LEN: usize = 16;

/// One object record in the meta section.
pub const RECORD_LEN: usize = 48 + MAX_REPS * REP_LEN;
pub const R_PATH_OFF: usize = 0;
pub const R_PATH_LEN: usize = 4;
pub const R_MIME_OFF: usize = 8;
pub const R_MIME_LEN: usize = 12;
pub const R_CC_LEN: usize = 14;
pub const R_CC_OFF: usize = 16;
pub const R_KIND: usize = 20;
pub const R_NREPS: usize = 21;
pub const R_MTIME: usize = 24;
pub const R_TARGET: usize = 32;
pub const R_REPS: usize = 48;

/// One representation inside a record.
pub const REP_LEN: usize = 64;
pub const P_ENCODING: usize = 0;
pub const P_HDR_LEN: usize = 4;
pub const P_HDR_OFF: usize = 8;
pub const P_BODY_LEN: usize = 16;
pub const P_HASH: usize = 24;

pub const KIND_FILE: u8 = 0;
pub const KIND_REDIRECT: u8 = 1;
pub const KIND_ALIAS: u8 = 2;

/// Content coding of a stored representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Encoding {
    Identity = 0,
    Gzip = 1,
    Brotli = 2,
    Zstd = 3,
}

impl Encoding {
    pub const ALL: [Encoding; MAX_REPS] = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Brotli,
        Encoding::Zstd,
    ];

    pub fn from_u8(v: u8) -> Option<Encoding> {
        Encoding::ALL.get(usize::from(v)).copied()
    }

    /// The content-coding token of RFC 9110 (`identity` for the original bytes).
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Suffix of the representation's ETag, so each variant has its own strong validator.
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip => "-gz",
            Encoding::Brotli => "-br",
            Encoding::Zstd => "-zst",
        }
    }
}

pub fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

pub fn get_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

pub fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
