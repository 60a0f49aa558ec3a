//! Header rewriting for forwarded exchanges, and strict parsing of the upstream's response head.
//! Pure functions over bytes. Each head is parsed once: the request head by
//! `request::parse` (its `Head` carries what the rewrite needs), the response head by
//! [`relay_head`], which writes the client's head from the same parse.

use std::mem::MaybeUninit;
use std::net::IpAddr;

use super::request::{Head, ListField, crlf_only, has_control, list};

/// Largest response head accepted from the upstream.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Header fields that describe one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether field `name` is hop-by-hop: always, or named by the Connection field's `tokens`.
fn is_hop<'t>(name: &[u8], mut tokens: impl Iterator<Item = &'t [u8]>) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || tokens.any(|t| name.eq_ignore_ascii_case(t))
}

/// Appends `name: value\r\n` (value trimmed).
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.trim_ascii());
    out.extend_from_slice(b"\r\n");
}

/// Appends a number in decimal (no formatting machinery on the hot path).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends an IP address as text (IPv4 by hand, the hot case).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Written into 15 bytes on the stack, then copied once.
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    text[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    text[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + o % 10;
                n += 1;
            }
            out.extend_from_slice(&text[..n]);
        }
        IpAddr::V6(v6) => {
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_fmt(out, format_args!("{v6}"));
        }
    }
}

/// Appends the lines of a list-valued field joined with ", ", then ", " when there were any.
fn push_joined<'a>(out: &mut Vec<u8>, lines: impl Iterator<Item = &'a [u8]>) {
    for v in lines {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
}

/// The field lines of a validated request head (CRLF line ends, no obs-fold, `name:value`):
/// (name, value) pairs, after any empty lines and the request line.
fn field_lines(raw_head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let start = raw_head
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .unwrap_or(raw_head.len());
    raw_head[start..]
        .split(|&c| c == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let colon = l.iter().position(|&c| c == b':')?;
            Some((&l[..colon], &l[colon + 1..]))
        })
}

/// X-Forwarded-For/-Proto/-Host, which httpd sets itself: also spelled with underscores, which
/// CGI-style backends (WSGI, PHP) read as the same field, so a client could say "https" or
/// name another client through them.
fn forwarded_field(n: &[u8]) -> bool {
    const NAMES: [&[u8]; 3] = [
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    ];
    NAMES.iter().any(|want| {
        want.len() == n.len()
            && want.iter().zip(n).all(|(&w, &c)| {
                let c = if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                };
                w == c
            })
    })
}

/// The request head sent upstream: method and target exactly as received, HTTP/1.1, the
/// client's headers minus hop-by-hop ones, one normalised Content-Length or chunked framing,
/// X-Forwarded-For/-Proto/-Host and Via. Built from `h` (parsed once) and one walk over the
/// validated field lines of `raw_head` to copy them.
pub fn upstream_request(
    raw_head: &[u8],
    h: &Head<'_>,
    client: IpAddr,
    https: bool,
    fallback_host: &str,
    out: &mut Vec<u8>,
) {
    let conn = || h.lines(ListField::Connection).flat_map(list);
    out.extend_from_slice(h.method_bytes);
    out.push(b' ');
    out.extend_from_slice(h.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Host: the absolute-form target's authority wins (RFC 9112 3.2.2); an HTTP/1.0 request
    // without Host gets one, as HTTP/1.1 requires it. An empty Host is passed on as it came.
    let authority = h.parsed.authority;
    match authority {
        Some(a) => field(out, b"Host", a),
        None if !h.host_line => field(out, b"Host", fallback_host.as_bytes()),
        None => {}
    }
    for (n, v) in field_lines(raw_head) {
        // Host is the absolute-form target's authority when there is one; it is never a
        // connection option (a request must carry it, RFC 9112 section 3.2), whatever a
        // Connection line names.
        let host = n.eq_ignore_ascii_case(b"host");
        if (host && authority.is_some())
            || (!host && is_hop(n, conn()))
            || n.eq_ignore_ascii_case(b"content-length")
            || forwarded_field(n)
            || n.eq_ignore_ascii_case(b"via")
        {
            continue;
        }
        field(out, n, v);
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    push_joined(out, h.lines(ListField::ForwardedFor));
    push_ip(out, client);
    out.extend_from_slice(if https {
        &b"\r\nX-Forwarded-Proto: https\r\n"[..]
    } else {
        b"\r\nX-Forwarded-Proto: http\r\n"
    });
    if let Some(host) = authority.or(h.host) {
        field(out, b"X-Forwarded-Host", host);
    }
    out.extend_from_slice(b"Via: ");
    push_joined(out, h.lines(ListField::Via));
    out.extend_from_slice(if h.minor == 0 {
        b"1.0 httpd\r\n"
    } else {
        b"1.1 httpd\r\n"
    });
    if h.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else if let Some(cl) = h.content_length {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, cl);
        out.extend_from_slice(b"\r\n");
    }
    if h.upgrade && h.upgrade_protocols.is_some() {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        let mut first = true;
        for v in h.lines(ListField::Upgrade) {
            if !first {
                out.extend_from_slice(b", ");
            }
            first = false;
            out.extend_from_slice(v);
        }
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

/// The Connection field lines of a response, gathered once (usually none or one).
struct ConnectionLines<'b> {
    first: Option<&'b [u8]>,
    more: Vec<&'b [u8]>,
}

impl<'b> ConnectionLines<'b> {
    fn of(headers: &[httparse::Header<'b>]) -> Self {
        let mut c = ConnectionLines {
            first: None,
            more: Vec::new(),
        };
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        {
            match c.first {
                None => c.first = Some(h.value),
                Some(_) => c.more.push(h.value),
            }
        }
        c
    }

    fn tokens(&self) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.first
            .into_iter()
            .chain(self.more.iter().copied())
            .flat_map(list)
    }
}

type Fields<'b> = [MaybeUninit<httparse::Header<'b>>; super::request::MAX_HEADERS];

fn no_fields<'b>() -> Fields<'b> {
    [const { MaybeUninit::uninit() }; super::request::MAX_HEADERS]
}

/// Parses the upstream's response head strictly into `resp`. `Ok(None)`: incomplete.
fn parse_into<'h, 'b>(
    resp: &mut httparse::Response<'h, 'b>,
    fields: &'h mut Fields<'b>,
    buf: &'b [u8],
    request_was_head: bool,
) -> Result<Option<ResponseHead>, &'static str> {
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(resp, buf, fields)
    {
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
    // The same limit however the head arrived (whole in one read, or in pieces).
    if len > MAX_RESPONSE_HEAD {
        return Err("response head too large");
    }
    if !crlf_only(&buf[..len]) {
        return Err("bare CR or LF in response head");
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
        if has_control(v) {
            return Err("control character in a response field");
        }
        if f.name.eq_ignore_ascii_case("content-length") {
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err("malformed Content-Length");
            }
            let n = v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
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
    let framing = response_framing(status, minor, request_was_head, cl, te)?;
    Ok(Some(ResponseHead {
        status,
        len,
        framing,
        content_length: cl,
        reusable: !close && framing != BodyFraming::Close && status != 101,
    }))
}

/// The body framing of a response (RFC 9112 section 6.3), or why it is refused.
fn response_framing(
    status: u16,
    minor: u8,
    request_was_head: bool,
    cl: Option<u64>,
    te: Option<&[u8]>,
) -> Result<BodyFraming, &'static str> {
    let no_body =
        request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
    if let Some(te) = te {
        if cl.is_some() {
            return Err("both Content-Length and Transfer-Encoding");
        }
        let mut codings = list(te);
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked {
            return Err("Transfer-Encoding other than chunked");
        }
        return Ok(if no_body {
            BodyFraming::None
        } else if minor == 0 {
            // Transfer-Encoding in HTTP/1.0 is faulty framing: read until close (RFC 9112 6.1).
            BodyFraming::Close
        } else {
            BodyFraming::Chunked
        });
    }
    Ok(if no_body {
        BodyFraming::None
    } else {
        match cl {
            Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Close,
        }
    })
}

/// Parses the upstream's response head strictly. `Ok(None)`: incomplete.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut fields = no_fields();
    let mut resp = httparse::Response::new(&mut []);
    parse_into(&mut resp, &mut fields, buf, request_was_head)
}

/// What the client side needs from the rewritten response head.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    pub minor: u8,
    pub keep_alive: bool,
    /// Added as Date when the upstream sent none (RFC 9110 section 6.6.1).
    pub date: &'a str,
}

/// A response head relayed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub head: ResponseHead,
    /// The body must be de-chunked (an HTTP/1.0 client).
    pub dechunk: bool,
    /// The client connection closes after the body.
    pub close: bool,
}

/// Parses the response head at the front of `buf` (once) and appends what the client gets
/// for it to `out`: an interim 1xx as received minus hop-by-hop fields (nothing for an
/// HTTP/1.0 client), or the rewritten final head (101 included). `Ok(None)`: incomplete.
pub fn relay_head(
    buf: &[u8],
    request_was_head: bool,
    c: ClientSide<'_>,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<Relayed>, &'static str> {
    let mut fields = no_fields();
    let mut resp = httparse::Response::new(&mut []);
    let Some(rh) = parse_into(&mut resp, &mut fields, buf, request_was_head)? else {
        return Ok(None);
    };
    if (100..200).contains(&rh.status) && rh.status != 101 {
        if c.minor == 1 {
            write_interim(&resp, rh.status, out);
        }
        return Ok(Some(Relayed {
            head: rh,
            dechunk: false,
            close: false,
        }));
    }
    let c = ClientSide {
        keep_alive: c.keep_alive && rh.status != 101,
        ..c
    };
    let (dechunk, close) = write_client_head(&resp, &rh, c, extra, out);
    Ok(Some(Relayed {
        head: rh,
        dechunk,
        close,
    }))
}

/// The response head sent to the client for `raw` (parsed as `rh`). Returns whether the body
/// must be de-chunked (an HTTP/1.0 client) and whether the client connection must close after
/// the body.
pub fn client_response(
    raw: &[u8],
    rh: &ResponseHead,
    c: ClientSide<'_>,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> (bool, bool) {
    reparsed(raw, |resp| write_client_head(resp, rh, c, extra, out))
}

/// Runs `f` on a response head parsed and validated already (the entry points kept for the
/// tests and fuzz targets; the serving path parses once, in [`relay_head`]).
fn reparsed<R>(raw: &[u8], f: impl FnOnce(&httparse::Response<'_, '_>) -> R) -> R {
    let mut fields = no_fields();
    let mut resp = httparse::Response::new(&mut []);
    let _ = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        raw,
        &mut fields,
    );
    f(&resp)
}

/// `HTTP/1.1 STATUS REASON\r\n`.
fn status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_client_head(
    resp: &httparse::Response<'_, '_>,
    rh: &ResponseHead,
    c: ClientSide<'_>,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> (bool, bool) {
    let lines = ConnectionLines::of(resp.headers);
    let conn = || lines.tokens();
    let upgrade = rh.status == 101;
    let dechunk = rh.framing == BodyFraming::Chunked && c.minor == 0;
    let close = !c.keep_alive || rh.framing == BodyFraming::Close || dechunk;
    status_line(out, rh.status, resp.reason);
    let mut date = false;
    for f in resp.headers.iter() {
        let n = f.name.as_bytes();
        let hop = is_hop(n, conn()) || n.eq_ignore_ascii_case(b"via");
        // Framing fields are never copied: httpd writes them from the framing it parsed, so
        // no hop-by-hop trick can remove or change them.
        let framing = n.eq_ignore_ascii_case(b"content-length")
            || n.eq_ignore_ascii_case(b"transfer-encoding");
        if framing || (hop && !(upgrade && n.eq_ignore_ascii_case(b"upgrade"))) {
            continue;
        }
        // A Date the upstream named in Connection is not copied: it needs one too.
        date |= n.eq_ignore_ascii_case(b"date");
        field(out, n, f.value);
    }
    out.extend_from_slice(b"Via: ");
    push_joined(
        out,
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("via"))
            .map(|h| h.value.trim_ascii()),
    );
    out.extend_from_slice(b"1.1 httpd\r\n");
    if !date {
        field(out, b"Date", c.date.as_bytes());
    }
    let length = match rh.framing {
        BodyFraming::Chunked if !dechunk => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            None
        }
        BodyFraming::Length(n) => Some(n),
        BodyFraming::None if rh.status != 204 && !(100..200).contains(&rh.status) => {
            rh.content_length
        }
        _ => None,
    };
    if let Some(n) = length {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, n);
        out.extend_from_slice(b"\r\n");
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
    reparsed(raw, |resp| write_interim(resp, status, out));
}

fn write_interim(resp: &httparse::Response<'_, '_>, status: u16, out: &mut Vec<u8>) {
    let lines = ConnectionLines::of(resp.headers);
    let conn = || lines.tokens();
    status_line(out, status, resp.reason);
    for f in resp.headers.iter() {
        if !is_hop(f.name.as_bytes(), conn()) {
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
    fn response_head_limit_whatever_the_pieces() {
        let head = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(MAX_RESPONSE_HEAD)
        );
        // Whole in one read, or its first half first: refused either way.
        assert_eq!(
            parse_response(head.as_bytes(), false),
            Err("response head too large")
        );
        let half = &head.as_bytes()[..head.len() / 2];
        assert!(matches!(parse_response(half, false), Ok(None)));
        let most = &head.as_bytes()[..head.len() - 4];
        assert_eq!(parse_response(most, false), Err("response head too large"));
    }

    #[test]
    fn ip_text_is_std_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "192.168.1.254",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let mut out = Vec::new();
            push_ip(&mut out, ip.parse().expect("an address"));
            assert_eq!(out, ip.as_bytes());
        }
    }

    #[test]
    fn request_rewrite() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: ex.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.0 edge\r\nContent-Length: 3\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n";
        let h = parse(raw).unwrap().unwrap();
        let mut out = Vec::new();
        upstream_request(
            &raw[..h.len],
            &h,
            "127.0.0.1".parse().unwrap(),
            false,
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

    /// A client's own X-Forwarded-* lines never reach the upstream, in any spelling CGI-style
    /// backends read as the same field.
    #[test]
    fn forwarded_fields_cannot_be_spoofed() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_Proto: https\r\nx-forwarded_for: 6.6.6.6\r\nX-FORWARDED-HOST: evil\r\n\r\n";
        let h = parse(raw).unwrap().unwrap();
        let mut out = Vec::new();
        upstream_request(raw, &h, "127.0.0.1".parse().unwrap(), false, "fb", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            !s.contains("https") && !s.contains("6.6.6.6") && !s.contains("evil"),
            "{s}"
        );
        assert!(s.contains("X-Forwarded-Proto: http\r\n"), "{s}");
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
            upstream_request(raw, &h, "127.0.0.1".parse().unwrap(), false, "fb", &mut out);
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
                false,
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
