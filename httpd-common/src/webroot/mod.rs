//! The webroot format: one immutable file holding every object of a site, ready to serve.
//!
//! See `docs/webroot-format.md` for the byte layout. In short:
//!
//! ```text
//! page 0      header (magic, version, counts, section offsets, section checksums)
//! data        for each representation: [response header block][body], the body 4 KiB-aligned
//! index       open-addressing hash table: xxh3(path) -> object number
//! meta        fixed-size object records, then a string area (paths, MIME types, Cache-Control)
//! ```
//!
//! [`Webroot::open`] checks structure and checksums and every offset, so a corrupt file is
//! refused at open and nothing read later can be out of bounds. [`Webroot::verify`] hashes every
//! body against its stored content hash.

mod error;
mod headers;
mod layout;
mod reader;
mod writer;

pub use error::{Error, Result};
pub use headers::{etag_for, http_date};
pub use layout::{ALIGN, Encoding, FORMAT_VERSION, MAGIC, MAX_REPS};
pub use reader::{Kind, Lease, Object, OpenOptions, Rep, VerifyProblem, Webroot};
pub use writer::{Body, InputObject, InputRep, WriteOptions, WriteStats, reseal, write_webroot};

/// The 64-bit hash that keys the index. Stable across machines and versions of this crate.
pub fn path_hash(path: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(path)
}

#[cfg(test)]
mod tests;
