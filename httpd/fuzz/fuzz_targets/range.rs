//! `http::range::decide` against a small independent reading of RFC 9110 section 14.
//!
//! Input: 8 bytes of representation length, one byte choosing its scale, then the Range value.
//! Invariants: a partial range is non-empty and inside [0, len); the decision equals the
//! reference's: a syntactically invalid specifier or another unit is ignored (200), one
//! satisfiable range gives 206, none gives 416, several ranges are answered whole (200).
#![no_main]

use httpd::http::range::{Decision, decide};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let raw = u64::from_le_bytes(data[..8].try_into().unwrap());
    let len = match data[8] % 4 {
        0 => raw % 64,
        1 => raw % 100_000,
        2 => raw,
        _ => u64::MAX - raw % 4,
    };
    let range = &data[9..];
    let d = decide(range, len);
    if let Decision::Partial { start, end } = d {
        assert!(start <= end && end < len, "{start}-{end} of {len}");
    }
    let want = reference(range, len);
    assert_eq!(
        d,
        want,
        "Range {:?} over {len} bytes",
        String::from_utf8_lossy(range)
    );
});

/// A position: digits, leading zeros dropped; values past u64 saturate (they are beyond any
/// length, which is what the implementation documents).
fn pos(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let s = s.trim_start_matches('0');
    if s.is_empty() {
        return Some(0);
    }
    if s.len() > 20 {
        return Some(u64::MAX);
    }
    Some(
        s.parse::<u128>()
            .map_or(u64::MAX, |v| v.min(u128::from(u64::MAX)) as u64),
    )
}

enum Spec {
    /// first-pos "-" [ last-pos ]
    Int(u64, Option<u64>),
    /// "-" suffix-length
    Suffix(u64),
}

fn reference(range: &[u8], len: u64) -> Decision {
    // Anything that is not ASCII cannot be a bytes ranges-specifier.
    let Ok(s) = std::str::from_utf8(range) else {
        return Decision::Full;
    };
    let Some((unit, set)) = s.split_once('=') else {
        return Decision::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Decision::Full;
    }
    // 1#range-spec: elements separated by commas with optional whitespace; empty elements
    // are allowed and ignored (RFC 9110 section 5.6.1).
    let mut specs = Vec::new();
    for el in set.split(',') {
        let el = el.trim_matches([' ', '\t']);
        if el.is_empty() {
            continue;
        }
        let spec = if let Some(n) = el.strip_prefix('-') {
            match pos(n) {
                Some(n) => Spec::Suffix(n),
                None => return Decision::Full,
            }
        } else {
            let Some((a, b)) = el.split_once('-') else {
                return Decision::Full;
            };
            let Some(first) = pos(a) else {
                return Decision::Full;
            };
            let last = if b.is_empty() {
                None
            } else {
                match pos(b) {
                    Some(l) if l >= first => Some(l),
                    _ => return Decision::Full,
                }
            };
            Spec::Int(first, last)
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Decision::Full;
    }
    let mut sat = Vec::new();
    for s in &specs {
        match *s {
            Spec::Int(first, last) if first < len => {
                sat.push((first, last.map_or(len - 1, |l| l.min(len - 1))));
            }
            Spec::Int(..) => {}
            // A suffix of an empty representation is all of it: no range to apply.
            Spec::Suffix(n) if n > 0 && len == 0 => return Decision::Full,
            Spec::Suffix(n) if n > 0 => sat.push((len - n.min(len), len - 1)),
            Spec::Suffix(_) => {}
        }
    }
    match (specs.len(), sat.first()) {
        (_, None) => Decision::Unsatisfiable,
        (1, Some(&(start, end))) => Decision::Partial { start, end },
        _ => Decision::Full,
    }
}
