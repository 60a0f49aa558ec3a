//! Forwarding one exchange to the upstream: the request head (rewritten) and body go up, the
//! response comes back, both streamed through fixed-size buffers with backpressure; an upgraded
//! connection becomes a tunnel. A per-worker pool keeps upstream connections alive between
//! exchanges.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::stats::Stats;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::http::chunked::Decoder;
use crate::http::proxy::{self, BodyFraming, ClientSide};
use crate::http::request::Framing;
use crate::out::OutQueue;
use crate::splice::{Drain, DrainState, Joined, Link, Splicer};
use crate::sys;

/// Bytes buffered towards the upstream before we stop reading the client.
const UP_BUF: usize = 64 * 1024;
/// Read size from the upstream; also the most response bytes buffered unparsed.
const READ_CHUNK: usize = 64 * 1024;
/// Stop reading the upstream while this much output waits for the client.
const CLIENT_HIGH: u64 = 256 * 1024;
/// Idle upstream connections kept per worker.
const POOL_MAX: usize = 64;
/// Checks of a draining spliced tunnel at every turn of the loop before the sweep takes over.
const FAST_DRAIN_POLLS: u32 = 200;

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
    fn connect(&self) -> io::Result<TcpStream> {
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

/// First poll token of upstream sockets: tokens below are listeners and clients.
pub const UP_TOKEN_BASE: usize = 1 << 40;

/// The upstream connections of a worker. Each keeps one poll registration and one token for its
/// whole life, in use or idle, so an exchange costs no epoll_ctl and an idle connection the
/// upstream closes is noticed (its event arrives) and dropped at once.
pub struct Pool {
    /// Per token slot: the client connection using it, or None while idle.
    slots: slab::Slab<Option<usize>>,
    idle: Vec<(usize, TcpStream, SocketAddr)>,
    pub stats: Arc<Stats>,
}

/// What an event on an upstream token means.
pub enum UpEvent {
    /// For the exchange of this client connection.
    Conn(usize),
    /// On an idle connection (closed by the upstream, or stray bytes): it was dropped.
    Idle,
}

impl Pool {
    pub fn new(stats: Arc<Stats>) -> Pool {
        Pool {
            slots: slab::Slab::new(),
            idle: Vec::new(),
            stats,
        }
    }

    /// Counts a failed exchange (502).
    pub fn failed(&self) {
        self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upstream timeout (504).
    pub fn timed_out(&self) {
        self.stats.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    fn opened(&self) {
        self.stats.upstream_opened.fetch_add(1, Ordering::Relaxed);
        self.stats.upstream_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Routes an event of upstream token `t` (`readable`: readable, closed or error).
    pub fn event(&mut self, t: Token, readable: bool) -> UpEvent {
        let slot = t.0 - UP_TOKEN_BASE;
        match self.slots.get(slot) {
            Some(Some(owner)) => UpEvent::Conn(*owner),
            Some(None) if !readable => UpEvent::Idle,
            Some(None) => {
                // An idle connection is readable only when the upstream closed it (or broke
                // the protocol): never reuse it.
                let before = self.idle.len();
                self.idle.retain(|(s, _, _)| *s != slot);
                if self.idle.len() < before {
                    self.stats.upstream_idle.fetch_sub(1, Ordering::Relaxed);
                    self.stats.upstream_open.fetch_sub(1, Ordering::Relaxed);
                }
                self.slots.remove(slot);
                UpEvent::Idle
            }
            None => UpEvent::Idle,
        }
    }

    /// A connection to the upstream for client connection `owner`: an idle one, or a new one
    /// (always new when `fresh`).
    fn checkout(
        &mut self,
        up: &Upstream,
        registry: &Registry,
        owner: usize,
        fresh: bool,
    ) -> io::Result<(TcpStream, usize, bool)> {
        let idle = if fresh {
            None
        } else {
            self.idle.iter().rposition(|(_, _, a)| *a == up.addr)
        };
        if let Some(i) = idle {
            let (slot, s, _) = self.idle.swap_remove(i);
            self.slots[slot] = Some(owner);
            self.stats.upstream_reused.fetch_add(1, Ordering::Relaxed);
            self.stats.upstream_idle.fetch_sub(1, Ordering::Relaxed);
            return Ok((s, slot, true));
        }
        let mut s = up.connect()?;
        let slot = self.slots.insert(Some(owner));
        // Readable only: writability is watched once a write blocks (a connect in progress,
        // a full socket), so a plain exchange costs no extra wakeup.
        if let Err(e) = registry.register(&mut s, Token(UP_TOKEN_BASE + slot), Interest::READABLE) {
            self.slots.remove(slot);
            return Err(e);
        }
        self.opened();
        Ok((s, slot, false))
    }

    fn give_back(
        &mut self,
        slot: usize,
        addr: SocketAddr,
        mut s: TcpStream,
        registry: &Registry,
        watching_writes: bool,
    ) {
        if watching_writes
            && registry
                .reregister(&mut s, Token(UP_TOKEN_BASE + slot), Interest::READABLE)
                .is_err()
        {
            self.release(slot);
            return;
        }
        if self.idle.len() < POOL_MAX && self.slots.contains(slot) {
            self.slots[slot] = None;
            self.idle.push((slot, s, addr));
            self.stats.upstream_idle.fetch_add(1, Ordering::Relaxed);
        } else {
            self.release(slot);
        }
    }

    /// Forgets a slot whose socket is closed (dropping a socket removes it from epoll).
    fn release(&mut self, slot: usize) {
        if self.slots.contains(slot) {
            self.slots.remove(slot);
            self.stats.upstream_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

/// What the worker lends an exchange.
pub struct UpCtx<'a> {
    pub registry: &'a Registry,
    /// The client connection's key (owner of the upstream slot).
    pub owner: usize,
    pub upstream: Upstream,
    pub pool: &'a mut Pool,
    /// The kernel tunnel splice, when on.
    pub splicer: Option<&'a Arc<Splicer>>,
}

/// How a pump ended.
#[derive(Debug)]
pub enum Step {
    /// Waiting for readiness.
    Pending,
    /// The response is complete.
    Done {
        status: u16,
        bytes: u64,
        close_client: bool,
    },
    /// Nothing was sent to the client yet: answer with this status (502, 504, 400).
    Fail(u16),
    /// A response is partly sent and cannot complete: close the client connection now, so
    /// the truncation is visible.
    Abort,
}

#[derive(Debug)]
enum ReqBody {
    Length(u64),
    Chunked(Decoder),
    Tunnel,
    Done,
}

#[derive(Debug)]
enum RespBody {
    Length(u64),
    Chunked { dec: Decoder, dechunk: bool },
    Close,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Body,
    Tunnel,
    Done,
}

/// Fields of the request kept for the access log.
pub struct LogFields {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub minor: u8,
    pub referer: Option<Vec<u8>>,
    pub user_agent: Option<Vec<u8>>,
    pub host: Option<String>,
}

pub struct Exchange {
    sock: TcpStream,
    /// The upstream this exchange talks to (the host's own or the default).
    addr: SocketAddr,
    upstream: Upstream,
    /// Extra response headers of the host.
    extra_headers: Vec<u8>,
    slot: usize,
    watching_writes: bool,
    retry_ok: bool,
    req_head: Vec<u8>,
    to_up: Vec<u8>,
    to_up_pos: usize,
    req: ReqBody,
    from_up: Vec<u8>,
    phase: Phase,
    resp: RespBody,
    got_byte: bool,
    sent_client: bool,
    /// When the last request byte was written to the upstream.
    sent_at: Option<Instant>,
    up_readable: bool,
    up_writable: bool,
    up_eof: bool,
    up_shut: bool,
    client_shut: bool,
    client_minor: u8,
    client_keep: bool,
    head_req: bool,
    upgrade_asked: bool,
    close_client: bool,
    status: u16,
    bytes: u64,
    reusable: bool,
    /// The connection may go back to the pool (not one opened off the fast path for a tunnel,
    /// which would take ordinary exchanges off it).
    poolable: bool,
    /// Bytes ever read from this upstream socket.
    up_read: u64,
    /// The last read of the upstream socket found it empty (EAGAIN). The kernel's verdict
    /// takes whole segments: one that httpd read part of would be sent twice.
    up_drained: bool,
    /// A short read does not end reading: the upstream's FIN may be queued behind the data.
    up_read_to_end: bool,
    /// Response bytes sent to the client before a splice.
    bytes_before_splice: u64,
    splice: Option<Spliced>,
    splice_tried: bool,
    pub log: LogFields,
}

/// What the sweep learns about a spliced tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpliceHealth {
    /// Bytes moved since the last look.
    pub moved: bool,
    /// Too much is held inside the kernel (a reader stopped): close the tunnel.
    pub overloaded: bool,
    /// Bytes the kernel delivered twice (said and both sockets set to reset on close):
    /// close the tunnel.
    pub doubled: u64,
}

/// A tunnel handed over to the kernel.
struct Spliced {
    _link: Link,
    /// Upstream to client: always spliced.
    u2c: Drain,
    /// Client to upstream, when spliced too (else it stays in user space).
    c2u: Option<Drain>,
    /// A FIN arrived and its direction is not drained yet: check again soon.
    draining: bool,
    /// Checks in a row that found it still draining.
    drain_polls: u32,
    /// Bytes received on both sockets when last looked at (for the inactivity timeout).
    seen: u64,
    /// Since when a direction holds more than `splice::BACKLOG_MAX` in the kernel.
    over_since: Option<Instant>,
}

/// The request as the connection hands it over.
pub struct Request<'a> {
    pub head: Vec<u8>,
    /// The host's own upstream, if it has one.
    pub upstream: Option<SocketAddr>,
    pub extra_headers: Vec<u8>,
    pub framing: Framing,
    pub idempotent: bool,
    pub client_minor: u8,
    pub client_keep: bool,
    pub head_req: bool,
    pub upgrade: bool,
    pub log: LogFields,
    pub _marker: std::marker::PhantomData<&'a ()>,
}

impl Exchange {
    /// Starts an exchange on a pooled or new upstream connection.
    pub fn start(r: Request<'_>, up: &mut UpCtx<'_>) -> io::Result<Exchange> {
        let upstream = match r.upstream {
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
        let fresh = r.upgrade && up.splicer.is_some();
        let upstream = if fresh {
            Upstream {
                source: None,
                ..upstream
            }
        } else {
            upstream
        };
        let (sock, slot, reused) = up.pool.checkout(&upstream, up.registry, up.owner, fresh)?;
        let req = match r.framing {
            Framing::None => ReqBody::Done,
            Framing::Length(n) => ReqBody::Length(n),
            Framing::Chunked => ReqBody::Chunked(Decoder::default()),
        };
        let retry_ok = reused && r.idempotent && r.framing == Framing::None;
        // The head is kept for a retry only when one may happen.
        let req_head = if retry_ok { r.head.clone() } else { Vec::new() };
        Ok(Exchange {
            sock,
            addr: upstream.addr,
            upstream,
            extra_headers: r.extra_headers,
            slot,
            watching_writes: false,
            retry_ok,
            to_up: r.head,
            req_head,
            to_up_pos: 0,
            req,
            from_up: Vec::new(),
            phase: Phase::Head,
            resp: RespBody::Close,
            got_byte: false,
            sent_client: false,
            sent_at: None,
            // The response cannot be there yet: wait for its readiness event (no EAGAIN read).
            up_readable: false,
            up_writable: true,
            up_eof: false,
            up_shut: false,
            client_shut: false,
            client_minor: r.client_minor,
            client_keep: r.client_keep,
            head_req: r.head_req,
            upgrade_asked: r.upgrade,
            close_client: false,
            status: 0,
            bytes: 0,
            reusable: false,
            poolable: !fresh,
            up_read: 0,
            up_drained: false,
            up_read_to_end: false,
            bytes_before_splice: 0,
            splice: None,
            splice_tried: false,
            log: r.log,
        })
    }

    /// A tunnel whose buffers are empty, not yet offered to the kernel.
    pub fn can_splice(&self) -> bool {
        self.splice_ready() && self.up_drained
    }

    /// A tunnel with empty buffers, not yet offered, whatever the upstream's last read said.
    pub fn splice_ready(&self) -> bool {
        self.phase == Phase::Tunnel
            && !self.splice_tried
            && self.to_up_pos == self.to_up.len()
            && self.from_up.is_empty()
            && !self.up_eof
            && !self.up_shut
            && !self.client_shut
    }

    /// Before a splice: reads the upstream once more unless its last read found it empty (a
    /// short read ends reading, but only EAGAIN proves no segment is half read). True when
    /// a read was asked for.
    pub fn probe_upstream(&mut self) -> bool {
        if self.up_drained {
            return false;
        }
        self.up_readable = true;
        true
    }

    /// The tunnel is (at least partly) spliced in the kernel.
    pub fn spliced(&self) -> bool {
        self.splice.is_some()
    }

    /// Both directions are spliced: the connection must not read the client any more.
    pub fn spliced_both(&self) -> bool {
        self.splice.as_ref().is_some_and(|s| s.c2u.is_some())
    }

    /// A spliced direction is draining after a FIN: poll again at the next turn of the loop
    /// (about a millisecond), for the first checks; after that (the receiver is slow, or gone),
    /// `splice_stalled` says so and the worker's sweep polls it.
    pub fn splice_draining(&self) -> bool {
        self.splice
            .as_ref()
            .is_some_and(|s| s.draining && s.drain_polls < FAST_DRAIN_POLLS)
    }

    /// Draining for longer than the fast polls.
    pub fn splice_stalled(&self) -> bool {
        self.splice
            .as_ref()
            .is_some_and(|s| s.draining && s.drain_polls >= FAST_DRAIN_POLLS)
    }

    /// TCP counters of the client socket and of the upstream socket.
    fn counters(&self, client: &TcpStream) -> Option<(sys::TcpCounters, sys::TcpCounters)> {
        Some((
            sys::tcp_counters(client).ok()?,
            sys::tcp_counters(&self.sock).ok()?,
        ))
    }

    /// Hands the tunnel to the kernel; the caller has written out everything it read from the
    /// client (`client`, registered under `client_token`). Returns true when both directions
    /// are spliced.
    pub fn start_splice(
        &mut self,
        client: &TcpStream,
        client_token: usize,
        splicer: &Arc<Splicer>,
        registry: &Registry,
        stats: &Stats,
    ) -> bool {
        self.splice_tried = true;
        // Each side's queued total before any redirected byte can join it.
        let Some((c, u)) = self.counters(client) else {
            return false;
        };
        let (link, both) = match splicer.join(client, &self.sock) {
            Joined::No => return false,
            Joined::UpstreamOnly(link) => {
                stats.tunnels_half_spliced.fetch_add(1, Ordering::Relaxed);
                (link, false)
            }
            Joined::Both(link) => {
                stats.tunnels_spliced.fetch_add(1, Ordering::Relaxed);
                (link, true)
            }
        };
        let up_token = UP_TOKEN_BASE + self.slot;
        let _ = sys::watch_hangup_only(registry, &self.sock, up_token, false);
        self.watching_writes = false;
        if both {
            let _ = sys::watch_hangup_only(registry, client, client_token, false);
        }
        self.bytes_before_splice = self.bytes;
        self.splice = Some(Spliced {
            _link: link,
            u2c: Drain::new(&c),
            c2u: both.then(|| Drain::new(&u)),
            draining: false,
            drain_polls: 0,
            seen: c.bytes_received + u.bytes_received + c.bytes_acked + u.bytes_acked,
            over_since: None,
        });
        both
    }

    /// Whether bytes moved through a spliced tunnel since the last call, and whether one of its
    /// directions holds more than `splice::BACKLOG_MAX` inside the kernel (`client_read`: bytes
    /// the connection ever read from the client).
    pub fn splice_health(
        &mut self,
        client: &TcpStream,
        client_read: u64,
        now: Instant,
    ) -> SpliceHealth {
        if self.splice.is_none() {
            return SpliceHealth::default();
        }
        // The client twice, around the upstream: each direction compares its receiver's
        // counters with its sender's read after them (see Drain::doubled).
        let Some((c, u)) = self.counters(client) else {
            return SpliceHealth::default();
        };
        let Ok(c_after) = sys::tcp_counters(client) else {
            return SpliceHealth::default();
        };
        let Some(s) = self.splice.as_mut() else {
            return SpliceHealth::default();
        };
        // Bytes arriving, or bytes leaving (a slow reader draining its queue).
        let total = c.bytes_received + u.bytes_received + c.bytes_acked + u.bytes_acked;
        let moved = total != s.seen;
        s.seen = total;
        let mut backlog = s.u2c.backlog(&u, self.up_read, self.up_shut, &c);
        let mut doubled = s
            .u2c
            .doubled((&u, self.up_read, self.up_shut), (&c, self.client_shut));
        if let Some(d) = &s.c2u {
            backlog = backlog.max(d.backlog(&c, client_read, self.client_shut, &u));
            doubled += d.doubled(
                (&c_after, client_read, self.client_shut),
                (&u, self.up_shut),
            );
        }
        if doubled > 0 {
            reset_doubled(client, &self.sock, doubled);
        }
        let overloaded = if backlog > crate::splice::BACKLOG_MAX {
            now.duration_since(*s.over_since.get_or_insert(now)) >= crate::splice::BACKLOG_GRACE
        } else {
            s.over_since = None;
            false
        };
        SpliceHealth {
            moved,
            overloaded,
            doubled,
        }
    }

    /// Follows a spliced tunnel to its end: when a side's FIN arrived and everything before it
    /// is queued on the other socket, shut that socket's write side. `client_read`: bytes the
    /// connection ever read from the client. Done when both directions are over (the
    /// client-to-upstream one may be in user space: see `pump`).
    pub fn splice_step(&mut self, client: &TcpStream, client_read: u64) -> Step {
        if self.splice.is_none() {
            return Step::Pending;
        }
        if matches!(client.take_error(), Ok(Some(_)) | Err(_))
            || matches!(self.sock.take_error(), Ok(Some(_)) | Err(_))
        {
            return Step::Abort;
        }
        let Some((c, u)) = self.counters(client) else {
            return Step::Abort;
        };
        let Some(s) = self.splice.as_mut() else {
            return Step::Pending;
        };
        s.draining = false;
        if !s.u2c.done {
            let state = s
                .u2c
                .step((&self.sock, &u), self.up_read, self.up_shut, (client, &c));
            self.bytes = self.bytes_before_splice + s.u2c.moved;
            match state {
                DrainState::Open => {}
                DrainState::Draining => s.draining = true,
                DrainState::Drained => {
                    // X's FIN is in: its counters are final, whatever the order they were read.
                    let n = s
                        .u2c
                        .doubled((&u, self.up_read, self.up_shut), (&c, self.client_shut));
                    if n > 0 {
                        reset_doubled(client, &self.sock, n);
                        return Step::Abort;
                    }
                    sys::shutdown_write(client.as_raw_fd());
                    s.u2c.done = true;
                    self.client_shut = true;
                    // Everything the upstream sent went to the client.
                    self.up_eof = true;
                }
            }
        }
        if let Some(d) = s.c2u.as_mut()
            && !d.done
        {
            match d.step(
                (client, &c),
                client_read,
                self.client_shut,
                (&self.sock, &u),
            ) {
                DrainState::Open => {}
                DrainState::Draining => s.draining = true,
                DrainState::Drained => {
                    let n = d.doubled((&c, client_read, self.client_shut), (&u, self.up_shut));
                    if n > 0 {
                        reset_doubled(client, &self.sock, n);
                        return Step::Abort;
                    }
                    let _ = self.sock.shutdown(Shutdown::Write);
                    d.done = true;
                    self.up_shut = true;
                }
            }
        }
        s.drain_polls = if s.draining { s.drain_polls + 1 } else { 0 };
        if s.u2c.done && s.c2u.as_ref().is_some_and(|d| d.done) {
            return Step::Done {
                status: 101,
                bytes: self.bytes,
                close_client: true,
            };
        }
        Step::Pending
    }

    /// Readiness of the upstream socket (`closed`: its peer may have closed).
    pub fn ready(&mut self, readable: bool, writable: bool, closed: bool) {
        self.up_readable |= readable;
        self.up_writable |= writable;
        self.up_read_to_end |= closed;
    }

    /// Whether no response has begun and the upstream timeout has passed.
    /// The upstream timeout runs from the moment the whole request was written, so a slow
    /// upload is never mistaken for a slow upstream.
    pub fn timed_out(&self, now: Instant, timeout: Duration) -> bool {
        self.phase == Phase::Head
            && self
                .sent_at
                .is_some_and(|t| now.duration_since(t) >= timeout)
    }

    /// No response head yet: the upstream timeout applies, not the client's inactivity.
    pub fn awaiting_response(&self) -> bool {
        self.phase == Phase::Head && self.sent_at.is_some()
    }

    /// Status and body bytes so far, for the log of an exchange cut short: 499 (nginx's
    /// "client closed request") when no response had started.
    pub fn outcome(&self) -> (u16, u64) {
        (if self.sent_client { self.status } else { 499 }, self.bytes)
    }

    pub fn sent_client(&self) -> bool {
        self.sent_client
    }

    /// In a tunnel, the upstream closed and everything it sent is queued: the client's write
    /// side may be shut once the queue drains.
    pub fn wants_client_shutdown(&mut self) -> bool {
        if self.phase == Phase::Tunnel && self.up_eof && !self.client_shut {
            self.client_shut = true;
            return true;
        }
        false
    }

    /// Returns the upstream connection to the pool (when it may be reused) or closes it. Every
    /// exchange ends here, so its token slot is always released.
    pub fn finish(self, pool: &mut Pool, registry: &Registry) {
        // Reusable only when every request byte reached the upstream: an early response with
        // part of the request unsent would leave the upstream waiting for the rest.
        if self.reusable
            && self.poolable
            && self.to_up_pos == self.to_up.len()
            && self.phase == Phase::Done
            && matches!(self.req, ReqBody::Done)
            && self.from_up.is_empty()
        {
            pool.give_back(
                self.slot,
                self.addr,
                self.sock,
                registry,
                self.watching_writes,
            );
        } else {
            pool.release(self.slot);
        }
    }

    fn watch_writes(&mut self, registry: &Registry) {
        if !self.watching_writes {
            self.watching_writes = true;
            let t = Token(UP_TOKEN_BASE + self.slot);
            if self.splice.is_some() {
                // Spliced towards the client: its arrivals must not wake the worker.
                let _ = sys::watch_hangup_only(registry, &self.sock, t.0, true);
            } else {
                let _ =
                    registry.reregister(&mut self.sock, t, Interest::READABLE | Interest::WRITABLE);
            }
        }
    }

    fn upstream_failed(&mut self, up: &mut UpCtx<'_>) -> Option<Step> {
        if !self.got_byte && self.retry_ok {
            // A reused connection the upstream had closed: once more on a fresh one.
            self.retry_ok = false;
            if let Ok(mut s) = self.upstream.connect() {
                let token = Token(UP_TOKEN_BASE + self.slot);
                if up
                    .registry
                    .register(&mut s, token, Interest::READABLE)
                    .is_ok()
                {
                    self.watching_writes = false;
                    up.pool
                        .stats
                        .upstream_opened
                        .fetch_add(1, Ordering::Relaxed);
                    self.sock = s;
                    self.to_up = self.req_head.clone();
                    self.to_up_pos = 0;
                    self.sent_at = None;
                    self.from_up.clear();
                    self.up_read = 0;
                    self.up_read_to_end = false;
                    self.up_readable = false;
                    self.up_writable = true;
                    self.up_eof = false;
                    return None;
                }
            }
        }
        up.pool.failed();
        Some(if self.sent_client {
            Step::Abort
        } else {
            Step::Fail(502)
        })
    }

    fn push_client(&mut self, out: &mut OutQueue, bytes: Vec<u8>, body: bool) {
        if body {
            self.bytes += bytes.len() as u64;
        }
        self.sent_client = true;
        out.push_bytes(bytes);
    }

    /// Moves bytes as far as readiness and buffers allow. `input` is the client's unread
    /// bytes; `*consumed` is advanced past what was taken.
    pub fn pump(
        &mut self,
        input: &[u8],
        consumed: &mut usize,
        client_eof: bool,
        out: &mut OutQueue,
        up: &mut UpCtx<'_>,
        date: &str,
    ) -> Step {
        loop {
            let mut progress = false;

            // Client -> upstream buffer.
            if self.to_up_pos == self.to_up.len() {
                self.to_up.clear();
                self.to_up_pos = 0;
            }
            let room = UP_BUF.saturating_sub(self.to_up.len() - self.to_up_pos);
            let avail = &input[*consumed..];
            if room > 0 && !avail.is_empty() {
                let take = avail.len().min(room);
                let n = match &mut self.req {
                    ReqBody::Length(rem) => {
                        let n = (take as u64).min(*rem) as usize;
                        *rem -= n as u64;
                        n
                    }
                    ReqBody::Chunked(dec) => match dec.feed(&avail[..take], None) {
                        Ok(n) => n,
                        Err(_) => {
                            return if self.sent_client {
                                Step::Abort
                            } else {
                                Step::Fail(400)
                            };
                        }
                    },
                    ReqBody::Tunnel => take,
                    ReqBody::Done => 0,
                };
                if n > 0 {
                    self.to_up.extend_from_slice(&avail[..n]);
                    *consumed += n;
                    progress = true;
                }
                let finished = match &self.req {
                    ReqBody::Length(0) => true,
                    ReqBody::Chunked(d) => d.is_done(),
                    _ => false,
                };
                if finished {
                    self.req = ReqBody::Done;
                }
            }

            // Upstream writes.
            while self.to_up_pos < self.to_up.len() && self.up_writable {
                match self.sock.write(&self.to_up[self.to_up_pos..]) {
                    Ok(0) => {
                        if let Some(s) = self.upstream_failed(up) {
                            return s;
                        }
                    }
                    Ok(n) => {
                        self.to_up_pos += n;
                        progress = true;
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.raw_os_error() == Some(libc::ENOTCONN) =>
                    {
                        self.up_writable = false;
                        self.watch_writes(up.registry);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        if self.phase == Phase::Tunnel {
                            return Step::Abort;
                        }
                        if let Some(s) = self.upstream_failed(up) {
                            return s;
                        }
                    }
                }
            }
            if self.sent_at.is_none()
                && matches!(self.req, ReqBody::Done)
                && self.to_up_pos == self.to_up.len()
            {
                self.sent_at = Some(Instant::now());
            }
            if self.phase == Phase::Tunnel
                && client_eof
                && self.to_up_pos == self.to_up.len()
                && *consumed == input.len()
                && !self.up_shut
            {
                self.up_shut = true;
                let _ = self.sock.shutdown(Shutdown::Write);
            }

            // One upstream read per round, while the client keeps up: the response is
            // interpreted before reading again, so a complete response costs no EAGAIN read.
            if self.up_readable
                && self.splice.is_none()
                && !self.up_eof
                && out.pending() < CLIENT_HIGH
                && self.from_up.len() < READ_CHUNK + proxy::MAX_RESPONSE_HEAD
            {
                match crate::sys::read_spare(&self.sock, &mut self.from_up, READ_CHUNK) {
                    Ok(0) => {
                        self.up_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        self.up_read += n as u64;
                        self.up_drained = false;
                        // A short read means the socket's queue was empty (as for the client
                        // in `conn::fill`): wait for the next edge instead of an EAGAIN read.
                        if n < READ_CHUNK && !self.up_read_to_end {
                            self.up_readable = false;
                        }
                        self.got_byte = true;
                        progress = true;
                    }
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.up_readable = false;
                            self.up_drained = true;
                            self.up_read_to_end = false;
                        }
                        io::ErrorKind::Interrupted => progress = true,
                        _ => {
                            if self.phase == Phase::Tunnel || self.phase == Phase::Body {
                                return Step::Abort;
                            }
                            if let Some(s) = self.upstream_failed(up) {
                                return s;
                            }
                            progress = true;
                        }
                    },
                }
            }

            // Interpret what the upstream sent.
            match self.phase {
                Phase::Head => match proxy::parse_response(&self.from_up, self.head_req) {
                    Err(_) => {
                        up.pool.failed();
                        return if self.sent_client {
                            Step::Abort
                        } else {
                            Step::Fail(502)
                        };
                    }
                    Ok(None) => {
                        if self.up_eof {
                            if let Some(s) = self.upstream_failed(up) {
                                return s;
                            }
                            progress = true;
                        }
                    }
                    Ok(Some(rh)) => {
                        let raw: Vec<u8> = self.from_up.drain(..rh.len).collect();
                        progress = true;
                        if rh.status == 101 {
                            if !self.upgrade_asked {
                                up.pool.failed();
                                return if self.sent_client {
                                    Step::Abort
                                } else {
                                    Step::Fail(502)
                                };
                            }
                            let mut h = Vec::with_capacity(raw.len() + 64);
                            proxy::client_response(
                                &raw,
                                &rh,
                                ClientSide {
                                    minor: self.client_minor,
                                    keep_alive: false,
                                    date,
                                },
                                &self.extra_headers,
                                &mut h,
                            );
                            self.push_client(out, h, false);
                            self.status = 101;
                            up.pool.stats.tunnels.fetch_add(1, Ordering::Relaxed);
                            self.phase = Phase::Tunnel;
                            self.req = ReqBody::Tunnel;
                        } else if (100..200).contains(&rh.status) {
                            if self.client_minor == 1 {
                                let mut h = Vec::with_capacity(raw.len());
                                proxy::interim(&raw, rh.status, &mut h);
                                self.push_client(out, h, false);
                            }
                        } else {
                            let mut h = Vec::with_capacity(raw.len() + 64);
                            let (dechunk, close) = proxy::client_response(
                                &raw,
                                &rh,
                                ClientSide {
                                    minor: self.client_minor,
                                    keep_alive: self.client_keep,
                                    date,
                                },
                                &self.extra_headers,
                                &mut h,
                            );
                            self.push_client(out, h, false);
                            self.status = rh.status;
                            self.close_client |= close;
                            self.reusable = rh.reusable;
                            self.phase = Phase::Body;
                            self.resp = match rh.framing {
                                BodyFraming::None => {
                                    self.phase = Phase::Done;
                                    RespBody::Length(0)
                                }
                                BodyFraming::Length(n) => RespBody::Length(n),
                                BodyFraming::Chunked => RespBody::Chunked {
                                    dec: Decoder::default(),
                                    dechunk,
                                },
                                BodyFraming::Close => RespBody::Close,
                            };
                        }
                    }
                },
                Phase::Body => {
                    if !self.from_up.is_empty() {
                        progress = true;
                    }
                    match &mut self.resp {
                        RespBody::Length(rem) => {
                            let n = (*rem).min(self.from_up.len() as u64) as usize;
                            *rem -= n as u64;
                            let done = *rem == 0;
                            if n > 0 {
                                let chunk: Vec<u8> = self.from_up.drain(..n).collect();
                                self.push_client(out, chunk, true);
                            }
                            if done {
                                self.phase = Phase::Done;
                                if !self.from_up.is_empty() {
                                    self.reusable = false; // bytes past the response: not reusable
                                }
                            } else if self.up_eof {
                                up.pool.failed();
                                return Step::Abort;
                            }
                        }
                        RespBody::Chunked { dec, dechunk } => {
                            let mut data = Vec::new();
                            let r = if *dechunk {
                                dec.feed(&self.from_up, Some(&mut data))
                            } else {
                                dec.feed(&self.from_up, None)
                            };
                            let done = dec.is_done();
                            let dechunk = *dechunk;
                            match r {
                                Ok(n) => {
                                    let raw: Vec<u8> = self.from_up.drain(..n).collect();
                                    let chunk = if dechunk { data } else { raw };
                                    if !chunk.is_empty() {
                                        self.push_client(out, chunk, true);
                                    }
                                }
                                Err(_) => {
                                    up.pool.failed();
                                    return Step::Abort;
                                }
                            }
                            if done {
                                self.phase = Phase::Done;
                                if !self.from_up.is_empty() {
                                    self.reusable = false;
                                }
                            } else if self.up_eof {
                                up.pool.failed();
                                return Step::Abort;
                            }
                        }
                        RespBody::Close => {
                            if !self.from_up.is_empty() {
                                let chunk = std::mem::take(&mut self.from_up);
                                self.push_client(out, chunk, true);
                            }
                            if self.up_eof {
                                self.close_client = true;
                                self.phase = Phase::Done;
                            }
                        }
                    }
                }
                Phase::Tunnel => {
                    if !self.from_up.is_empty() {
                        let chunk = std::mem::take(&mut self.from_up);
                        self.push_client(out, chunk, true);
                        progress = true;
                    }
                    if self.up_eof && client_eof && self.up_shut {
                        return Step::Done {
                            status: 101,
                            bytes: self.bytes,
                            close_client: true,
                        };
                    }
                }
                Phase::Done => {}
            }

            if self.phase == Phase::Done {
                // A response that ends before the request body did (an early 413, say):
                // the client connection closes, as the rest of its body will not be read.
                let req_done = matches!(self.req, ReqBody::Done);
                return Step::Done {
                    status: self.status,
                    bytes: self.bytes,
                    close_client: self.close_client || !req_done,
                };
            }
            if !progress {
                return Step::Pending;
            }
        }
    }
}

/// The kernel delivered `n` bytes of a spliced tunnel twice (ARCHITECTURE.md, "The tunnel
/// splice"): said once, and both sockets reset on close, so the corruption ends in an error,
/// not a clean close.
fn reset_doubled(client: &TcpStream, upstream: &TcpStream, n: u64) {
    tracing::error!(
        "spliced tunnel reset: {n} bytes went out twice (a kernel defect: a retransmitted \
         segment that partly overlapped what had arrived was redirected whole; ARCHITECTURE.md, \
         \"The tunnel splice\")"
    );
    let _ = sys::reset_on_close(client);
    let _ = sys::reset_on_close(upstream);
}
