//! The upstream's response head (`http::proxy::parse_response`) and what httpd sends the client
//! for it (`client_response`, `interim`).
//!
//! Input: one flag byte (request was HEAD, client HTTP/1.0, client keep-alive), then the bytes
//! from the upstream. Invariants: an accepted head is a CRLF-only prefix ending in CRLF CRLF,
//! the same alone, and every shorter prefix is incomplete; its framing agrees with a plain
//! httparse re-parse (no Content-Length together with Transfer-Encoding, a Length is the
//! Content-Length, no body for HEAD/1xx/204/304); a reusable connection has a delimited body.
//! The head for the client parses back completely with httparse, has at most one
//! Content-Length and never one with Transfer-Encoding, carries the framing httpd will use, no
//! hop-by-hop field of the upstream, and no control byte in a value.
#![no_main]

use httpd::http::proxy::{BodyFraming, ClientSide, client_response, interim, parse_response};
use httpd::http::request::{MAX_HEADERS, list};
use libfuzzer_sys::fuzz_target;

const DATE: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let was_head = flags & 1 != 0;
    let Ok(Some(rh)) = parse_response(buf, was_head) else {
        return;
    };
    assert!(rh.len <= buf.len());
    let head = &buf[..rh.len];
    assert!(head.ends_with(b"\r\n\r\n"));
    for (i, &c) in head.iter().enumerate() {
        assert!(c != b'\n' || (i > 0 && head[i - 1] == b'\r'), "bare LF");
        assert!(c != b'\r' || head.get(i + 1) == Some(&b'\n'), "bare CR");
    }
    assert!((100..=999).contains(&rh.status));
    assert_eq!(
        parse_response(head, was_head),
        Ok(Some(rh)),
        "head alone differs"
    );
    for cut in [rh.len - 1, rh.len / 2] {
        assert_eq!(
            parse_response(&head[..cut], was_head),
            Ok(None),
            "prefix {cut} not incomplete"
        );
    }

    // Framing against a plain re-parse.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    assert_eq!(resp.parse(head), Ok(httparse::Status::Complete(rh.len)));
    let minor = resp.version.unwrap();
    let named = |n: &'static str| {
        resp.headers
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(n))
            .map(|f| f.value.trim_ascii())
    };
    let te = named("transfer-encoding").count();
    let cl: Vec<u64> = named("content-length")
        .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
        .collect();
    assert!(
        te <= 1 && (te == 0 || cl.is_empty()),
        "TE with CL or repeated"
    );
    assert!(
        cl.windows(2).all(|w| w[0] == w[1]),
        "differing Content-Length accepted"
    );
    assert_eq!(rh.content_length, cl.first().copied());
    let no_body =
        was_head || (100..200).contains(&rh.status) || rh.status == 204 || rh.status == 304;
    match rh.framing {
        BodyFraming::None => assert!(no_body || rh.content_length == Some(0)),
        BodyFraming::Length(n) => assert!(!no_body && n > 0 && rh.content_length == Some(n)),
        BodyFraming::Chunked => assert!(!no_body && te == 1 && minor == 1),
        BodyFraming::Close => assert!(!no_body && rh.content_length.is_none()),
    }
    if rh.reusable {
        assert!(rh.framing != BodyFraming::Close && rh.status != 101);
        let close = named("connection").any(|v| list(v).any(|t| t.eq_ignore_ascii_case(b"close")));
        assert!(!close, "Connection: close but reusable");
        let ka =
            named("connection").any(|v| list(v).any(|t| t.eq_ignore_ascii_case(b"keep-alive")));
        assert!(minor == 1 || ka, "HTTP/1.0 without keep-alive but reusable");
    }

    let c = ClientSide {
        minor: u8::from(flags & 2 == 0),
        keep_alive: flags & 4 == 0,
        date: DATE,
    };
    let mut out = Vec::new();
    let extra = b"X-Extra: 1\r\n";
    let (dechunk, close) = client_response(head, &rh, c, extra, &mut out);
    assert_eq!(dechunk, rh.framing == BodyFraming::Chunked && c.minor == 0);
    assert!(!c.keep_alive || rh.framing == BodyFraming::Close || dechunk || !close);
    assert!(c.keep_alive || close);

    let mut oh = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut o = httparse::Response::new(&mut oh);
    assert_eq!(
        o.parse(&out),
        Ok(httparse::Status::Complete(out.len())),
        "client head: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(o.code, Some(rh.status));
    assert_eq!(o.version, Some(1));
    let count = |n: &str| {
        o.headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(n))
            .count()
    };
    let value = |n: &str| {
        o.headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(n))
            .map(|f| f.value)
    };
    let (ocl, ote) = (count("content-length"), count("transfer-encoding"));
    assert!(
        ocl <= 1 && ote <= 1 && ocl + ote <= 1,
        "framing fields: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(ote == 1, rh.framing == BodyFraming::Chunked && !dechunk);
    if let BodyFraming::Length(n) = rh.framing {
        assert_eq!(value("content-length"), Some(n.to_string().as_bytes()));
    }
    if rh.status == 204 || (100..200).contains(&rh.status) {
        assert_eq!(ocl, 0, "Content-Length on {}", rh.status);
    }
    for hop in ["keep-alive", "te", "proxy-connection"] {
        assert_eq!(count(hop), 0, "{hop} relayed");
    }
    assert_eq!(
        count("connection"),
        usize::from(rh.status == 101 || close || c.minor == 0)
    );
    if rh.status != 101 {
        assert_eq!(count("upgrade"), 0);
    }
    // A recipient with a clock forwards a response with a Date (RFC 9110 section 6.6.1).
    assert!(
        count("date") >= 1,
        "no Date: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(count("via"), 1);
    assert!(count("x-extra") >= 1, "extra headers lost");
    for f in o.headers.iter() {
        assert!(
            !f.value
                .iter()
                .any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)
        );
    }
    for (i, &c) in out.iter().enumerate() {
        assert!(
            c != b'\n' || (i > 0 && out[i - 1] == b'\r'),
            "bare LF in client head"
        );
        assert!(
            c != b'\r' || out.get(i + 1) == Some(&b'\n'),
            "bare CR in client head"
        );
    }

    if (100..200).contains(&rh.status) && rh.status != 101 {
        let mut out = Vec::new();
        interim(head, rh.status, &mut out);
        let mut ih = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut i = httparse::Response::new(&mut ih);
        assert_eq!(i.parse(&out), Ok(httparse::Status::Complete(out.len())));
        assert_eq!(i.code, Some(rh.status));
        for hop in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "te",
            "upgrade",
        ] {
            assert!(!i.headers.iter().any(|f| f.name.eq_ignore_ascii_case(hop)));
        }
    }
});
