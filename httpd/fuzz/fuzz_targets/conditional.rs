//! Conditional requests: `parse_date`, `strong_match`, `weak_match`, `if_range_holds` and
//! `evaluate`, against RFC 9110 sections 8.8.3 and 13.
//!
//! Input: 8 bytes of mtime, one byte of ETag length, that many ETag bytes, then header values
//! separated by '\n' (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range)
//! and the method. Invariants: a strong match is a weak match; on a well-formed entity-tag list
//! both comparisons equal a reference; a date that parses is non-negative and survives
//! formatting and parsing again; If-Range holds only for our exact strong ETag or our exact
//! date, and always for them; `evaluate` follows the order of section 13.2.2.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use httpd::http::conditional::{
    Outcome, evaluate, if_range_holds, parse_date, strong_match, weak_match,
};
use httpd::http::request::Head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    // Up to year 9999, where IMF-fixdate ends; sometimes negative.
    let mtime = (i64::from_le_bytes(data[..8].try_into().unwrap()) % 253_402_300_800).abs()
        * if data[0] & 1 == 1 { -1 } else { 1 };
    let n = usize::from(data[8]).min(data.len() - 9);
    // Our ETags are quoted etagc runs (mkroot: base64 of a hash).
    let body: String = data[9..9 + n]
        .iter()
        .map(|&c| {
            if (0x23..0x7f).contains(&c) {
                c as char
            } else {
                'e'
            }
        })
        .collect();
    let etag = format!("\"{body}\"");
    let rest = &data[9 + n..];
    let parts: Vec<&[u8]> = rest.split(|&c| c == b'\n').collect();
    let part = |i: usize| parts.get(i).copied();

    for v in &parts {
        one_value(v, &etag, mtime);
    }
    let method: &[u8] = match part(5).and_then(|m| m.first()) {
        Some(b'G') => b"GET",
        Some(b'H') => b"HEAD",
        Some(b'P') => b"POST",
        _ => b"GET",
    };
    let h = Head {
        method_bytes: method,
        if_match: part(0).filter(|v| !v.is_empty()),
        if_none_match: part(1).filter(|v| !v.is_empty()),
        if_modified_since: part(2).filter(|v| !v.is_empty()),
        if_unmodified_since: part(3).filter(|v| !v.is_empty()),
        if_range: part(4).filter(|v| !v.is_empty()),
        ..Head::default()
    };
    assert_eq!(
        evaluate(&h, &etag, mtime),
        reference_evaluate(&h, &etag, mtime)
    );
});

fn one_value(v: &[u8], etag: &str, mtime: i64) {
    let strong = strong_match(v, etag);
    let weak = weak_match(v, etag);
    assert!(!strong || weak, "strong match without weak match");
    if let Some(tags) = entity_tags(v) {
        let want_strong = tags.iter().any(|(w, t)| !w && *t == etag.as_bytes());
        let want_weak = tags.iter().any(|(_, t)| *t == etag.as_bytes());
        let star = v == b"*";
        assert_eq!(strong, star || want_strong, "strong_match({v:?}, {etag})");
        assert_eq!(weak, star || want_weak, "weak_match({v:?}, {etag})");
    }
    // Our own ETag, alone, among others and weakened.
    let ours = etag.as_bytes();
    assert!(strong_match(ours, etag) && weak_match(ours, etag));
    let w = format!("W/{etag}");
    assert!(!strong_match(w.as_bytes(), etag) && weak_match(w.as_bytes(), etag));
    assert!(if_range_holds(ours, etag, mtime));
    assert!(!if_range_holds(w.as_bytes(), etag, mtime));

    if let Some(t) = parse_date(v) {
        assert!(t >= 0);
        let s = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(t as u64));
        assert_eq!(parse_date(s.as_bytes()), Some(t), "{s} does not parse back");
    }
    if if_range_holds(v, etag, mtime) {
        assert!(
            v == etag.as_bytes() || parse_date(v) == Some(mtime),
            "If-Range {v:?}"
        );
    }
    if mtime >= 0 {
        let ours = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime as u64));
        assert_eq!(parse_date(ours.as_bytes()), Some(mtime));
        assert!(if_range_holds(ours.as_bytes(), etag, mtime));
        assert!(!if_range_holds(ours.as_bytes(), etag, mtime + 1));
    }
}

/// `#entity-tag` strictly (RFC 9110 section 8.8.3): None when the list is not well-formed.
fn entity_tags(v: &[u8]) -> Option<Vec<(bool, &[u8])>> {
    let mut out = Vec::new();
    for el in v.split(|&c| c == b',') {
        let el = ows_trim(el);
        if el.is_empty() {
            continue;
        }
        let (weak, tag) = match el.strip_prefix(b"W/") {
            Some(t) => (true, t),
            None => (false, el),
        };
        let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if tag.len() < 2
            || !inner
                .iter()
                .all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c) || c >= 0x80)
        {
            return None;
        }
        out.push((weak, tag));
    }
    (!out.is_empty()).then_some(out)
}

fn ows_trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 section 13.2.2, steps 1 to 4 (If-Range is the Range code's business).
fn reference_evaluate(h: &Head<'_>, etag: &str, mtime: i64) -> Outcome {
    let get_head = matches!(h.method_bytes, b"GET" | b"HEAD");
    if let Some(im) = h.if_match {
        if !strong_match(im, etag) {
            return Outcome::Failed;
        }
    } else if let Some(ius) = h.if_unmodified_since.and_then(parse_date)
        && mtime > ius
    {
        return Outcome::Failed;
    }
    if let Some(inm) = h.if_none_match {
        if weak_match(inm, etag) {
            return if get_head {
                Outcome::NotModified
            } else {
                Outcome::Failed
            };
        }
    } else if let Some(ims) = h.if_modified_since.and_then(parse_date)
        && get_head
        && mtime <= ims
    {
        return Outcome::NotModified;
    }
    Outcome::Proceed
}
