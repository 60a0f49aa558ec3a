//! Header rewriting for forwarded exchanges, and strict parsing of the upstream's response head.
//! Pure functions over bytes.

use std::io::Write;
use std::net::IpAddr;

use super::request::{Head, list};

/// Largest response head accepted from the upstream.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Header fields that describe one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

fn is_hop(name: &str, connection_tokens: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.as_bytes().eq_ignore_ascii_case(t))
}

/// Appends `name: value\r\n` (value trimmed).
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.trim_ascii());
    out.extend_from_slice(b"\r\n");
}

fn connection_tokens<'a>(headers: &[httparse::Header<'a>]) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| list(h.value))
        .collect()
}

fn joined(headers: &[httparse::Header<'_>], name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = out.get_or_insert_with(Vec::new);
        if !v.is_empty() {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(h.value.trim_ascii());
    }
    out
}

/// The request head sent upstream: method and target exactly as received, HTTP/1.1, the
/// client's headers minus hop-by-hop ones, one normalised Content-Length or chunked framing,
/// X-Forwarded-For/-Proto/-Host and Via.
pub fn upstream_request(
    raw_head: &[u8],
    h: &Head<'_>,
    client: IpAddr,
    fallback_host: &str,
    out: &mut Vec<u8>,
) {
    let mut headers = [httparse::EMPTY_HEADER; super::request::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // The head was parsed and validated already; this cannot fail.
    let _ = req.parse(raw_head);
    let conn = connection_tokens(req.headers);
    out.extend_from_slice(h.method_bytes);
    out.push(b' ');
    out.extend_from_slice(h.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Host: the absolute-form target's authority wins (RFC 9112 3.2.2); an HTTP/1.0 request
    // without Host gets one, as HTTP/1.1 requires it.
    let authority = super::target::authority(h.target);
    match (authority, h.host) {
        (Some(a), _) => {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        // An empty Host (h.host None) is passed on as it came.
        (None, None)
            if !req
                .headers
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case("host")) =>
        {
            let _ = write!(out, "Host: {fallback_host}\r\n");
        }
        (None, _) => {}
    }
    for f in req.headers.iter() {
        let n = f.name;
        // Host is the absolute-form target's authority when there is one; it is never a
        // connection option (a request must carry it, RFC 9112 section 3.2), whatever a
        // Connection line names.
        let host = n.eq_ignore_ascii_case("host");
        if (host && authority.is_some())
            || (!host && is_hop(n, &conn))
            || n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("x-forwarded-for")
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || n.eq_ignore_ascii_case("x-forwarded-host")
            || n.eq_ignore_ascii_case("via")
        {
            continue;
        }
        field(out, n.as_bytes(), f.value);
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prev) = joined(req.headers, "x-forwarded-for") {
        out.extend_from_slice(&prev);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{client}\r\nX-Forwarded-Proto: http\r\n");
    if let Some(host) = authority.or(h.host) {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Via: ");
    if let Some(prev) = joined(req.headers, "via") {
        out.extend_from_slice(&prev);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "1.{} httpd\r\n", h.minor);
    if h.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else if let Some(cl) = h.content_length {
        let _ = write!(out, "Content-Length: {cl}\r\n");
    }
    if h.upgrade
        && let Some(up) = joined(req.headers, "upgrade")
    {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        out.extend_from_slice(&up);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the upstream's response body is framed (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A parsed upstream response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub len: usize,
    pub framing: BodyFraming,
    /// The upstream's Content-Length, for HEAD and 304 (where it frames nothing).
    pub content_length: Option<u64>,
    /// The upstream will keep the connection open after this response.
    pub reusable: bool,
}

/// Parses the upstream's response head strictly. `Ok(None)`: incomplete.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; super::request::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_RESPONSE_HEAD {
                Err("response head too large")
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err("malformed response head"),
    };
    let head = &buf[..len];
    for (i, &c) in head.iter().enumerate() {
        let bad_lf = c == b'\n' && (i == 0 || head[i - 1] != b'\r');
        let bad_cr = c == b'\r' && head.get(i + 1) != Some(&b'\n');
        if bad_lf || bad_cr {
            return Err("bare CR or LF in response head");
        }
    }
    let status = resp.code.ok_or("no status")?;
    let minor = resp.version.ok_or("no version")?;
    if !(100..=999).contains(&status) {
        return Err("bad status");
    }
    let mut cl: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    let mut close = minor == 0;
    let mut said_close = false;
    for f in resp.headers.iter() {
        let v = f.value.trim_ascii();
        if v.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err("control character in a response field");
        }
        if f.name.eq_ignore_ascii_case("content-length") {
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err("malformed Content-Length");
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("Content-Length")?;
            if cl.is_some_and(|o| o != n) {
                return Err("differing Content-Length");
            }
            cl = Some(n);
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err("Transfer-Encoding repeated");
            }
            te = Some(v);
        } else if f.name.eq_ignore_ascii_case("connection") {
            for t in list(v) {
                if t.eq_ignore_ascii_case(b"close") {
                    (close, said_close) = (true, true);
                } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    // close wins, in whatever order the two came (RFC 9112 section 9.3).
                    close = said_close;
                }
            }
        }
    }
    let no_body =
        request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if let Some(te) = te {
        if cl.is_some() {
            return Err("both Content-Length and Transfer-Encoding");
        }
        let codings: Vec<&[u8]> = list(te).collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than chunked");
        }
        if no_body {
            BodyFraming::None
        } else if minor == 0 {
            // Transfer-Encoding in HTTP/1.0 is faulty framing: read until close (RFC 9112 6.1).
            BodyFraming::Close
        } else {
            BodyFraming::Chunked
        }
    } else if no_body {
        BodyFraming::None
    } else {
        match cl {
            Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Close,
        }
    };
    Ok(Some(ResponseHead {
        status,
        len,
        framing,
        content_length: cl,
        reusable: !close && framing != BodyFraming::Close && status != 101,
    }))
}

/// What the client side needs from the rewritten response head.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    pub minor: u8,
    pub keep_alive: bool,
    /// Added as Date when the upstream sent none (RFC 9110 section 6.6.1).
    pub date: &'a str,
}

/// The response head sent to the client. Returns whether the body must be de-chunked (an
/// HTTP/1.0 client) and whether the client connection must close after the body.
pub fn client_response(
    raw: &[u8],
    rh: &ResponseHead,
    c: ClientSide<'_>,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> (bool, bool) {
    let mut headers = [httparse::EMPTY_HEADER; super::request::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let _ = resp.parse(raw);
    let conn = connection_tokens(resp.headers);
    let upgrade = rh.status == 101;
    let dechunk = rh.framing == BodyFraming::Chunked && c.minor == 0;
    let close = !c.keep_alive || rh.framing == BodyFraming::Close || dechunk;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        rh.status,
        resp.reason.unwrap_or("")
    );
    for f in resp.headers.iter() {
        let n = f.name;
        let hop = is_hop(n, &conn) || n.eq_ignore_ascii_case("via");
        // Framing fields are never copied: httpd writes them from the framing it parsed, so
        // no hop-by-hop trick can remove or change them.
        let framing =
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding");
        if framing || (hop && !(upgrade && n.eq_ignore_ascii_case("upgrade"))) {
            continue;
        }
        field(out, n.as_bytes(), f.value);
    }
    out.extend_from_slice(b"Via: ");
    if let Some(prev) = joined(resp.headers, "via") {
        out.extend_from_slice(&prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"1.1 httpd\r\n");
    // A Date the upstream named in Connection was not copied: it needs one too.
    if !resp
        .headers
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("date") && !is_hop(f.name, &conn))
    {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(c.date.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match rh.framing {
        BodyFraming::Chunked if !dechunk => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        BodyFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::None if rh.status != 204 && !(100..200).contains(&rh.status) => {
            if let Some(n) = rh.content_length {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
        }
        _ => {}
    }
    out.extend_from_slice(extra);
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if c.minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (dechunk, close)
}

/// A 1xx interim response, relayed as received minus hop-by-hop fields.
pub fn interim(raw: &[u8], status: u16, out: &mut Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; super::request::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let _ = resp.parse(raw);
    let conn = connection_tokens(resp.headers);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or(""));
    for f in resp.headers.iter() {
        if !is_hop(f.name, &conn) {
            field(out, f.name.as_bytes(), f.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse;

    #[test]
    fn request_rewrite() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: ex.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.0 edge\r\nContent-Length: 3\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n";
        let h = parse(raw).unwrap().unwrap();
        let mut out = Vec::new();
        upstream_request(
            &raw[..h.len],
            &h,
            "127.0.0.1".parse().unwrap(),
            "up",
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("POST /a?b=1 HTTP/1.1\r\nHost: ex.com\r\n"),
            "{s}"
        );
        for gone in ["X-Secret", "Keep-Alive", "TE:", "Connection"] {
            assert!(!s.contains(gone), "{gone} forwarded: {s}");
        }
        assert!(s.contains("X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"));
        assert!(s.contains("X-Forwarded-Proto: http\r\nX-Forwarded-Host: ex.com\r\n"));
        assert!(s.contains("Via: 1.0 edge, 1.1 httpd\r\n"));
        assert_eq!(s.matches("Content-Length: 3\r\n").count(), 1);
        assert!(s.ends_with("Accept: */*\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ex.com\r\nVia: 1.0 edge, 1.1 httpd\r\nContent-Length: 3\r\n\r\n"), "{s}");
    }

    /// Found by the request_head fuzz target (CI): `Connection: Host` took the only Host line
    /// off the request sent upstream. Host is never a connection option.
    #[test]
    fn connection_cannot_remove_host() {
        for raw in [
            &b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection:Host, :\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: host\r\nHost: x\r\nX-A: 1\r\n\r\n",
        ] {
            let h = parse(raw).unwrap().unwrap();
            let mut out = Vec::new();
            upstream_request(raw, &h, "127.0.0.1".parse().unwrap(), "fb", &mut out);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(s.matches("\r\nHost: x\r\n").count(), 1, "{s}");
            assert!(!s.contains("onnection"), "{s}");
        }
    }

    /// An empty Host is passed on as it came, never joined by a second, made-up one (the
    /// differential suite found two Host lines reaching the upstream).
    #[test]
    fn empty_host_passed_on_alone() {
        let rewrite = |raw: &[u8]| {
            let h = parse(raw).unwrap().unwrap();
            let mut out = Vec::new();
            upstream_request(
                &raw[..h.len],
                &h,
                "127.0.0.1".parse().unwrap(),
                "up",
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        let s = rewrite(b"GET /h HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(s.matches("Host:").count(), 1, "{s}");
        assert!(s.contains("\r\nHost: \r\n"), "{s}");
        let s = rewrite(b"GET /h HTTP/1.0\r\n\r\n");
        assert_eq!(s.matches("Host:").count(), 1, "{s}");
        assert!(s.contains("\r\nHost: up\r\n"), "{s}");
    }

    #[test]
    fn response_parsing() {
        let p = |s: &str, head: bool| parse_response(s.as_bytes(), head);
        let r = p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.framing, r.reusable), (BodyFraming::Length(5), true));
        let r = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, BodyFraming::Chunked);
        let r = p("HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((r.framing, r.reusable), (BodyFraming::Close, false));
        let r = p(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, BodyFraming::None);
        let r = p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, BodyFraming::None);
        let r = p("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!r.reusable);
        let r = p(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.reusable);
        assert!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 5", false)
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 5\n\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(p(bad, false).is_err(), "accepted {bad:?}");
        }
    }

    /// Found with the response_head fuzz target's invariants: `close` followed by
    /// `keep-alive` made an HTTP/1.0 upstream connection reusable, and a Date the upstream
    /// named in Connection left the client's response without any Date.
    #[test]
    fn close_wins_and_date_always_sent() {
        for raw in [
            "HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 1\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
        ] {
            let r = parse_response(raw.as_bytes(), false).unwrap().unwrap();
            assert!(!r.reusable, "{raw:?}");
        }
        let raw = b"HTTP/1.1 200 OK\r\nConnection: date\r\nDate: x\r\nContent-Length: 1\r\n\r\n";
        let rh = parse_response(raw, false).unwrap().unwrap();
        let mut out = Vec::new();
        let side = ClientSide {
            minor: 1,
            keep_alive: true,
            date: "D",
        };
        client_response(raw, &rh, side, b"", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\r\nDate: D\r\n") && !s.contains("Date: x"),
            "{s}"
        );
    }

    #[test]
    fn response_rewrite() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-App: yes\r\n\r\n";
        let rh = parse_response(raw, false).unwrap().unwrap();
        let mut out = Vec::new();
        let (dechunk, close) = client_response(
            raw,
            &rh,
            ClientSide {
                minor: 1,
                keep_alive: true,
                date: "D",
            },
            b"",
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(!dechunk && !close);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nX-App: yes\r\nVia: 1.1 httpd\r\nDate: D\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        let (dechunk, close) = client_response(
            raw,
            &rh,
            ClientSide {
                minor: 0,
                keep_alive: true,
                date: "D",
            },
            b"",
            &mut out,
        );
        assert!(dechunk && close);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("Via: 1.1 httpd\r\nDate: D\r\nConnection: close\r\n\r\n")
        );
    }
}
