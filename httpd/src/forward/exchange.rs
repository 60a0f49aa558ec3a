//! The driver of one forwarded exchange: it moves bytes between the client's buffers and the
//! upstream socket and lets the sans-io codec (`http::exchange::Codec`) decide what they mean.
//! A turn (`pump`) is: take request body bytes, write upstream, read upstream, relay; until
//! nothing moves. It ends with a named [`Progress`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::Registry;

use super::error::ProxyError;
use super::pool::Pool;
use super::splice::Splicer;
use super::upsock::{Got, Outbox, UpReady, UpSock};
use super::{CLIENT_HIGH, LogFields, READ_CHUNK, UP_BUF, Upstream};
use crate::http::exchange::{ClientRequest, Codec, CodecError, HeadSide};
use crate::http::proxy;
use crate::out::OutQueue;

/// What the worker lends an exchange.
pub struct UpCtx<'a> {
    pub registry: &'a Registry,
    /// The client connection's key (owner of the upstream slot).
    pub owner: usize,
    pub upstream: Upstream,
    /// The Host sent to the upstream for an HTTP/1.0 request without one.
    pub fallback_host: &'a str,
    pub pool: &'a mut Pool,
    /// Small buffers of finished exchanges (request heads, log fields), for the next ones:
    /// allocating them per exchange is a cost of its own.
    pub bufs: &'a mut Vec<Vec<u8>>,
    /// The worker's upstream read buffer (`READ_CHUNK`): a response that arrives whole is
    /// interpreted there and never copied into a buffer of the exchange.
    pub scratch: &'a mut Vec<u8>,
    /// Boxes of finished exchanges, for the next ones (see [`Slot`]).
    pub slots: &'a mut Slots,
    /// The kernel tunnel splice, when on.
    pub splicer: Option<&'a Arc<Splicer>>,
}

/// The request as the connection hands it over.
pub struct Request {
    /// The head for the upstream, rewritten.
    pub head: Vec<u8>,
    pub client: ClientRequest,
    /// It may be sent again on a fresh connection if a pooled one turns out closed.
    pub idempotent: bool,
    pub log: LogFields,
}

/// How a turn of an exchange ended.
#[derive(Debug)]
pub enum Progress {
    /// Waiting for readiness.
    Waiting,
    /// The response is complete.
    Done {
        status: u16,
        bytes: u64,
        close_client: bool,
    },
    /// The upstream switched protocols: the exchange becomes a tunnel (`into_tunnel`).
    Upgraded,
    /// It cannot complete. With nothing sent to the client yet it gets an error status;
    /// otherwise its connection is closed after what was sent, so the truncation shows.
    Failed(ProxyError),
}

/// One exchange with the upstream.
pub struct Exchange {
    up: UpSock,
    /// Where it was sent: a retry connects there again.
    upstream: Upstream,
    codec: Codec,
    to_up: Outbox,
    from_up: Vec<u8>,
    /// A retry on a fresh connection may happen (a pooled connection, nothing received yet,
    /// an idempotent request without a body): the head stays in `to_up` to be sent again.
    retry: bool,
    /// The connection may go back to the pool (not one opened off the fast path for a tunnel,
    /// which would take ordinary exchanges off it).
    poolable: bool,
    /// When the last request byte was written to the upstream (the upstream timeout runs from
    /// then, so a slow upload is never mistaken for a slow upstream).
    sent_at: Option<Instant>,
    /// Something of the response went to the client.
    sent_client: bool,
    /// The response's first bytes arrived (its time to first byte is observed).
    first_byte: bool,
    pub log: LogFields,
}

/// The box an exchange lives in while its connection forwards. A worker keeps the boxes of
/// finished exchanges for the next ones: an exchange costs no allocation, and the memory it
/// lands in was used a moment ago (a box per exchange cost 5% of a forwarded request's user
/// time). Idle connections hold none.
pub struct Slot(Option<Exchange>);

/// Boxes kept per worker.
const SPARE_SLOTS: usize = 256;

/// A worker's kept boxes (boxed on purpose: a box moves between a connection and this list).
#[derive(Default)]
#[allow(clippy::vec_box)]
pub struct Slots(Vec<Box<Slot>>);

impl Slot {
    /// `x` in a kept box, or a new one.
    pub fn holding(x: Exchange, spare: &mut Slots) -> Box<Slot> {
        let mut slot = spare.0.pop().unwrap_or_else(|| Box::new(Slot(None)));
        slot.0 = Some(x);
        slot
    }

    pub fn get(&self) -> Option<&Exchange> {
        self.0.as_ref()
    }

    pub fn get_mut(&mut self) -> Option<&mut Exchange> {
        self.0.as_mut()
    }

    /// The exchange, its box kept for the next one.
    pub fn release(mut self: Box<Self>, spare: &mut Slots) -> Option<Exchange> {
        let x = self.0.take();
        if spare.0.len() < SPARE_SLOTS {
            spare.0.push(self);
        }
        x
    }
}

/// What a read of the upstream gave the turn.
enum Read {
    /// Bytes, or the EOF: for the codec.
    Data,
    Nothing,
    /// It failed, and the request went again on a fresh connection.
    Retried,
}

/// Small buffers a worker keeps for its next exchanges.
const SMALL_BUFS: usize = 256;
/// Largest buffer kept.
const SMALL_BUF_MAX: usize = 8 * 1024;

/// Keeps an emptied small buffer for the next exchange.
pub(crate) fn recycle(mut buf: Vec<u8>, bufs: &mut Vec<Vec<u8>>) {
    if buf.capacity() > 0 && buf.capacity() <= SMALL_BUF_MAX && bufs.len() < SMALL_BUFS {
        buf.clear();
        bufs.push(buf);
    }
}

/// A cleared buffer from the pool (or a new one) with room for `capacity` bytes.
pub(crate) fn small_buf(bufs: &mut Vec<Vec<u8>>, capacity: usize) -> Vec<u8> {
    let mut buf = bufs.pop().unwrap_or_default();
    buf.reserve(capacity);
    buf
}

/// What a turn gets from the connection: the client's unread bytes and where the response
/// goes.
pub struct Turn<'a, 'b> {
    /// The client's unread bytes.
    pub input: &'a [u8],
    /// Advanced past what was taken from `input`.
    pub consumed: &'a mut usize,
    pub out: &'a mut OutQueue,
    pub up: &'a mut UpCtx<'b>,
    pub date: &'a str,
    /// The worker loop's time.
    pub now: Instant,
}

impl Exchange {
    /// Starts an exchange on a pooled or new upstream connection.
    pub fn start(r: Request, up: &mut UpCtx<'_>) -> Result<Exchange, ProxyError> {
        let host_upstream = r.log.host.as_ref().and_then(|h| h.settings.upstream);
        let mut upstream = match host_upstream {
            Some(addr) => Upstream {
                addr,
                source: None,
                enabled: true,
                ..up.upstream
            },
            None => up.upstream,
        };
        // A tunnel that may be spliced gets a connection of its own, off the sk_msg fast path
        // (whose redirects would bypass the splice verdict).
        let fresh = r.client.upgrade && up.splicer.is_some();
        if fresh {
            upstream.source = None;
        }
        let (sock, slot, reused) = up
            .pool
            .checkout(&upstream, up.registry, up.owner, fresh)
            .map_err(|e| ProxyError::Connect(e.kind()))?;
        let may_retry =
            reused && r.idempotent && r.client.framing == crate::http::request::Framing::None;
        Ok(Exchange {
            up: UpSock::new(sock, slot, upstream.addr),
            upstream,
            codec: Codec::new(r.client),
            retry: may_retry,
            to_up: Outbox::with(r.head),
            from_up: Vec::new(),
            poolable: !fresh,
            sent_at: None,
            sent_client: false,
            first_byte: false,
            log: r.log,
        })
    }

    /// Readiness of the upstream socket.
    pub fn ready(&mut self, r: UpReady) {
        self.up.ready(r);
    }

    /// Whether no response has begun and the upstream timeout has passed.
    pub fn timed_out(&self, now: Instant, timeout: Duration) -> bool {
        self.codec.awaiting_head()
            && self
                .sent_at
                .is_some_and(|t| now.duration_since(t) >= timeout)
    }

    /// No response head yet: the upstream timeout applies, not the client's inactivity.
    pub fn awaiting_response(&self) -> bool {
        self.codec.awaiting_head() && self.sent_at.is_some()
    }

    /// Something of the response went to the client.
    pub fn sent_client(&self) -> bool {
        self.sent_client
    }

    /// Status and body bytes so far, for the log of an exchange cut short: 499 (nginx's
    /// "client closed request") when no response had started.
    pub fn outcome(&self) -> (u16, u64) {
        let status = if self.sent_client {
            self.codec.status()
        } else {
            499
        };
        (status, self.codec.bytes())
    }

    /// Moves bytes as far as readiness and buffers allow.
    pub fn pump(&mut self, t: &mut Turn<'_, '_>) -> Progress {
        match self.turn(t) {
            Ok(p) => p,
            Err(e) => Progress::Failed(e),
        }
    }

    fn turn(&mut self, t: &mut Turn<'_, '_>) -> Result<Progress, ProxyError> {
        loop {
            let mut moved = self.take_request(t.input, t.consumed)?;
            moved |= self.write_upstream(t.up)?;
            if self.sent_at.is_none() && self.codec.request_done() && self.to_up.is_empty() {
                // The loop's clock: the timeout is checked by the sweep, at that granularity.
                self.sent_at = Some(t.now);
            }
            moved |= self.read_and_relay(t)?;
            if self.codec.is_tunnel() {
                t.up.pool.stats.tunnels.fetch_add(1, Ordering::Relaxed);
                return Ok(Progress::Upgraded);
            }
            if self.codec.is_done() {
                return Ok(Progress::Done {
                    status: self.codec.status(),
                    bytes: self.codec.bytes(),
                    close_client: self.codec.close_client(),
                });
            }
            if !moved {
                return Ok(Progress::Waiting);
            }
        }
    }

    /// Request body bytes from the client into the upstream buffer, as far as it has room.
    fn take_request(&mut self, input: &[u8], consumed: &mut usize) -> Result<bool, ProxyError> {
        let avail = &input[*consumed..];
        let room = UP_BUF.saturating_sub(self.to_up.len());
        if room == 0 || avail.is_empty() {
            return Ok(false);
        }
        let n = self.codec.request_body(avail, room)?;
        if n == 0 {
            return Ok(false);
        }
        self.to_up.push(&avail[..n]);
        *consumed += n;
        Ok(true)
    }

    /// Writes the upstream buffer until it is empty or the socket is full.
    fn write_upstream(&mut self, up: &mut UpCtx<'_>) -> Result<bool, ProxyError> {
        let mut retried = false;
        loop {
            match self.up.write_out(&mut self.to_up, up.registry, false) {
                Ok(moved) => return Ok(moved || retried),
                // A pooled connection found closed: the head goes again on a fresh one.
                Err(e) => {
                    self.retry_or(ProxyError::upstream_io(&e), up)?;
                    retried = true;
                }
            }
        }
    }

    /// One upstream read per turn, while the client keeps up, into the worker's scratch
    /// buffer, interpreted at once (so a complete response costs no EAGAIN read, and one that
    /// arrives whole is never copied into a buffer of the exchange); what the codec leaves
    /// (a partial head) is kept for the next read.
    fn read_and_relay(&mut self, t: &mut Turn<'_, '_>) -> Result<bool, ProxyError> {
        if !self.up.can_read()
            || t.out.pending() >= CLIENT_HIGH
            || self.from_up.len() >= READ_CHUNK + proxy::MAX_RESPONSE_HEAD
        {
            return Ok(false);
        }
        let mut scratch = std::mem::take(t.up.scratch);
        scratch.clear();
        let r = match self.read_into(&mut scratch, t) {
            Ok(Read::Data) => {
                if !self.first_byte && !scratch.is_empty() {
                    self.first_byte = true;
                    // From the turn the request's last byte went (zero: the upstream answered
                    // before the request was all sent) to this read.
                    let took = self.sent_at.map_or(Duration::ZERO, |s| {
                        Instant::now().saturating_duration_since(s)
                    });
                    t.up.pool.stats.upstream_ttfb.observe(took);
                }
                self.relay(&scratch, t)
            }
            // Sent again on a fresh connection: the turn goes on (its writes).
            Ok(Read::Retried) => Ok(true),
            Ok(Read::Nothing) => Ok(false),
            Err(e) => Err(e),
        };
        *t.up.scratch = scratch;
        r
    }

    /// Reads the upstream into `buf`.
    fn read_into(&mut self, buf: &mut Vec<u8>, t: &mut Turn<'_, '_>) -> Result<Read, ProxyError> {
        match self.up.read(buf, READ_CHUNK) {
            Ok(Got::Bytes(_) | Got::Eof) => Ok(Read::Data),
            Ok(Got::Nothing) => Ok(Read::Nothing),
            Err(e) if self.codec.awaiting_head() => {
                self.retry_or(ProxyError::upstream_io(&e), t.up)?;
                Ok(Read::Retried)
            }
            Err(e) => Err(ProxyError::upstream_io(&e)),
        }
    }

    /// Lets the codec interpret what the upstream sent (`new`, after what was left before)
    /// and queues what the client gets.
    fn relay(&mut self, new: &[u8], t: &mut Turn<'_, '_>) -> Result<bool, ProxyError> {
        let extra = self
            .log
            .host
            .as_ref()
            .map_or(&[][..], |h| h.settings.headers_for(self.log.tls.is_some()));
        let side = HeadSide {
            extra_headers: extra,
            date: t.date,
        };
        let held = !self.from_up.is_empty();
        if held {
            self.from_up.extend_from_slice(new);
        }
        let input = if held { &self.from_up[..] } else { new };
        let mut bytes = small_buf(t.up.bufs, input.len() + 512);
        let result = self.codec.response(input, self.up.eof(), &side, &mut bytes);
        // What the codec produced before any error goes out first (a head whose body then
        // turns out bad is sent, and the cut shows after it). Interim (1xx) responses alone
        // do not count as sent: a final response (502, 504) may still follow them.
        if bytes.is_empty() {
            recycle(bytes, t.up.bufs);
        } else {
            self.sent_client |= !self.codec.awaiting_head();
            t.out.push_bytes(bytes);
        }
        let r = match result {
            Ok(r) => r,
            Err(CodecError::ClosedBeforeHead) if self.up.read_total == 0 => {
                // A pooled connection the upstream had closed: once more on a fresh one.
                self.retry_or(CodecError::ClosedBeforeHead.into(), t.up)?;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        if held {
            self.from_up.drain(..r.consumed);
        } else {
            self.from_up.extend_from_slice(&new[r.consumed..]);
        }
        Ok(true)
    }

    /// The upstream connection failed before anything of the response came: on a pooled
    /// connection that the upstream had closed meanwhile, send the request again on a fresh
    /// one (once); otherwise the exchange fails with `err`.
    fn retry_or(&mut self, err: ProxyError, up: &mut UpCtx<'_>) -> Result<(), ProxyError> {
        if !std::mem::take(&mut self.retry) || self.up.read_total > 0 {
            return Err(err);
        }
        let sock = self
            .upstream
            .connect()
            .map_err(|e| ProxyError::Connect(e.kind()))?;
        self.up
            .replace(sock, up.registry)
            .map_err(|e| ProxyError::Connect(e.kind()))?;
        up.pool
            .stats
            .upstream_opened
            .fetch_add(1, Ordering::Relaxed);
        // Nothing but the head was ever in the buffer (no body): send it all again.
        self.to_up.rewind();
        self.sent_at = None;
        self.from_up.clear();
        Ok(())
    }

    /// Returns the upstream connection to the pool (when it may be reused) or closes it. Every
    /// exchange ends here (or in `into_tunnel`), so its token slot is always released.
    pub fn finish(self, pool: &mut Pool, registry: &Registry, bufs: &mut Vec<Vec<u8>>) {
        // Reusable only when every request byte reached the upstream: an early response with
        // part of the request unsent would leave the upstream waiting for the rest.
        let reuse = self.codec.reusable()
            && self.poolable
            && self.to_up.is_empty()
            && self.from_up.is_empty();
        recycle(self.to_up.into_buf(), bufs);
        recycle(self.log.into_buf(), bufs);
        if reuse {
            pool.give_back(
                self.up.slot,
                self.up.addr,
                self.up.sock,
                registry,
                self.up.watching_writes,
            );
        } else {
            pool.release(self.up.slot);
        }
    }

    /// The exchange after 101: a tunnel with what is buffered either way.
    pub fn into_tunnel(self) -> super::Tunnel {
        super::Tunnel::new(
            self.up,
            self.to_up,
            self.from_up,
            self.codec.bytes(),
            self.log,
        )
    }
}
