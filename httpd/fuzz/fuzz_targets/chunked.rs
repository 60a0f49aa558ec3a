//! The incremental chunked decoder (`http::chunked::Decoder::feed`).
//!
//! Input: one byte n, n split sizes, then the bytes on the wire. Invariants: fed whole or in
//! pieces of those sizes the result is the same (bytes consumed, done or not, error or not, the
//! data); it never consumes more than it was given, and consumes everything it is given until
//! the message ends; collecting the data or not changes nothing; the consumed bytes, forwarded
//! as they are, decode alone to the same message; a decoded message re-encoded decodes to the
//! same data.
#![no_main]

use httpd::http::chunked::{ChunkError, Decoder};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    consumed: usize,
    done: bool,
    error: Option<ChunkError>,
    data: Vec<u8>,
}

/// Feeds `wire` in pieces of the given sizes (cycled; 0 means 1).
fn run(wire: &[u8], sizes: &[u8]) -> Outcome {
    let mut d = Decoder::default();
    let mut data = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < wire.len() {
        let n = sizes
            .get(k % sizes.len().max(1))
            .map_or(wire.len(), |&s| usize::from(s.max(1)));
        k += 1;
        let piece = &wire[at..(at + n).min(wire.len())];
        match d.feed(piece, Some(&mut data)) {
            Ok(c) => {
                assert!(c <= piece.len(), "consumed {c} of {}", piece.len());
                at += c;
                if c < piece.len() {
                    assert!(d.is_done(), "stopped early without being done");
                    break;
                }
            }
            Err(e) => {
                return Outcome {
                    consumed: at,
                    done: d.is_done(),
                    error: Some(e),
                    data,
                };
            }
        }
        if d.is_done() {
            break;
        }
    }
    Outcome {
        consumed: at,
        done: d.is_done(),
        error: None,
        data,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, wire) = rest.split_at(n);

    let whole = run(wire, &[]);
    let pieces = run(wire, sizes);
    let bytewise = run(wire, &[1]);
    // The error happens at some byte of a piece, so `consumed` is where that piece began:
    // compare errors by kind and everything else only without an error.
    assert_eq!(whole.error, pieces.error, "split changes the error");
    assert_eq!(whole.error, bytewise.error);
    assert_eq!(whole.done, pieces.done);
    assert_eq!(whole.done, bytewise.done);
    if whole.error.is_none() {
        assert_eq!(whole, pieces, "split changes the result");
        assert_eq!(whole, bytewise);
        if !whole.done {
            assert_eq!(
                whole.consumed,
                wire.len(),
                "unfinished but did not consume everything"
            );
        }
    }

    // Collecting the data or not does not change the framing.
    let mut d = Decoder::default();
    let r = d.feed(wire, None);
    match (&r, whole.error) {
        (Ok(c), None) => assert_eq!(*c, whole.consumed),
        (Err(e), Some(w)) => assert_eq!(*e, w),
        _ => panic!(
            "data collection changes the result: {r:?} vs {:?}",
            whole.error
        ),
    }

    if whole.done {
        // What we forward is exactly the consumed bytes: alone, they are the same message.
        let fwd = run(&wire[..whole.consumed], &[]);
        assert!(fwd.done && fwd.error.is_none());
        assert_eq!(fwd.consumed, whole.consumed);
        assert_eq!(fwd.data, whole.data);
        // Re-encoded in one chunk (or none), the data decodes back.
        let mut enc = Vec::new();
        if !whole.data.is_empty() {
            enc.extend_from_slice(format!("{:X}\r\n", whole.data.len()).as_bytes());
            enc.extend_from_slice(&whole.data);
            enc.extend_from_slice(b"\r\n");
        }
        enc.extend_from_slice(b"0\r\n\r\n");
        let back = run(&enc, sizes);
        assert!(back.done && back.error.is_none());
        assert_eq!(back.consumed, enc.len());
        assert_eq!(back.data, whole.data);
    }
});
