//! The protocol of one forwarded exchange, without I/O: client bytes in, the bytes to forward
//! upstream out; upstream bytes in, the bytes for the client out; and the decisions (request
//! and response body framing, 1xx, de-chunking for HTTP/1.0 clients, the upgrade to a tunnel,
//! whether the upstream connection may be pooled and the client connection kept). The driver
//! (`forward::exchange`) does the reads and writes and hands the bytes over.
//!
//! ```text
//!  response:  Head --1xx--> Head
//!              |  \--101 (asked)--> Tunnel          (the exchange becomes a tunnel)
//!              |--final, no body--> Done
//!              \--final--> Body(Length | Chunked | Close) --end--> Done
//!  request:   Length(n) | Chunked --all forwarded--> Done;  None --> Done;  at 101 --> Tunnel
//! ```

use super::chunked::{ChunkError, Decoder};
use super::proxy::{self, BodyFraming, ClientSide};
use super::request::Framing;

/// What went wrong, in protocol terms (the driver adds the I/O failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The client's chunked request body is malformed.
    #[error("bad chunked request body: {0}")]
    RequestChunk(ChunkError),
    /// The upstream's response head is malformed (or too large).
    #[error("bad response head: {0}")]
    ResponseHead(&'static str),
    /// The upstream switched protocols though the client did not ask to.
    #[error("101 Switching Protocols without an Upgrade request")]
    UnaskedUpgrade,
    /// The upstream's chunked response body is malformed.
    #[error("bad chunked response body: {0}")]
    ResponseChunk(ChunkError),
    /// The upstream closed before its response head was complete.
    #[error("upstream closed before the response head")]
    ClosedBeforeHead,
    /// The upstream closed inside a framed response body.
    #[error("upstream closed inside the response body")]
    ClosedInBody,
}

/// What the exchange knows of its client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRequest {
    pub framing: Framing,
    /// 0 for HTTP/1.0.
    pub minor: u8,
    pub keep_alive: bool,
    pub head: bool,
    pub upgrade: bool,
}

#[derive(Debug)]
enum ReqBody {
    Length(u64),
    Chunked(Decoder),
    /// After 101: everything the client sends.
    Tunnel,
    Done,
}

#[derive(Debug)]
enum RespBody {
    Length(u64),
    Chunked {
        dec: Decoder,
        dechunk: bool,
    },
    /// Until the upstream closes.
    Close,
}

/// Where the response stands.
#[derive(Debug)]
enum Resp {
    Head,
    Body(RespBody),
    Tunnel,
    Done,
}

/// The sans-io state of one exchange.
#[derive(Debug)]
pub struct Codec {
    client: ClientRequest,
    req: ReqBody,
    resp: Resp,
    /// The final status (101 for a tunnel), 0 before it.
    status: u16,
    /// Response body bytes for the client so far (tunnel bytes from the upstream too).
    bytes: u64,
    /// The upstream keeps its connection open after this response.
    reusable: bool,
    /// The client connection closes after this response.
    close_client: bool,
}

/// The bytes for the client produced by one call: `head` bytes (status lines) and `body` bytes,
/// both appended to the caller's buffer in order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Upstream bytes used.
    pub consumed: usize,
    /// Bytes appended to the client buffer.
    pub appended: usize,
}

impl Codec {
    pub fn new(client: ClientRequest) -> Codec {
        Codec {
            req: match client.framing {
                Framing::None => ReqBody::Done,
                Framing::Length(n) => ReqBody::Length(n),
                Framing::Chunked => ReqBody::Chunked(Decoder::default()),
            },
            client,
            resp: Resp::Head,
            status: 0,
            bytes: 0,
            reusable: false,
            close_client: false,
        }
    }

    /// How many bytes at the front of `input` (the client's unread bytes, at most `room` of
    /// them) belong to the request body; the driver forwards them unchanged, so the upstream
    /// sees exactly the framing checked here.
    pub fn request_body(&mut self, input: &[u8], room: usize) -> Result<usize, CodecError> {
        let take = input.len().min(room);
        let n = match &mut self.req {
            ReqBody::Length(rem) => {
                let n = (take as u64).min(*rem) as usize;
                *rem -= n as u64;
                n
            }
            ReqBody::Chunked(dec) => dec
                .feed(&input[..take], None)
                .map_err(CodecError::RequestChunk)?,
            ReqBody::Tunnel => take,
            ReqBody::Done => 0,
        };
        let finished = match &self.req {
            ReqBody::Length(0) => true,
            ReqBody::Chunked(d) => d.is_done(),
            _ => false,
        };
        if finished {
            self.req = ReqBody::Done;
        }
        Ok(n)
    }

    /// The whole request body is taken (none, or all of it).
    pub fn request_done(&self) -> bool {
        matches!(self.req, ReqBody::Done)
    }

    /// Interprets the upstream's bytes at the front of `input` (`eof`: nothing follows them)
    /// and appends what the client gets to `out`: relayed interim responses, the rewritten
    /// final head, body bytes (as they came, or de-chunked for an HTTP/1.0 client). Stops after
    /// a final head that starts a tunnel or ends the response, so the caller sees each step.
    pub fn response(
        &mut self,
        input: &[u8],
        eof: bool,
        side: &HeadSide<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Relayed, CodecError> {
        let start = out.len();
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let used = match &mut self.resp {
                Resp::Head => match self.head(rest, side, out)? {
                    Some(n) => n,
                    None if eof => return Err(CodecError::ClosedBeforeHead),
                    None => break,
                },
                Resp::Body(_) => {
                    let n = self.body(rest, eof, out)?;
                    consumed += n;
                    break;
                }
                Resp::Tunnel => {
                    out.extend_from_slice(rest);
                    self.bytes += rest.len() as u64;
                    consumed += rest.len();
                    break;
                }
                Resp::Done => break,
            };
            consumed += used;
            if !matches!(self.resp, Resp::Head | Resp::Body(_)) {
                break;
            }
        }
        if matches!(self.resp, Resp::Done) && consumed < input.len() {
            // Bytes past the response: the connection is out of step, never reused.
            self.reusable = false;
        }
        Ok(Relayed {
            consumed,
            appended: out.len() - start,
        })
    }

    /// One response head at the front of `input`: Some(bytes used), None while incomplete.
    fn head(
        &mut self,
        input: &[u8],
        side: &HeadSide<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, CodecError> {
        let c = self.client;
        let client = ClientSide {
            minor: c.minor,
            keep_alive: c.keep_alive,
            date: side.date,
        };
        let start = out.len();
        let Some(r) = proxy::relay_head(input, c.head, client, side.extra_headers, out)
            .map_err(CodecError::ResponseHead)?
        else {
            return Ok(None);
        };
        let rh = r.head;
        if rh.status == 101 {
            if !c.upgrade {
                // Refused whole: the client must not see a 101 it did not ask for.
                out.truncate(start);
                return Err(CodecError::UnaskedUpgrade);
            }
            self.status = 101;
            self.resp = Resp::Tunnel;
            self.req = ReqBody::Tunnel;
        } else if (100..200).contains(&rh.status) {
            // Relayed to an HTTP/1.1 client (by relay_head), dropped for HTTP/1.0; the final
            // response follows.
        } else {
            self.status = rh.status;
            self.close_client |= r.close;
            self.reusable = rh.reusable;
            self.resp = match rh.framing {
                BodyFraming::None => Resp::Done,
                BodyFraming::Length(n) => Resp::Body(RespBody::Length(n)),
                BodyFraming::Chunked => Resp::Body(RespBody::Chunked {
                    dec: Decoder::default(),
                    dechunk: r.dechunk,
                }),
                BodyFraming::Close => Resp::Body(RespBody::Close),
            };
        }
        Ok(Some(rh.len))
    }

    /// Body bytes at the front of `input`; returns how many were used.
    fn body(&mut self, input: &[u8], eof: bool, out: &mut Vec<u8>) -> Result<usize, CodecError> {
        let Resp::Body(b) = &mut self.resp else {
            return Ok(0);
        };
        let before = out.len();
        let (used, done) = match b {
            RespBody::Length(rem) => {
                let n = (*rem).min(input.len() as u64) as usize;
                *rem -= n as u64;
                out.extend_from_slice(&input[..n]);
                (n, *rem == 0)
            }
            RespBody::Chunked { dec, dechunk } => {
                let n = if *dechunk {
                    dec.feed(input, Some(out))
                } else {
                    dec.feed(input, None)
                }
                .map_err(CodecError::ResponseChunk)?;
                if !*dechunk {
                    out.extend_from_slice(&input[..n]);
                }
                (n, dec.is_done())
            }
            RespBody::Close => {
                out.extend_from_slice(input);
                if eof {
                    self.close_client = true;
                }
                (input.len(), eof)
            }
        };
        self.bytes += (out.len() - before) as u64;
        if done {
            self.resp = Resp::Done;
        } else if eof && used == input.len() {
            return Err(CodecError::ClosedInBody);
        }
        Ok(used)
    }

    /// No final response head yet.
    pub fn awaiting_head(&self) -> bool {
        matches!(self.resp, Resp::Head)
    }

    /// The upstream switched protocols: the exchange is a tunnel now.
    pub fn is_tunnel(&self) -> bool {
        matches!(self.resp, Resp::Tunnel)
    }

    /// The response is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.resp, Resp::Done)
    }

    /// The final status, 0 before it.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes produced for the client.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Once done: the upstream connection may serve another exchange (it said so, the
    /// response was delimited and nothing followed it, and the whole request was taken).
    pub fn reusable(&self) -> bool {
        self.reusable && self.is_done() && self.request_done()
    }

    /// Once done: the client connection closes after this response (it asked to, the body was
    /// delimited by the upstream's close or de-chunked, or the response ended before the
    /// request body did, whose rest will not be read).
    pub fn close_client(&self) -> bool {
        self.close_client || !self.request_done()
    }
}

/// What the client's response head gets from the host and the clock.
#[derive(Debug, Clone, Copy)]
pub struct HeadSide<'a> {
    /// The host's extra response header lines.
    pub extra_headers: &'a [u8],
    /// The Date value to add when the upstream sent none.
    pub date: &'a str,
}

#[cfg(test)]
mod tests;
