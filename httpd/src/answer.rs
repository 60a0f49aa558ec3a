//! Answering a request from its host's webroot: routing by path, negotiation, conditionals,
//! ranges, redirects and error pages. Output goes to the connection's queue; nothing here
//! touches a socket or opens a file.

use std::io::Write;
use std::sync::Arc;

use httpd_common::webroot::{Kind, Object, Rep, Webroot, http_date};

use crate::http::conditional::{self, Outcome};
use crate::http::negotiate;
use crate::http::range::{self, Decision};
use crate::http::request::{Framing, Head, Method};
use crate::http::response::{error_body, prefix};
use crate::http::target::{encode_path, normalize_path};
use crate::out::OutQueue;
use crate::vhosts::{Host, HostTable};

/// What the connection needs to know about the answer.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub status: u16,
    /// Body bytes sent (for the access log).
    pub bytes: u64,
    /// Close the connection after this response.
    pub close: bool,
}

/// Per-worker context for answering.
pub struct Ctx<'a> {
    pub date: &'a str,
    pub path_buf: &'a mut Vec<u8>,
    /// An upstream is configured: what is not a static hit goes there.
    pub forward: bool,
    /// The request came over TLS.
    pub tls: bool,
    /// The port of HTTPS redirects (None: no TLS listener, no redirect).
    pub https_port: Option<u16>,
}

/// Answers one parsed request. `host` is the vhost chosen for it (None: no such host and no
/// `__default__`). Returns None when the request is not a static hit and an upstream is
/// configured: the caller forwards it.
pub fn answer(
    h: &Head<'_>,
    host: Option<&Arc<Host>>,
    ctx: &mut Ctx<'_>,
    out: &mut OutQueue,
) -> Option<Answered> {
    let r = Responder {
        h,
        host,
        keep: keep_alive(h),
        date: ctx.date,
        tls: ctx.tls,
    };
    if let Some(a) = https_redirect(&r, ctx, out) {
        return Some(a);
    }
    match static_answer(&r, ctx, out) {
        Some(a) => Some(a),
        None if ctx.forward => None,
        // No upstream: what a static server answers.
        None if h.method() == Method::Other => Some(r.error(out, 405, "Allow: GET, HEAD\r\n")),
        None => Some(r.error(out, 404, "")),
    }
}

/// Whether the connection stays open after answering without reading the body: not for
/// chunked bodies, nor for bodies announced with Expect: 100-continue (the client may never
/// send them).
fn keep_alive(h: &Head<'_>) -> bool {
    match h.framing() {
        Framing::Chunked => false,
        Framing::Length(_) if h.expect_continue => false,
        _ => h.keep_alive,
    }
}

/// A plain HTTP request for a host that redirects to HTTPS: 308 to the same host, path and
/// query on the HTTPS port (every method: 308 keeps the method and body).
fn https_redirect(r: &Responder<'_, '_>, ctx: &Ctx<'_>, out: &mut OutQueue) -> Option<Answered> {
    let host = r.host?;
    if ctx.tls || !host.settings.https_redirect {
        return None;
    }
    let port = ctx.https_port?;
    let h = r.h;
    let name = h
        .parsed
        .host
        .or(h.host.map(crate::http::target::strip_port))
        .filter(|n| !n.is_empty())
        .map_or_else(
            || host.name.clone(),
            |n| String::from_utf8_lossy(n).into_owned(),
        );
    let mut loc = format!("Location: https://{name}");
    if port != 443 {
        loc.push(':');
        loc.push_str(&port.to_string());
    }
    // The path and query as received (an absolute-form target's, after its authority).
    let path = match h.target.first() {
        Some(b'/') => h.target,
        _ => h.parsed.raw_path,
    };
    if path.first() != Some(&b'/') {
        loc.push('/');
    }
    loc.push_str(&String::from_utf8_lossy(path));
    if !path.contains(&b'?')
        && let Some(q) = h.parsed.query
    {
        loc.push('?');
        loc.push_str(&String::from_utf8_lossy(q));
    }
    loc.push_str("\r\n");
    Some(r.error(out, 308, &loc))
}

/// The answer from the webroot, or None for a miss (no host, no object, other methods).
fn static_answer(r: &Responder<'_, '_>, ctx: &mut Ctx<'_>, out: &mut OutQueue) -> Option<Answered> {
    let h = r.h;
    let target = &h.parsed;
    if target.asterisk {
        return None;
    }
    let host = r.host?;
    if normalize_path(target.raw_path, ctx.path_buf).is_err() {
        return Some(r.error(out, 400, ""));
    }
    let method = h.method();
    if method == Method::Other {
        return None;
    }
    if ctx.forward
        && host
            .settings
            .upstream_prefixes
            .iter()
            .any(|p| ctx.path_buf.starts_with(p))
    {
        return None;
    }
    // A mount point serves its prefix from another webroot, the prefix removed.
    let (root, lookup_path) = match (host.settings.mount(ctx.path_buf), &host.root) {
        (Some((m, rest)), _) => (&m.root, rest),
        (None, Some(root)) => (root, &ctx.path_buf[..]),
        // Its webroot is being written in place: nothing to answer from until it is valid.
        (None, None) => return Some(r.error(out, 503, "Retry-After: 1\r\n")),
    };
    let obj = root.lookup(lookup_path)?;
    if obj.kind == Kind::Redirect {
        let mut loc = encode_path(ctx.path_buf);
        loc.push('/');
        if let Some(q) = target.query {
            loc.push('?');
            loc.push_str(&String::from_utf8_lossy(q));
        }
        return Some(r.error(out, 301, &format!("Location: {loc}\r\n")));
    }
    let rep = negotiate::choose(h, obj)?;
    match conditional::evaluate(h, &rep.etag, obj.mtime) {
        Outcome::Failed => return Some(r.error(out, 412, "")),
        Outcome::NotModified => return Some(r.not_modified(out, obj, rep)),
        Outcome::Proceed => {}
    }
    if method == Method::Get
        && let Some(range) = h.range
        && h.if_range
            .is_none_or(|v| conditional::if_range_holds(v, &rep.etag, obj.mtime))
    {
        match range::decide(range, rep.body_len) {
            Decision::Full => {}
            Decision::Partial { start, end } => {
                return Some(r.partial(out, root, obj, rep, start, end));
            }
            Decision::Unsatisfiable => {
                let cr = format!("Content-Range: bytes */{}\r\n", rep.body_len);
                return Some(r.error(out, 416, &cr));
            }
        }
    }
    // The hit: dynamic prefix, then header block and body as one region of the file.
    let mut head = Vec::with_capacity(128);
    prefix(&mut head, 200, r.date, r.keep, h.minor);
    head.extend_from_slice(host.settings.headers_for(ctx.tls));
    out.push_bytes(head);
    let body = if method == Method::Head {
        0
    } else {
        rep.body_len
    };
    out.push_region(root, rep.hdr_off, u64::from(rep.hdr_len) + body);
    Some(Answered {
        status: 200,
        bytes: body,
        close: !r.keep,
    })
}

/// Builds responses other than the plain hit.
struct Responder<'a, 'h> {
    h: &'a Head<'h>,
    host: Option<&'a Arc<Host>>,
    keep: bool,
    date: &'a str,
    tls: bool,
}

impl Responder<'_, '_> {
    /// The host's extra headers (configuration file).
    fn extra(&self, head: &mut Vec<u8>) {
        if let Some(h) = self.host {
            head.extend_from_slice(h.settings.headers_for(self.tls));
        }
    }

    fn validators(&self, head: &mut Vec<u8>, obj: &Object, rep: &Rep) {
        let _ = write!(
            head,
            "ETag: {}\r\nLast-Modified: {}\r\n",
            rep.etag,
            http_date(obj.mtime)
        );
        if let Some(cc) = &obj.cache_control {
            let _ = write!(head, "Cache-Control: {cc}\r\n");
        }
        if obj.has_variants() {
            head.extend_from_slice(b"Vary: Accept-Encoding\r\n");
        }
    }

    fn not_modified(&self, out: &mut OutQueue, obj: &Object, rep: &Rep) -> Answered {
        let mut head = Vec::with_capacity(256);
        prefix(&mut head, 304, self.date, self.keep, self.h.minor);
        self.extra(&mut head);
        self.validators(&mut head, obj, rep);
        head.extend_from_slice(b"\r\n");
        out.push_bytes(head);
        Answered {
            status: 304,
            bytes: 0,
            close: !self.keep,
        }
    }

    fn partial(
        &self,
        out: &mut OutQueue,
        root: &Arc<Webroot>,
        obj: &Object,
        rep: &Rep,
        start: u64,
        end: u64,
    ) -> Answered {
        let len = end - start + 1;
        let mut head = Vec::with_capacity(320);
        prefix(&mut head, 206, self.date, self.keep, self.h.minor);
        self.extra(&mut head);
        let _ = write!(
            head,
            "Content-Type: {}\r\nContent-Length: {len}\r\nContent-Range: bytes {start}-{end}/{}\r\nAccept-Ranges: bytes\r\n",
            obj.mime, rep.body_len
        );
        if rep.encoding != httpd_common::webroot::Encoding::Identity {
            let _ = write!(head, "Content-Encoding: {}\r\n", rep.encoding.token());
        }
        self.validators(&mut head, obj, rep);
        head.extend_from_slice(b"\r\n");
        out.push_bytes(head);
        out.push_region(root, rep.body_off() + start, len);
        Answered {
            status: 206,
            bytes: len,
            close: !self.keep,
        }
    }

    /// A response with a small in-memory body.
    fn simple(&self, out: &mut OutQueue, status: u16, extra: &str, body: &[u8]) -> Answered {
        let mut head = Vec::with_capacity(256 + body.len());
        prefix(&mut head, status, self.date, self.keep, self.h.minor);
        self.extra(&mut head);
        head.extend_from_slice(extra.as_bytes());
        let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
        let send_body = self.h.method() != Method::Head;
        if send_body {
            head.extend_from_slice(body);
        }
        out.push_bytes(head);
        Answered {
            status,
            bytes: if send_body { body.len() as u64 } else { 0 },
            close: !self.keep,
        }
    }

    /// An error (or redirect) page: the host's `/.errors/<status>.html` when it has one.
    fn error(&self, out: &mut OutQueue, status: u16, extra: &str) -> Answered {
        let custom = self.host.and_then(|host| {
            let path = format!("/.errors/{status}.html");
            let root = host.root.as_ref()?;
            let obj = root.lookup(path.as_bytes())?;
            Some((root.body(obj.identity()?).ok()?, obj.mime.clone()))
        });
        let (body, mime): (std::borrow::Cow<'_, [u8]>, Box<str>) = match custom {
            Some((b, m)) => (b.into(), m),
            None => (
                error_body(status).into_bytes().into(),
                "text/html; charset=utf-8".into(),
            ),
        };
        let extra = format!("{extra}Content-Type: {mime}\r\n");
        self.simple(out, status, &extra, &body)
    }
}

/// An error answered with the built-in page and no host context: gateway errors (502, 504),
/// a bad forwarded body (400), an unparsable head.
pub fn gateway_error(
    status: u16,
    date: &str,
    keep: bool,
    minor: u8,
    out: &mut OutQueue,
) -> Answered {
    let body = error_body(status);
    let mut head = Vec::with_capacity(256 + body.len());
    prefix(&mut head, status, date, keep, minor);
    let _ = write!(
        head,
        "Content-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    out.push_bytes(head);
    Answered {
        status,
        bytes: body.len() as u64,
        close: !keep,
    }
}

/// The response for a request head that could not be parsed: always closes.
pub fn bad_head(status: u16, date: &str, out: &mut OutQueue) -> Answered {
    gateway_error(status, date, false, 1, out)
}

/// Picks the host for a request: the absolute-form target's host wins over Host.
/// Only hosts that answer on the connection's listener `l` are candidates.
pub fn route<'t>(
    h: &Head<'_>,
    table: &'t HostTable,
    l: Option<&crate::listen::ListenerInfo>,
) -> Option<&'t Arc<Host>> {
    let from_target = h.parsed.host;
    let host = from_target.or(h.host.map(crate::http::target::strip_port));
    table.find_on(host, l)
}
