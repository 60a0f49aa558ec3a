//! Forwarding to the upstream: one exchange at a time per client connection (the request up,
//! the response back, both streamed with backpressure), a tunnel after 101, a pool of
//! upstream connections per worker.
//!
//! - [`exchange`]: the driver of one exchange: reads and writes the sockets and hands the bytes
//!   to the sans-io codec (`http::exchange`), which decides framing, 1xx, pooling and closing.
//! - [`tunnel`]: an upgraded connection, in user space, or spliced in the kernel ([`splice`]).
//! - [`pool`]: idle upstream connections and the poll tokens of upstream sockets.
//! - [`error`]: why an exchange failed, logged once and counted by class.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;

use crate::vhosts::HostMeta;

pub mod error;
pub mod exchange;
pub mod pool;
pub mod splice;
pub mod tunnel;
pub mod upsock;

pub use error::{ErrorClass, ProxyError, Side};
pub(crate) use exchange::recycle;
pub use exchange::{Exchange, Progress, Request, Slot, Slots, UpCtx};
pub use pool::{Pool, UP_TOKEN_BASE, UpEvent};
pub use tunnel::{SpliceHealth, Tunnel, TunnelStep};
pub use upsock::UpReady;

/// Bytes buffered towards the upstream before we stop reading the client.
pub(crate) const UP_BUF: usize = 64 * 1024;
/// Read size from the upstream; also the most response bytes buffered unparsed.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Stop reading the upstream while this much output waits for the client.
pub(crate) const CLIENT_HIGH: u64 = 256 * 1024;

/// Fields of the request kept for the access log (in one buffer: one allocation), with the
/// host that logs it.
pub struct LogFields {
    buf: Vec<u8>,
    /// Ends of method, target, referer and user agent in `buf`.
    ends: [u32; 4],
    has_referer: bool,
    has_user_agent: bool,
    pub minor: u8,
    /// The host the request was routed to (its log and counters), even if it is removed
    /// meanwhile.
    pub host: Option<Arc<HostMeta>>,
    /// TLS version and cipher suite of the client connection (None: plain HTTP).
    pub tls: Option<(&'static str, &'static str)>,
}

/// Longest logged field kept for a forwarded request.
const LOG_FIELD: usize = 1024;

impl LogFields {
    /// The fields, kept in `buf` (emptied first; a pooled buffer saves an allocation).
    pub fn new(
        mut buf: Vec<u8>,
        method: &[u8],
        target: &[u8],
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
        minor: u8,
        host: Option<Arc<HostMeta>>,
    ) -> LogFields {
        let cut = |v: &[u8]| v.len().min(LOG_FIELD);
        let parts = [
            method,
            target,
            referer.unwrap_or_default(),
            user_agent.unwrap_or_default(),
        ];
        buf.clear();
        buf.reserve(parts.iter().map(|p| cut(p)).sum());
        let mut ends = [0u32; 4];
        for (i, p) in parts.iter().enumerate() {
            buf.extend_from_slice(&p[..cut(p)]);
            ends[i] = buf.len() as u32;
        }
        LogFields {
            buf,
            ends,
            has_referer: referer.is_some(),
            has_user_agent: user_agent.is_some(),
            minor,
            host,
            tls: None,
        }
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    pub fn method(&self) -> &[u8] {
        self.part(0)
    }

    pub fn target(&self) -> &[u8] {
        self.part(1)
    }

    pub fn referer(&self) -> Option<&[u8]> {
        self.has_referer.then(|| self.part(2))
    }

    pub fn user_agent(&self) -> Option<&[u8]> {
        self.has_user_agent.then(|| self.part(3))
    }

    /// The buffer, for reuse.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    pub fn host_name(&self) -> &str {
        self.host.as_ref().map_or("-", |h| h.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_in_one_buffer() {
        let long = vec![b'a'; 3000];
        let l = LogFields::new(Vec::new(), b"GET", &long, None, Some(b"curl"), 1, None);
        assert_eq!(l.method(), b"GET");
        assert_eq!(l.target().len(), LOG_FIELD);
        assert_eq!(l.referer(), None);
        assert_eq!(l.user_agent(), Some(&b"curl"[..]));
        let l = LogFields::new(vec![1, 2, 3], b"POST", b"/", Some(b""), None, 0, None);
        assert_eq!((l.method(), l.target()), (&b"POST"[..], &b"/"[..]));
        assert_eq!((l.referer(), l.user_agent()), (Some(&b""[..]), None));
    }
}

/// Upstream settings.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub timeout: Duration,
    /// Bind upstream sockets to this address (the eBPF fast path matches it).
    pub source: Option<std::net::Ipv4Addr>,
    /// This is a real upstream (`--upstream`); false: only hosts with their own forward.
    pub enabled: bool,
}

impl Upstream {
    /// A non-blocking connection to the upstream, from the fast-path source when set.
    pub(crate) fn connect(&self) -> io::Result<TcpStream> {
        let s = match self.source {
            None => TcpStream::connect(self.addr)?,
            Some(src) => {
                let sock = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                sock.set_nonblocking(true)?;
                sock.set_cloexec(true)?;
                sock.bind(&SocketAddr::new(src.into(), 0).into())?;
                match sock.connect(&self.addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                TcpStream::from_std(sock.into())
            }
        };
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}
