//! Why an exchange failed: which side, what happened, and how it is answered, logged and
//! counted. Each failed exchange is logged once, when it ends, with one of these.

use std::io;
use std::time::Duration;

use crate::http::exchange::CodecError;
pub use crate::stats::ErrorClass;

/// The side of an exchange a failure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// A forwarded exchange that could not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No connection to the upstream (refused, unreachable, out of descriptors).
    #[error("cannot connect to the upstream: {0}")]
    Connect(io::ErrorKind),
    /// The request was sent and no response head came in time.
    #[error("no response head from the upstream within {0:?}")]
    Timeout(Duration),
    /// The upstream connection failed (a reset, say) on a write or a read.
    #[error("upstream connection failed: {0}")]
    UpstreamIo(io::ErrorKind),
    /// What the upstream or the client sent broke the protocol, or the upstream closed early.
    #[error(transparent)]
    Protocol(#[from] CodecError),
}

impl ProxyError {
    /// An I/O error on the upstream socket: a refused or unreachable connect shows up on the
    /// first write or read of a non-blocking socket.
    pub fn upstream_io(e: &io::Error) -> ProxyError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable => ProxyError::Connect(e.kind()),
            k => ProxyError::UpstreamIo(k),
        }
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::Protocol(CodecError::RequestChunk(_)) => Side::Client,
            _ => Side::Upstream,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            ProxyError::Connect(_) => ErrorClass::Connect,
            ProxyError::Timeout(_) => ErrorClass::Timeout,
            ProxyError::UpstreamIo(_) => ErrorClass::UpstreamReset,
            ProxyError::Protocol(c) => match c {
                CodecError::RequestChunk(_) => ErrorClass::BadRequestBody,
                CodecError::ResponseHead(_) | CodecError::UnaskedUpgrade => {
                    ErrorClass::BadResponseHead
                }
                CodecError::ResponseChunk(_) => ErrorClass::BadResponseBody,
                CodecError::ClosedBeforeHead | CodecError::ClosedInBody => {
                    ErrorClass::UpstreamClosedEarly
                }
            },
        }
    }

    /// The status answered when nothing of the response was sent yet.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::Timeout(_) => 504,
            ProxyError::Protocol(CodecError::RequestChunk(_)) => 400,
            _ => 502,
        }
    }

    /// Logs it once, at the level its side deserves: the upstream's failures are the
    /// operator's business (warn), a client's bad body is the client's (info).
    pub fn log(&self, method: &[u8], target: &[u8], host: &str) {
        let method = String::from_utf8_lossy(method);
        let target = String::from_utf8_lossy(target);
        match self.side() {
            Side::Upstream => tracing::warn!(
                "forwarded {method} {target} (host {host}): {self} [{}]",
                self.class().name()
            ),
            Side::Client => tracing::info!(
                "forwarded {method} {target} (host {host}): {self} [{}]",
                self.class().name()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::chunked::ChunkError;

    #[test]
    fn classes_sides_statuses() {
        let cases = [
            (
                ProxyError::Connect(io::ErrorKind::ConnectionRefused),
                "connect",
                502,
            ),
            (ProxyError::Timeout(Duration::from_secs(1)), "timeout", 504),
            (
                ProxyError::UpstreamIo(io::ErrorKind::ConnectionReset),
                "upstream_reset",
                502,
            ),
            (
                CodecError::ResponseHead("x").into(),
                "bad_response_head",
                502,
            ),
            (CodecError::UnaskedUpgrade.into(), "bad_response_head", 502),
            (
                CodecError::ResponseChunk(ChunkError::Size).into(),
                "bad_response_body",
                502,
            ),
            (
                CodecError::ClosedInBody.into(),
                "upstream_closed_early",
                502,
            ),
            (
                CodecError::RequestChunk(ChunkError::Size).into(),
                "bad_request_body",
                400,
            ),
        ];
        for (e, class, status) in cases {
            assert_eq!((e.class().name(), e.status()), (class, status), "{e}");
            let side = if class == "bad_request_body" {
                Side::Client
            } else {
                Side::Upstream
            };
            assert_eq!(e.side(), side);
        }
        for (i, c) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
