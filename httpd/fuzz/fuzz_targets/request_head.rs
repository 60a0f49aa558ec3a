//! `http::request::parse` on arbitrary bytes, then the upstream rewrite of what it accepts.
//!
//! Invariants: an accepted head is a prefix of the input ending in CRLF CRLF, CRLF-only, within
//! the limits; its target is ASCII and in a routable form; its framing is unambiguous and
//! agrees with a plain re-parse by httparse (no ignored Content-Length, no chunked without its
//! Transfer-Encoding, `close` always wins); field values are trimmed, free of control bytes
//! and borrowed from the head; `Head::lines` yields every line of a list field in order.
//! Parsing is incremental: the head alone gives the same result and every shorter prefix is
//! incomplete (the answer cannot depend on how the bytes arrived). The request sent upstream is
//! one well-formed head with one Host, the same framing and no hop-by-hop field.
#![no_main]

use httpd::http::proxy::upstream_request;
use httpd::http::request::{
    Framing, Head, HeadError, ListField, MAX_HEAD, MAX_HEADERS, MAX_REQUEST_LINE, Method, list,
    parse,
};
use httpd::http::target::parse_target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some(h)) => accepted(data, &h),
        Ok(None) => assert!(data.len() <= MAX_HEAD, "incomplete past MAX_HEAD"),
        Err(e) => assert!(matches!(e.status(), 400 | 414 | 431 | 501 | 505)),
    }
});

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fn clean_value(head: &[u8], v: &[u8]) {
    assert!(within(head, v), "value not borrowed from the head");
    assert!(
        !v.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f),
        "control byte in a value: {v:?}"
    );
    assert!(
        !v.first().is_some_and(|c| matches!(c, b' ' | b'\t'))
            && !v.last().is_some_and(|c| matches!(c, b' ' | b'\t')),
        "untrimmed value {v:?}"
    );
}

fn accepted(data: &[u8], h: &Head<'_>) {
    assert!(h.len <= data.len() && h.len <= MAX_HEAD);
    let head = &data[..h.len];
    assert!(head.ends_with(b"\r\n\r\n"));
    for (i, &c) in head.iter().enumerate() {
        assert!(c != b'\n' || (i > 0 && head[i - 1] == b'\r'), "bare LF");
        assert!(c != b'\r' || head.get(i + 1) == Some(&b'\n'), "bare CR");
    }
    // Request line.
    assert!(!h.method_bytes.is_empty() && !h.target.is_empty());
    assert!(within(head, h.method_bytes) && within(head, h.target));
    assert!(h.target.len() <= MAX_REQUEST_LINE);
    assert!(
        !h.target.iter().any(|&c| c <= b' ' || c == 0x7f),
        "space or control in the target"
    );
    assert!(
        h.target.is_ascii() && parse_target(h.target).is_ok(),
        "unroutable target accepted"
    );
    assert!(h.minor <= 1);
    assert_eq!(
        h.method() == Method::Get,
        h.method_bytes == b"GET",
        "method()"
    );
    assert_eq!(h.method() == Method::Head, h.method_bytes == b"HEAD");
    // Framing.
    assert!(
        !(h.chunked && h.content_length.is_some()),
        "chunked and Content-Length"
    );
    assert!(!h.chunked || h.minor == 1, "chunked in HTTP/1.0");
    match h.framing() {
        Framing::Chunked => assert!(h.chunked),
        Framing::Length(n) => assert!(!h.chunked && n > 0 && h.content_length == Some(n)),
        Framing::None => assert!(!h.chunked && h.content_length.unwrap_or(0) == 0),
    }
    assert!(!h.upgrade || h.minor == 1);
    assert!(!h.expect_continue || h.minor == 1);
    // Values.
    for v in [
        h.host,
        h.if_match,
        h.if_none_match,
        h.if_modified_since,
        h.if_unmodified_since,
        h.if_range,
        h.range,
        h.accept_encoding,
        h.referer,
        h.user_agent,
    ]
    .into_iter()
    .flatten()
    {
        clean_value(head, v);
    }
    for (_, v) in &h.more {
        clean_value(head, v);
    }
    if let Some(host) = h.host {
        assert!(!host.is_empty() && host.len() <= 255);
    }
    reparse(head, h);
    incremental(data, h);
    rewrite(head, h);
}

/// Re-parses with plain httparse and checks the strict parser did not drop or invent anything.
fn reparse(head: &[u8], h: &Head<'_>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    assert_eq!(req.parse(head), Ok(httparse::Status::Complete(head.len())));
    assert_eq!(req.method.map(str::as_bytes), Some(h.method_bytes));
    assert_eq!(req.path.map(str::as_bytes), Some(h.target));
    assert_eq!(req.version, Some(h.minor));
    let named = |n: &'static str| {
        req.headers
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(n))
            .map(|f| f.value.trim_ascii())
    };
    let cls: Vec<&[u8]> = named("content-length").collect();
    let tes: Vec<&[u8]> = named("transfer-encoding").collect();
    match h.content_length {
        Some(n) => {
            assert!(!cls.is_empty());
            for v in &cls {
                assert_eq!(
                    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
                    Some(n)
                );
            }
        }
        None => assert!(cls.is_empty(), "Content-Length ignored"),
    }
    if h.chunked {
        assert_eq!(tes.len(), 1);
        let codings: Vec<&[u8]> = list(tes[0]).collect();
        assert_eq!(codings.len(), 1);
        assert!(codings[0].eq_ignore_ascii_case(b"chunked"));
    } else {
        assert!(tes.is_empty(), "Transfer-Encoding ignored");
    }
    assert!(named("host").count() <= 1);
    if h.minor == 1 {
        assert_eq!(named("host").count(), 1);
    }
    let close = named("connection").any(|v| list(v).any(|t| t.eq_ignore_ascii_case(b"close")));
    if close {
        assert!(!h.keep_alive, "Connection: close ignored");
    }
    if h.minor == 0
        && !named("connection").any(|v| list(v).any(|t| t.eq_ignore_ascii_case(b"keep-alive")))
    {
        assert!(!h.keep_alive, "HTTP/1.0 kept alive without asking");
    }
    for (f, name) in [
        (ListField::IfMatch, "if-match"),
        (ListField::IfNoneMatch, "if-none-match"),
        (ListField::AcceptEncoding, "accept-encoding"),
    ] {
        let lines: Vec<&[u8]> = h.lines(f).collect();
        let want: Vec<&[u8]> = named(name).collect();
        assert_eq!(lines, want, "lines of {name}");
    }
    if h.range.is_some() {
        assert_eq!(named("range").count(), 1, "a repeated Range was used");
        assert!(named("if-range").count() <= 1);
    }
}

/// The same head must come out of the head alone, and no shorter prefix may be refused or
/// accepted: the result cannot depend on how the bytes were split between reads.
fn incremental(data: &[u8], h: &Head<'_>) {
    let again = parse(&data[..h.len])
        .expect("head alone refused")
        .expect("head alone incomplete");
    assert_eq!(again.len, h.len);
    assert_eq!(again.framing(), h.framing());
    assert_eq!(again.host, h.host);
    let first_line = data.iter().position(|&c| c == b'\n').unwrap_or(0) + 1;
    for cut in [
        h.len - 1,
        h.len / 2,
        first_line.min(h.len - 1),
        first_line.saturating_sub(2),
    ] {
        let r = parse(&data[..cut]);
        assert!(
            matches!(r, Ok(None)),
            "prefix of {cut} of an accepted {}-byte head: {:?}",
            h.len,
            r.map(|o| o.map(|h| h.len)).map_err(HeadError::status)
        );
    }
}

/// The request head sent upstream: one well-formed head, one Host, the same framing, no
/// hop-by-hop field but the Upgrade pair.
fn rewrite(head: &[u8], h: &Head<'_>) {
    let mut out = Vec::new();
    upstream_request(
        head,
        h,
        "192.0.2.1".parse().unwrap(),
        false,
        "fallback.test",
        &mut out,
    );
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 16];
    let mut req = httparse::Request::new(&mut headers);
    assert_eq!(
        req.parse(&out),
        Ok(httparse::Status::Complete(out.len())),
        "upstream head: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(req.method.map(str::as_bytes), Some(h.method_bytes));
    assert_eq!(req.path.map(str::as_bytes), Some(h.target));
    assert_eq!(req.version, Some(1));
    let count = |n: &str| {
        req.headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(n))
            .count()
    };
    let value = |n: &str| {
        req.headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(n))
            .map(|f| f.value)
    };
    assert_eq!(
        count("host"),
        1,
        "Host lines sent upstream: {:?}",
        String::from_utf8_lossy(&out)
    );
    let cl =
        value("content-length").map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
    assert!(count("content-length") <= 1 && count("transfer-encoding") <= 1);
    assert!(count("content-length") == 0 || count("transfer-encoding") == 0);
    assert_eq!(cl, h.content_length);
    assert_eq!(value("transfer-encoding").is_some(), h.chunked);
    for hop in ["keep-alive", "te", "proxy-connection"] {
        assert_eq!(count(hop), 0, "{hop} forwarded");
    }
    if !h.upgrade {
        assert_eq!(
            count("connection") + count("upgrade"),
            0,
            "Connection or Upgrade forwarded"
        );
    }
    for f in req.headers.iter() {
        assert!(!f.value.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0));
    }
}
