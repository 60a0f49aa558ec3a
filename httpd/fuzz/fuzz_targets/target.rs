//! `http::target::parse_target` and `normalize_path`, against a small independent normaliser.
//!
//! Invariants: the parts of a target are borrowed from it and split where the grammar says; a
//! normalised path starts with '/', has no empty, `.` or `..` segment, no control byte, keeps
//! a trailing slash only when the input ended in a directory, and equals what the reference
//! normaliser (decode once, then a segment stack) gives, errors included. `encode_path` of the
//! result normalises back to it, and normalising a result without '%' changes nothing.
#![no_main]

use httpd::http::target::{
    TargetError, authority, encode_path, normalize_path, parse_target, strip_port,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = parse_target(data) {
        // Borrowed from the target, or the literal "/" (empty path) or "*".
        assert!(within(data, t.raw_path) || t.raw_path == b"/" || t.asterisk);
        assert!(!t.raw_path.is_empty());
        assert!(!t.raw_path.contains(&b'?') && !t.raw_path.contains(&b'#'));
        if let Some(q) = t.query {
            assert!(within(data, q) && !q.contains(&b'#'));
        }
        if t.asterisk {
            assert_eq!(data, b"*");
        } else {
            assert_eq!(t.raw_path[0], b'/', "path does not start with '/'");
        }
        // The authority kept with the parse is the one `authority` finds.
        assert_eq!(t.authority, authority(data));
        match t.host {
            Some(host) => {
                assert!(within(data, host));
                let a = authority(data).expect("host without authority");
                assert_eq!(strip_port(a), host);
                assert!(!a.contains(&b'@') && !a.contains(&b'/') && !a.contains(&b'?'));
            }
            None => assert!(data.first() == Some(&b'/') || t.asterisk),
        }
        if !t.asterisk {
            normalized(t.raw_path);
        }
    }
    if data.first() == Some(&b'/') {
        normalized(data);
    }
    if let Some(a) = authority(data) {
        assert!(within(data, a) && !a.is_empty());
        let h = strip_port(a);
        assert!(a.starts_with(h));
    }
});

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fn normalized(raw: &[u8]) {
    let mut out = Vec::new();
    let got = normalize_path(raw, &mut out).map(|()| out.clone());
    let want = reference(raw);
    assert_eq!(
        got,
        want,
        "normalize_path({:?})",
        String::from_utf8_lossy(raw)
    );
    let Ok(p) = got else { return };
    assert_eq!(p.first(), Some(&b'/'));
    assert!(!p.iter().any(|&c| c < 0x20 || c == 0x7f));
    assert!(!p.windows(2).any(|w| w == b"//"), "'//' in {p:?}");
    for seg in p[1..].split(|&c| c == b'/') {
        assert!(seg != b"." && seg != b"..", "dot segment in {p:?}");
    }
    // A path without '%' is its own normal form; any path survives encode + normalise.
    if !p.contains(&b'%') {
        let mut again = Vec::new();
        normalize_path(&p, &mut again).expect("normal form refused");
        assert_eq!(again, p, "not idempotent");
    }
    let enc = encode_path(&p);
    assert!(enc.bytes().all(|c| c.is_ascii_graphic()));
    let mut back = Vec::new();
    normalize_path(enc.as_bytes(), &mut back).expect("encoded normal form refused");
    assert_eq!(back, p, "encode_path does not round-trip");
}

/// RFC 3986 section 5.2.4 in the style of a stack of segments, after one percent-decoding;
/// empty segments merge, `..` above the root is an error.
fn reference(raw: &[u8]) -> Result<Vec<u8>, TargetError> {
    if raw.first() != Some(&b'/') {
        return Err(TargetError::Malformed);
    }
    let mut dec = Vec::new();
    let mut it = raw.iter().copied();
    while let Some(c) = it.next() {
        let b = if c == b'%' {
            let hi = it.next().and_then(|h| (h as char).to_digit(16));
            let lo = it.next().and_then(|l| (l as char).to_digit(16));
            match (hi, lo) {
                (Some(h), Some(l)) => (h * 16 + l) as u8,
                _ => return Err(TargetError::BadEscape),
            }
        } else {
            c
        };
        if b.is_ascii_control() {
            return Err(TargetError::ForbiddenByte);
        }
        dec.push(b);
    }
    let segs: Vec<&[u8]> = dec[1..].split(|&c| c == b'/').collect();
    let mut stack: Vec<&[u8]> = Vec::new();
    for s in &segs {
        match *s {
            b"" | b"." => {}
            b".." => {
                stack.pop().ok_or(TargetError::EscapesRoot)?;
            }
            s => stack.push(s),
        }
    }
    let dir = matches!(segs.last(), Some(&(b"" | b"." | b"..")));
    let mut out = b"/".to_vec();
    out.extend_from_slice(&stack.join(&b'/'));
    if dir && !stack.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}
