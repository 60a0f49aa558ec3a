//! One client connection: read, parse, answer in order (pipelining), forward misses to the
//! upstream, write, keep alive. Driven by the worker's event loop (edge-triggered), never
//! blocking.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;

use crate::accesslog::Record;
use crate::answer::{self, Answered};
use crate::forward::{Exchange, LogFields, Request, Step, UpCtx};
use crate::http::proxy;
use crate::http::request::{self, Framing, Head, Method};
use crate::out::{Flushed, IoModel, OutQueue};
use crate::sys;
use crate::vhosts::HostTable;

/// Initial read buffer; it grows up to a full request head.
const READ_BUF: usize = 2 * 1024;
/// Most idle read buffers a worker keeps for reuse.
const SPARE_BUFS: usize = 64;
/// Stop reading ahead (pipelined requests, request bodies) past this many buffered bytes.
const READ_CAP: usize = request::MAX_HEAD + 4096;
/// Stop answering pipelined requests while this much output waits.
const OUT_HIGH: u64 = 512 * 1024;
/// Longest logged field kept for a forwarded request.
const LOG_FIELD: usize = 1024;

/// What the client socket's event said about reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    No,
    /// Bytes arrived; the peer has not closed.
    Yes,
    /// Read until EAGAIN or EOF: the peer closed (or errored, or sent urgent data), or no
    /// event said (a connection just accepted).
    ToEnd,
    /// No event: the worker polls a draining spliced tunnel. Not activity.
    Tick,
}

/// Everything a connection borrows from its worker while it runs.
pub struct WorkerCtx<'a> {
    pub table: &'a HostTable,
    pub date: &'a str,
    pub clf_time: &'a str,
    pub io: IoModel,
    pub now: Instant,
    /// This connection's poll token.
    pub token: usize,
    pub path_buf: &'a mut Vec<u8>,
    /// Read buffers of idle connections, for the next one that reads (see `Conn::rest`).
    pub spare_bufs: &'a mut Vec<Vec<u8>>,
    /// The worker's buffer for asking whether bytes are cached (`cold::resident`).
    pub probe: &'a mut [u8],
    pub stats: &'a crate::stats::Stats,
    /// The upstream side: None when no upstream is configured.
    pub up: Option<UpCtx<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Close once the output queue is empty.
    Closing,
    /// Write side shut; discarding input until EOF or the linger deadline.
    Lingering,
}

pub struct Conn {
    pub sock: TcpStream,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    out: OutQueue,
    /// Request body bytes still to skip.
    discard: u64,
    state: State,
    eof: bool,
    /// The socket may have unread input (no EAGAIN since the last readable edge).
    want_read: bool,
    /// A write hit EAGAIN: the worker must watch for writability.
    pub blocked_on_write: bool,
    /// The worker registered this socket for writability.
    pub watching_writes: bool,
    /// The worker registered this socket with epoll at all (not before its first drive).
    pub registered: bool,
    /// The last request's body was not consumed (chunked, or Expect: 100-continue).
    unread_input: bool,
    pub last_active: Instant,
    /// When the current (incomplete) request head began arriving.
    pub head_since: Option<Instant>,
    /// The exchange with the upstream in progress, if any.
    pub fwd: Option<Box<Exchange>>,
    /// Bytes ever read from the client.
    read_total: u64,
    /// A short read does not end reading: the peer's FIN may be queued behind the data (a
    /// read returns the data and takes the FIN, and no event comes for it).
    read_to_end: bool,
    /// The last read found the socket empty (EAGAIN): no segment is half read, so the kernel
    /// splice may take over.
    drained: bool,
    /// A spliced tunnel is draining: the worker drives this connection again soon.
    pub ticking: bool,
    /// Its last flush stopped at the write budget: the worker drives it again at the next
    /// turn, after a poll that does not wait.
    pub yielded: bool,
}

fn cut(v: &[u8]) -> Vec<u8> {
    v[..v.len().min(LOG_FIELD)].to_vec()
}

impl Conn {
    /// Whether a response queued here comes from a withdrawn webroot (see
    /// `OutQueue::holds_revoked`): it must be cut.
    pub fn holds_revoked(&self) -> bool {
        self.out.holds_revoked()
    }

    /// Whether bytes sent with sendfile from a withdrawn webroot may still be in the kernel.
    pub fn zero_copy_revoked(&self) -> bool {
        self.out.zero_copy_revoked()
    }

    /// Once everything sent is out of the kernel's hands (see `sys::delivered`), lets go of the
    /// webroot last sent from with sendfile. Returns whether it is let go.
    pub fn release_if_delivered(&mut self) -> bool {
        let delivered = self
            .sock
            .local_addr()
            .is_ok_and(|local| crate::sys::delivered(&self.sock, local, self.peer));
        if delivered {
            self.out.release_zero_copy();
        }
        delivered
    }

    /// Prepares a cut: the close will reset the connection, which frees its send queue (it
    /// may hold pages of the withdrawn file) instead of sending it.
    pub fn cut(&mut self) {
        let _ = crate::sys::reset_on_close(&self.sock);
    }

    /// At close: the webroot last sent from with sendfile, whose pages the kernel may still
    /// hold for this connection, with the two addresses to find out when it no longer does.
    pub fn retire(&mut self) -> Option<crate::worker::Retired> {
        let root = self.out.release_zero_copy()?;
        let local = self.sock.local_addr().ok()?;
        Some(crate::worker::Retired {
            root,
            local,
            peer: self.peer,
        })
    }

    /// The cold read this connection wants (see `OutQueue::take_cold_wanted`).
    pub fn take_cold_wanted(&mut self) -> Option<crate::cold::Want> {
        self.out.take_cold_wanted()
    }

    /// Its cold send was handed to the cold-send threads with this serial.
    pub fn cold_waiting(&mut self, serial: u64) {
        self.out.cold_waiting(serial);
    }

    /// The serial of the cold read this connection waits for.
    pub fn cold_serial(&self) -> Option<u64> {
        self.out.cold_serial()
    }

    /// A cold send ended; true when it was this connection's (drive it again).
    pub fn cold_done(&mut self, serial: u64, sent: u64, outcome: crate::cold::Outcome) -> bool {
        // The thread found the socket full; it may have drained since (that edge came while
        // the send was out and was ignored): then go on, else wait for writable.
        let full = outcome == crate::cold::Outcome::Full && !sys::writable_now(&self.sock);
        self.out.cold_done(serial, sent, outcome, full)
    }

    pub fn new(sock: TcpStream, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            sock,
            peer,
            rbuf: Vec::new(),
            start: 0,
            end: 0,
            out: OutQueue::default(),
            discard: 0,
            state: State::Open,
            eof: false,
            want_read: true,
            blocked_on_write: false,
            watching_writes: false,
            registered: false,
            unread_input: false,
            last_active: now,
            head_since: None,
            fwd: None,
            read_total: 0,
            read_to_end: true,
            drained: false,
            ticking: false,
            yielded: false,
        }
    }

    /// Whether the connection sits between requests with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty() && self.start == self.end && self.discard == 0 && self.fwd.is_none()
    }

    pub fn is_lingering(&self) -> bool {
        self.state == State::Lingering
    }

    /// Handles readiness of the client socket (`readable`) or of the upstream socket
    /// (`up_ready`). Returns false when the connection must be closed now.
    pub fn drive(
        &mut self,
        ctx: &mut WorkerCtx<'_>,
        readable: Readable,
        up_ready: Option<(bool, bool, bool)>,
    ) -> bool {
        if readable != Readable::Tick {
            self.last_active = ctx.now;
        }
        self.ticking = false;
        self.yielded = false;
        match readable {
            Readable::No | Readable::Tick => {}
            Readable::Yes => self.want_read = true,
            Readable::ToEnd => {
                self.want_read = true;
                self.read_to_end = true;
            }
        }
        if let (Some(f), Some((r, w, c))) = (self.fwd.as_mut(), up_ready) {
            f.ready(r, w, c);
        }
        if self.state == State::Lingering {
            return self.linger();
        }
        if let Some(alive) = self.follow_splice(ctx) {
            return alive;
        }
        loop {
            let mut progress = false;
            if self.rbuf.is_empty() && self.want_read {
                self.rbuf = ctx.spare_bufs.pop().unwrap_or_else(|| vec![0; READ_BUF]);
            }
            match self.fill() {
                Ok(p) => progress |= p,
                Err(_) => return false,
            }
            match self.process(ctx) {
                Some(p) => progress |= p,
                None => return false,
            }
            let before = self.out.pending();
            match self.out.flush(&self.sock, ctx.io, ctx.probe) {
                Ok(Flushed::All | Flushed::Cold) => self.blocked_on_write = false,
                Ok(Flushed::Full) => self.blocked_on_write = true,
                Ok(Flushed::Budget) => {
                    // The rest at the worker's next turn, after its other connections.
                    self.blocked_on_write = false;
                    self.yielded = true;
                    return true;
                }
                Err(_) => return false,
            }
            progress |= self.out.pending() != before;
            if self.out.is_empty() && self.splice_candidate(ctx) {
                if self.probe_for_splice() {
                    // Everything else is ready: one more read of each side proves it empty (a
                    // short read may also stop at an urgent mark, inside a segment).
                    progress = true;
                } else if self.offer_splice(ctx) {
                    // Both directions are the kernel's now: only their ends are watched.
                    return self.follow_splice(ctx).unwrap_or(true);
                }
            }
            if self.out.is_empty() {
                if let Some(f) = self.fwd.as_mut()
                    && f.wants_client_shutdown()
                {
                    sys::shutdown_write(self.sock.as_raw_fd());
                }
                if self.state == State::Closing {
                    // Linger only when input may still be unread: closing with unread data
                    // would reset the connection and could destroy the last response.
                    if self.start == self.end && self.discard == 0 && !self.unread_input {
                        return false;
                    }
                    return self.begin_linger();
                }
                if self.eof && self.fwd.is_none() {
                    // Everything answered that could be: a partial request at EOF is dropped.
                    return false;
                }
            }
            if !progress {
                self.rest(ctx);
                return true;
            }
        }
    }

    /// A tunnel could be offered to the kernel splice, but for the sockets' last reads.
    fn splice_candidate(&self, ctx: &WorkerCtx<'_>) -> bool {
        self.fwd.as_ref().is_some_and(|f| f.splice_ready())
            && self.start == self.end
            && !self.eof
            && self.state == State::Open
            && self.registered
            && ctx.up.as_ref().is_some_and(|u| u.splicer.is_some())
    }

    /// Asks for one more read of each side whose last read was not EAGAIN. True if any.
    fn probe_for_splice(&mut self) -> bool {
        let up = self.fwd.as_mut().is_some_and(|f| f.probe_upstream());
        if !self.drained {
            self.want_read = true;
            return true;
        }
        up
    }

    /// Offers a splice candidate whose sockets both read EAGAIN last to the kernel. True when
    /// both directions are spliced (the client is not read again).
    fn offer_splice(&mut self, ctx: &mut WorkerCtx<'_>) -> bool {
        let (Some(f), Some(up)) = (self.fwd.as_mut(), ctx.up.as_ref()) else {
            return false;
        };
        let Some(splicer) = up.splicer else {
            return false;
        };
        f.can_splice() && f.start_splice(&self.sock, ctx.token, splicer, up.registry, ctx.stats)
    }

    /// Follows a spliced tunnel. Some(alive) when the drive ends here (both directions are
    /// spliced, or the tunnel is over); None to go on in user space.
    fn follow_splice(&mut self, ctx: &mut WorkerCtx<'_>) -> Option<bool> {
        let f = self.fwd.as_mut()?;
        if !f.spliced() {
            return None;
        }
        let step = f.splice_step(&self.sock, self.read_total);
        self.ticking = f.splice_draining();
        if let Step::Pending = step {
            return f.spliced_both().then_some(true);
        }
        self.end_exchange_as_is(ctx);
        Some(false)
    }

    /// Ends the exchange where it stands (logged with what was sent so far); the connection
    /// closes after it.
    fn end_exchange_as_is(&mut self, ctx: &mut WorkerCtx<'_>) {
        if let Some(f) = self.fwd.take() {
            let (status, bytes) = f.outcome();
            self.end_exchange(
                f,
                Answered {
                    status,
                    bytes,
                    close: true,
                },
                ctx,
            );
        }
        self.ticking = false;
    }

    /// This connection's tunnel is spliced in the kernel (at least partly).
    pub fn is_spliced(&self) -> bool {
        self.fwd.as_ref().is_some_and(|f| f.spliced())
    }

    /// A spliced tunnel has been draining for a while: the sweep polls it.
    pub fn splice_stalled(&self) -> bool {
        self.fwd.as_ref().is_some_and(|f| f.splice_stalled())
    }

    /// How this connection's spliced tunnel is doing (default: no tunnel spliced).
    pub fn splice_health(&mut self, now: Instant) -> crate::forward::SpliceHealth {
        match self.fwd.as_mut() {
            Some(f) => f.splice_health(&self.sock, self.read_total, now),
            None => crate::forward::SpliceHealth::default(),
        }
    }

    /// The upstream timeout passed with no response: answer 504. Returns false to close.
    pub fn upstream_timeout(
        &mut self,
        ctx: &mut WorkerCtx<'_>,
        timeout: std::time::Duration,
    ) -> bool {
        let Some(f) = &self.fwd else { return true };
        if !f.timed_out(ctx.now, timeout) {
            return true;
        }
        let sent = f.sent_client();
        let Some(f) = self.fwd.take() else {
            return true;
        };
        if sent {
            let (status, bytes) = f.outcome();
            let a = Answered {
                status,
                bytes,
                close: true,
            };
            self.log_forwarded(&f.log, &a, ctx);
        } else {
            let a = answer::gateway_error(504, ctx.date, false, f.log.minor, &mut self.out);
            self.log_forwarded(&f.log, &a, ctx);
        }
        if let Some(up) = ctx.up.as_mut() {
            if !sent {
                up.pool.timed_out();
            }
            f.finish(up.pool, up.registry);
        }
        if sent {
            return false;
        }
        self.state = State::Closing;
        self.unread_input = true;
        self.drive(ctx, Readable::No, None)
    }

    /// An idle connection (everything answered and sent, nothing buffered) gives its read
    /// buffer back to the worker: an idle keep-alive connection then costs its `Conn` alone
    /// (about 600 bytes), not a touched 8 KiB buffer too.
    fn rest(&mut self, ctx: &mut WorkerCtx<'_>) {
        if self.start == self.end
            && !self.rbuf.is_empty()
            && self.state == State::Open
            && self.fwd.is_none()
            && self.out.is_empty()
        {
            let buf = std::mem::take(&mut self.rbuf);
            (self.start, self.end) = (0, 0);
            if buf.len() == READ_BUF && ctx.spare_bufs.len() < SPARE_BUFS {
                ctx.spare_bufs.push(buf);
            }
        }
    }

    /// Reads what is available (up to the cap). Ok(true) if anything arrived.
    fn fill(&mut self) -> io::Result<bool> {
        let mut got = false;
        while self.want_read
            && !self.eof
            && self.end - self.start < READ_CAP
            && self.state == State::Open
        {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.rbuf.len() && self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end == self.rbuf.len() {
                // A long head or a body: grow (the buffer is zeroed once, not per read).
                let grown = (self.rbuf.len() * 2).min(READ_CAP);
                if grown <= self.end {
                    break;
                }
                self.rbuf.resize(grown, 0);
            }
            let room = self.rbuf.len() - self.end;
            match self.sock.read(&mut self.rbuf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.read_total += n as u64;
                    // One read per round: the caller answers what arrived before reading
                    // again. A short read from a TCP socket means its queue was empty (Linux
                    // copies until the buffer is full or no segment is left), so reading stops
                    // until the next edge: no EAGAIN read per request. Unless the peer may have
                    // closed: then read on until EAGAIN or EOF.
                    // (Not `drained`, which only EAGAIN proves: a read also stops short at an
                    // urgent mark, and the splice must not start inside a segment.)
                    self.want_read = n == room || self.read_to_end;
                    self.drained = false;
                    self.end += n;
                    got = true;
                    break;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.want_read = false;
                        self.drained = true;
                        self.read_to_end = false;
                        break;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
        Ok(got)
    }

    /// Parses and answers buffered requests while output has room; pumps the exchange in
    /// progress. Some(progress), or None to close the connection at once.
    fn process(&mut self, ctx: &mut WorkerCtx<'_>) -> Option<bool> {
        let mut progress = false;
        while self.state == State::Open && self.out.pending() < OUT_HIGH {
            if self.fwd.is_some() {
                if !self.pump(ctx)? {
                    break;
                }
                progress = true;
                continue;
            }
            let avail = self.end - self.start;
            if self.discard > 0 {
                let k = (avail as u64).min(self.discard);
                if k == 0 {
                    break;
                }
                self.discard -= k;
                self.start += k as usize;
                progress = true;
                continue;
            }
            if avail == 0 {
                break;
            }
            let buf = &self.rbuf[self.start..self.end];
            match request::parse(buf) {
                Ok(None) => {
                    self.head_since.get_or_insert(ctx.now);
                    if self.eof {
                        self.start = self.end;
                    }
                    break;
                }
                Ok(Some(head)) => {
                    self.head_since = None;
                    progress = true;
                    let host = answer::route(&head, ctx.table);
                    let mut actx = answer::Ctx {
                        date: ctx.date,
                        path_buf: ctx.path_buf,
                        forward: ctx.up.as_ref().is_some_and(|u| u.upstream.enabled)
                            || host.is_some_and(|h| h.settings.upstream.is_some()),
                    };
                    let Some(a) = answer::answer(&head, host, &mut actx, &mut self.out) else {
                        // Not a static hit: forward it.
                        let up = ctx.up.as_mut()?;
                        let fallback = up.upstream.addr.to_string();
                        let mut req =
                            self.forward_request(&head, host.map(|h| h.name.clone()), &fallback);
                        if let Some(h) = host {
                            req.upstream = h.settings.upstream;
                            req.extra_headers = h.settings.headers.clone();
                        }
                        self.start += head.len;
                        match Exchange::start(req, up) {
                            Ok(x) => self.fwd = Some(Box::new(x)),
                            Err(_) => {
                                up.pool.failed();
                                // The body was not read: skip it, or close when it cannot be
                                // skipped, so it is never parsed as a request.
                                let keep =
                                    head.keep_alive && !head.chunked && !head.expect_continue;
                                let a = answer::gateway_error(
                                    502,
                                    ctx.date,
                                    keep,
                                    head.minor,
                                    &mut self.out,
                                );
                                self.finish_request(&head, &a, host, ctx, true);
                                if let Framing::Length(n) = head.framing() {
                                    self.discard = n;
                                }
                                if a.close {
                                    self.state = State::Closing;
                                    self.unread_input = true;
                                }
                            }
                        }
                        continue;
                    };
                    self.finish_request(&head, &a, host, ctx, false);
                    if let Framing::Length(n) = head.framing() {
                        self.discard = n;
                    }
                    self.start += head.len;
                    if a.close {
                        self.state = State::Closing;
                        self.unread_input =
                            head.framing() == Framing::Chunked || head.expect_continue;
                    }
                }
                Err(e) => {
                    answer::bad_head(e.status(), ctx.date, &mut self.out);
                    self.state = State::Closing;
                    self.unread_input = true;
                    self.start = self.end;
                    progress = true;
                }
            }
        }
        Some(progress)
    }

    /// Counts and logs a request answered here (`forwarded`: it was meant for the upstream).
    fn finish_request(
        &self,
        head: &Head<'_>,
        a: &Answered,
        host: Option<&std::sync::Arc<crate::vhosts::Host>>,
        ctx: &WorkerCtx<'_>,
        forwarded: bool,
    ) {
        ctx.stats.request(a.status, a.bytes, forwarded);
        if let Some(h) = host {
            h.stats
                .request(!forwarded && matches!(a.status, 200 | 206 | 304), a.bytes);
            if let Some(log) = &h.log {
                log.record(&record(head, a, self.peer, ctx.clf_time));
            }
        }
    }

    fn forward_request(
        &self,
        head: &Head<'_>,
        host: Option<String>,
        fallback_host: &str,
    ) -> Request<'static> {
        let raw = &self.rbuf[self.start..self.start + head.len];
        let mut up_head = Vec::with_capacity(head.len + 128);
        proxy::upstream_request(raw, head, self.peer.ip(), fallback_host, &mut up_head);
        let m = head.method_bytes;
        Request {
            head: up_head,
            upstream: None,
            extra_headers: Vec::new(),
            framing: head.framing(),
            idempotent: matches!(head.method(), Method::Get | Method::Head)
                || matches!(m, b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"),
            client_minor: head.minor,
            client_keep: head.keep_alive,
            head_req: head.method() == Method::Head,
            upgrade: head.upgrade,
            log: LogFields {
                method: cut(m),
                target: cut(head.target),
                minor: head.minor,
                referer: head.referer.map(cut),
                user_agent: head.user_agent.map(cut),
                host,
            },
            _marker: std::marker::PhantomData,
        }
    }

    /// Pumps the exchange. Some(true): it finished (the connection goes on with the next
    /// request); Some(false): waiting; None: close the client now.
    fn pump(&mut self, ctx: &mut WorkerCtx<'_>) -> Option<bool> {
        let up = ctx.up.as_mut()?;
        let f = self.fwd.as_mut()?;
        let mut consumed = 0;
        let step = f.pump(
            &self.rbuf[self.start..self.end],
            &mut consumed,
            self.eof,
            &mut self.out,
            up,
            ctx.date,
        );
        self.start += consumed;
        match step {
            // Client bytes moved upstream count as progress: the read side may have stopped at
            // its cap and must be read again (edge-triggered: no new event would come).
            Step::Pending => Some(consumed > 0),
            Step::Abort => {
                // Send what arrived, then close: the short body shows the truncation.
                self.end_exchange_as_is(ctx);
                self.state = State::Closing;
                Some(true)
            }
            Step::Done {
                status,
                bytes,
                close_client,
            } => {
                let f = self.fwd.take()?;
                self.end_exchange(
                    f,
                    Answered {
                        status,
                        bytes,
                        close: close_client,
                    },
                    ctx,
                );
                if close_client {
                    self.state = State::Closing;
                    self.unread_input = true;
                }
                Some(true)
            }
            Step::Fail(status) => {
                let f = self.fwd.take()?;
                let a = answer::gateway_error(status, ctx.date, false, f.log.minor, &mut self.out);
                self.end_exchange(f, a, ctx);
                self.state = State::Closing;
                self.unread_input = true;
                Some(true)
            }
        }
    }

    /// Logs an exchange that is over and gives its upstream connection back (or closes it).
    fn end_exchange(&self, f: Box<Exchange>, a: Answered, ctx: &mut WorkerCtx<'_>) {
        self.log_forwarded(&f.log, &a, ctx);
        if let Some(up) = ctx.up.as_mut() {
            f.finish(up.pool, up.registry);
        }
    }

    fn log_forwarded(&self, l: &LogFields, a: &Answered, ctx: &WorkerCtx<'_>) {
        self.log_exchange(l, a, ctx.stats, ctx.table, ctx.clf_time);
    }

    /// Counts and logs an exchange with the upstream that is over, for whatever reason.
    pub fn log_exchange(
        &self,
        l: &LogFields,
        a: &Answered,
        stats: &crate::stats::Stats,
        table: &HostTable,
        clf_time: &str,
    ) {
        stats.request(a.status, a.bytes, true);
        let host = l
            .host
            .as_deref()
            .and_then(|n| table.find(Some(n.as_bytes())));
        if let Some(h) = host {
            h.stats.request(false, a.bytes);
        }
        if let Some(log) = host.and_then(|h| h.log.as_ref()) {
            log.record(&Record {
                client: self.peer.ip(),
                time: clf_time,
                method: &l.method,
                target: &l.target,
                minor: l.minor,
                status: a.status,
                bytes: a.bytes,
                referer: l.referer.as_deref(),
                user_agent: l.user_agent.as_deref(),
            });
        }
    }

    /// All output written: shut the write side and drain input briefly, so the client gets
    /// the last response before the close (no RST on unread data).
    fn begin_linger(&mut self) -> bool {
        sys::shutdown_write(self.sock.as_raw_fd());
        self.state = State::Lingering;
        self.linger()
    }

    fn linger(&mut self) -> bool {
        let mut scratch = [0u8; 4096];
        loop {
            match self.sock.read(&mut scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

fn record<'a>(h: &Head<'a>, a: &Answered, peer: SocketAddr, time: &'a str) -> Record<'a> {
    Record {
        client: peer.ip(),
        time,
        method: h.method_bytes,
        target: h.target,
        minor: h.minor,
        status: a.status,
        bytes: a.bytes,
        referer: h.referer,
        user_agent: h.user_agent,
    }
}
