//! The precomputed response header block stored before each body.

use base64::Engine;
use std::time::{Duration, UNIX_EPOCH};

use super::layout::Encoding;

/// The strong ETag (with its quotes) of a representation whose content hash is `hash`.
pub fn etag_for(hash: &[u8; 32], encoding: Encoding) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash[..12]);
    format!("\"{b64}{}\"", encoding.etag_suffix())
}

/// An IMF-fixdate (RFC 9110 5.6.7) for a Unix time in seconds; times before 1970 clamp to it.
pub fn http_date(unix_secs: i64) -> String {
    let secs = u64::try_from(unix_secs).unwrap_or(0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

pub(crate) struct BlockInput<'a> {
    pub mime: &'a str,
    pub len: u64,
    pub etag: &'a str,
    pub mtime: i64,
    pub encoding: Encoding,
    pub vary: bool,
    pub cache_control: Option<&'a str>,
    pub repr_digest: Option<&'a [u8; 32]>,
}

/// The header lines of a 200 response that never change, ending with the empty line.
pub(crate) fn header_block(b: &BlockInput<'_>) -> Vec<u8> {
    let mut s = String::with_capacity(256);
    s.push_str("Content-Type: ");
    s.push_str(b.mime);
    s.push_str("\r\nContent-Length: ");
    s.push_str(&b.len.to_string());
    s.push_str("\r\nETag: ");
    s.push_str(b.etag);
    s.push_str("\r\nLast-Modified: ");
    s.push_str(&http_date(b.mtime));
    s.push_str("\r\nAccept-Ranges: bytes\r\n");
    if b.encoding != Encoding::Identity {
        s.push_str("Content-Encoding: ");
        s.push_str(b.encoding.token());
        s.push_str("\r\n");
    }
    if b.vary {
        s.push_str("Vary: Accept-Encoding\r\n");
    }
    if let Some(cc) = b.cache_control {
        s.push_str("Cache-Control: ");
        s.push_str(cc);
        s.push_str("\r\n");
    }
    if let Some(d) = b.repr_digest {
        s.push_str("Repr-Digest: sha-256=:");
        s.push_str(&base64::engine::general_purpose::STANDARD.encode(d));
        s.push_str(":\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}
