//! One client connection: read, parse, answer in order (pipelining), forward misses to the
//! upstream, write, keep alive. Driven by the worker's event loop (edge-triggered), never
//! blocking.
//!
//! What the connection is doing is its [`Phase`]:
//!
//! ```text
//!  Requests --a miss--> Forwarding --done--> Requests
//!     |                     |--101--> Tunnel --both sides closed--> Closing
//!     |                     \--failed--> Closing (an error page, or the cut response)
//!     \--error, Connection: close, EOF--> Closing --output written--> Lingering | closed
//! ```

use std::io::{self, Read};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::accesslog::Record;
use crate::answer::{self, Answered};
use crate::forward::exchange::Turn;
use crate::forward::tunnel::{ClientEnd, Offer};
use crate::forward::{
    Exchange, LogFields, Progress, ProxyError, Request, Slot, SpliceHealth, Tunnel, TunnelStep,
    UpCtx, UpReady,
};
use crate::http::exchange::ClientRequest;
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
/// A client socket's read interest: data, and urgent data (EPOLLPRI), after which a read can
/// be short with bytes still queued, so the connection reads on to EAGAIN.
pub const CLIENT_READ: Interest = Interest::READABLE.add(Interest::PRIORITY);
/// How long a closing connection may linger to drain the client's input.
const LINGER: Duration = Duration::from_secs(2);

/// What woke a connection up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The client socket's event (`Readable::No`: writable only).
    Client(Readable),
    /// The upstream socket's event.
    Upstream(UpReady),
    /// No event: the worker drives it again (it yielded at the write budget, a tunnel in
    /// the kernel is draining, a cold send ended). Not activity.
    Tick,
}

/// What the client socket's event said about reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    No,
    /// Bytes arrived; the peer has not closed.
    Yes,
    /// Read until EAGAIN or EOF: the peer closed (or errored, or sent urgent data), or no
    /// event said (a connection just accepted).
    ToEnd,
}

/// How a drive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// Keep the connection; drive it again on its next event, or sooner.
    Open(Again),
    /// Close it now.
    Close,
}

/// When to drive an open connection again without an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    OnEvent,
    /// Its flush stopped at the write budget: at the next turn, after a poll that does not
    /// wait.
    NextTurn,
    /// Its tunnel is draining in the kernel (no event comes when a queue empties): at the
    /// next turn of the loop, about a millisecond.
    Soon,
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
    /// The listeners, in the order of `Conn::listener`.
    pub listeners: &'a [crate::listen::ListenerInfo],
    /// The port of HTTPS redirects (the first TLS listener's; None: no TLS listener).
    pub https_port: Option<u16>,
    /// The upstream side: None when no upstream is configured.
    pub up: Option<UpCtx<'a>>,
}

/// Where the parts of a finished exchange or tunnel go back to: its upstream connection, its
/// small buffers, its box.
struct Spare<'a> {
    pool: &'a mut crate::forward::Pool,
    registry: &'a Registry,
    bufs: &'a mut Vec<Vec<u8>>,
    slots: &'a mut crate::forward::Slots,
}

/// What the connection is doing.
enum Phase {
    /// Reading request heads: answering them here (static hits, errors) or starting an
    /// exchange.
    Requests,
    /// An exchange with the upstream is in progress; no later request is parsed meanwhile.
    Forwarding(Box<Slot>),
    /// An upgraded connection: bytes both ways until both sides close.
    Tunnel(Box<Tunnel>),
    /// Close once the output queue is empty.
    Closing,
    /// Write side shut; discarding input until EOF or the linger deadline.
    Lingering,
}

/// What the client socket's reads said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastRead {
    Data,
    /// EAGAIN: no segment is half read (a tunnel may go to the kernel).
    Empty,
    /// EOF.
    Eof,
}

/// How the socket is registered with the worker's poll.
#[derive(Debug, Default, Clone, Copy)]
struct Registration {
    /// Registered at all (not before its first drive).
    registered: bool,
    /// Registered for writability.
    watching_writes: bool,
    /// A write hit EAGAIN: writability must be watched.
    blocked_on_write: bool,
}

/// A closed connection's last sendfile webroot, whose pages the kernel may still hold for it
/// (unacknowledged, or unread by a peer on this host): held (and so its lease) for
/// the worker's `RETIRE_MAX`, or, once withdrawn, until they are delivered.
pub struct Retired {
    pub root: std::sync::Arc<httpd_common::webroot::Webroot>,
    pub local: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
}

pub struct Conn {
    sock: TcpStream,
    /// The client: the socket's peer, or what a PROXY protocol header said.
    peer: SocketAddr,
    /// HTTPS: TLS between the socket and the buffers.
    tls: Option<Box<crate::tls::Session>>,
    /// The index of the listener it came from (`WorkerCtx::listeners`).
    listener: u16,
    /// The write side is to be shut once the TLS bytes queued (close_notify) are written.
    shut_pending: bool,
    /// A PROXY protocol header is expected before anything else.
    proxy_header: bool,
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    out: OutQueue,
    /// Request body bytes still to skip.
    discard: u64,
    phase: Phase,
    last_read: LastRead,
    /// The socket may have unread input (no EAGAIN since the last readable edge).
    want_read: bool,
    /// A short read does not end reading: the peer's FIN may be queued behind the data (a
    /// read returns the data and takes the FIN, and no event comes for it).
    read_to_end: bool,
    /// The last request's body was not consumed (chunked, or Expect: 100-continue).
    unread_input: bool,
    reg: Registration,
    last_active: Instant,
    /// When the current (incomplete) request head began arriving.
    head_since: Option<Instant>,
    /// Bytes ever read from the client.
    read_total: u64,
    /// The request being answered, for the duration histograms.
    timing: Option<Timing>,
}

/// When a request began and, once its answer is decided, under what it is counted: observed
/// when the answer's last bytes are handed to the kernel (or the connection closes).
#[derive(Debug, Clone, Copy)]
struct Timing {
    start: Instant,
    outcome: Option<crate::stats::Outcome>,
}

/// How a round of `process` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Moved,
    Still,
    Close,
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
    pub fn retire(&mut self) -> Option<Retired> {
        let root = self.out.release_zero_copy()?;
        let local = self.sock.local_addr().ok()?;
        Some(Retired {
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

    /// A connection accepted on listener `index` (`l`). Err: its TLS state could not be made.
    pub fn new(
        sock: TcpStream,
        peer: SocketAddr,
        now: Instant,
        index: usize,
        l: &crate::listen::ListenerInfo,
    ) -> io::Result<Conn> {
        let tls = match &l.tls {
            Some(cfg) => Some(crate::tls::Session::new(cfg)?),
            None => None,
        };
        // The handshake and a PROXY header are part of the head for the header timeout.
        let head_since = (tls.is_some() || l.proxy.is_some()).then_some(now);
        Ok(Conn {
            sock,
            peer,
            tls,
            listener: u16::try_from(index).unwrap_or(u16::MAX),
            shut_pending: false,
            proxy_header: l.proxy.is_some(),
            rbuf: Vec::new(),
            start: 0,
            end: 0,
            out: OutQueue::default(),
            discard: 0,
            phase: Phase::Requests,
            last_read: LastRead::Data,
            want_read: true,
            read_to_end: true,
            unread_input: false,
            reg: Registration::default(),
            last_active: now,
            head_since,
            read_total: 0,
            timing: None,
        })
    }

    /// The TLS version and cipher suite, for the log.
    fn tls_info(&self) -> Option<(&'static str, &'static str)> {
        self.tls.as_ref().and_then(|t| t.info())
    }

    /// TLS bytes wait to be written.
    fn tls_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.pending_output())
    }

    /// Input may be waiting: on the socket, or decrypted in the TLS session.
    fn wants_input(&self) -> bool {
        self.want_read || self.tls.as_ref().is_some_and(|t| t.wants_input())
    }

    /// The connection is closing: a handshake cut short is counted as failed, a connection
    /// that never sent its PROXY protocol header as refused.
    pub fn closed(&mut self, stats: &crate::stats::Stats) {
        if self.proxy_header {
            // Refused before TLS began: not a handshake failure too.
            stats
                .proxy_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else if let Some(t) = &mut self.tls {
            t.abandoned(stats);
        }
    }

    /// TLS: queues close_notify before the write side is shut or the connection closed. True
    /// when TLS bytes now wait: flush them first (the caller comes back once they are out).
    fn close_notify(&mut self) -> bool {
        match &mut self.tls {
            Some(t) => {
                t.close_notify();
                t.pending_output()
            }
            None => false,
        }
    }

    /// Whether the connection sits between requests with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty()
            && !self.tls_pending()
            && !self.proxy_header
            && self.start == self.end
            && self.discard == 0
            && matches!(
                self.phase,
                Phase::Requests | Phase::Closing | Phase::Lingering
            )
    }

    /// Whether the sweep should close it: lingering too long, inactive too long (unless
    /// waiting for the upstream, which has its own timeout), a head arriving too slowly, or
    /// idle while the server drains.
    pub fn expired(
        &self,
        now: Instant,
        inactivity: Duration,
        header: Duration,
        draining: bool,
    ) -> bool {
        let idle = now.duration_since(self.last_active);
        let waiting_upstream = self.exchange().is_some_and(|x| x.awaiting_response());
        (matches!(self.phase, Phase::Lingering) && idle >= LINGER)
            || (idle >= inactivity && !waiting_upstream)
            || self
                .head_since
                .is_some_and(|s| now.duration_since(s) >= header)
            || (draining && self.is_idle())
    }

    fn exchange(&self) -> Option<&Exchange> {
        match &self.phase {
            Phase::Forwarding(x) => x.get(),
            _ => None,
        }
    }

    fn tunnel(&mut self) -> Option<&mut Tunnel> {
        match &mut self.phase {
            Phase::Tunnel(t) => Some(t),
            _ => None,
        }
    }

    /// Its exchange waits for a response head past the upstream timeout.
    pub fn upstream_overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.exchange().is_some_and(|x| x.timed_out(now, timeout))
    }

    /// Registers the socket with the poll after its first drive (a connection answered and
    /// closed at once never costs an epoll_ctl), and for writability once a write blocked.
    pub fn sync_poll(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let r = &mut self.reg;
        if !r.registered {
            r.registered = true;
            r.watching_writes = r.blocked_on_write;
            let interest = if r.blocked_on_write {
                CLIENT_READ | Interest::WRITABLE
            } else {
                CLIENT_READ
            };
            registry.register(&mut self.sock, token, interest)
        } else if r.blocked_on_write && !r.watching_writes {
            r.watching_writes = true;
            registry.reregister(&mut self.sock, token, CLIENT_READ | Interest::WRITABLE)
        } else {
            Ok(())
        }
    }

    /// Handles an event. Returns whether to keep the connection, and when to drive it again.
    pub fn drive(&mut self, ctx: &mut WorkerCtx<'_>, ev: Event) -> Drive {
        match ev {
            Event::Tick => {}
            Event::Client(r) => {
                self.last_active = ctx.now;
                match r {
                    Readable::No => {}
                    Readable::Yes => self.want_read = true,
                    Readable::ToEnd => {
                        self.want_read = true;
                        self.read_to_end = true;
                    }
                }
            }
            Event::Upstream(r) => {
                self.last_active = ctx.now;
                match &mut self.phase {
                    Phase::Forwarding(x) => {
                        if let Some(x) = x.get_mut() {
                            x.ready(r);
                        }
                    }
                    Phase::Tunnel(t) => t.ready(r),
                    _ => {}
                }
            }
        }
        if matches!(self.phase, Phase::Lingering) {
            return if self.linger() {
                Drive::Open(Again::OnEvent)
            } else {
                Drive::Close
            };
        }
        if let Some(d) = self.follow_kernel_tunnel(ctx) {
            return d;
        }
        if self.proxy_header {
            if self.rbuf.is_empty() {
                self.rbuf = ctx.spare_bufs.pop().unwrap_or_else(|| vec![0; READ_BUF]);
            }
            match self.read_proxy_header(ctx.stats) {
                Ok(true) => {}
                Ok(false) => return Drive::Open(Again::OnEvent),
                Err(e) => {
                    // Counted when it closes (`closed`), as one that times out is.
                    tracing::debug!("{}: PROXY protocol: {e}", self.peer);
                    return Drive::Close;
                }
            }
        }
        loop {
            let mut moved = false;
            if self.rbuf.is_empty() && self.wants_input() {
                self.rbuf = ctx.spare_bufs.pop().unwrap_or_else(|| vec![0; READ_BUF]);
            }
            let filled = if self.tls.is_some() {
                self.fill_tls(ctx.stats)
            } else {
                self.fill()
            };
            match filled {
                Ok(p) => moved |= p,
                Err(_) => return Drive::Close,
            }
            match self.process(ctx) {
                Round::Moved => moved = true,
                Round::Still => {}
                Round::Close => return Drive::Close,
            }
            let before = self.out.pending();
            let spent = ctx.up.as_mut().map(|u| &mut *u.bufs);
            let flushed = match &mut self.tls {
                None => self.out.flush(&self.sock, ctx.io, ctx.probe, spent),
                Some(t) => {
                    crate::tls::flush(&mut self.out, t, &self.sock, ctx.io, ctx.probe, spent)
                }
            };
            match flushed {
                Ok(Flushed::All | Flushed::Cold) => self.reg.blocked_on_write = false,
                Ok(Flushed::Full) => self.reg.blocked_on_write = true,
                Ok(Flushed::Budget) => {
                    // The rest at the worker's next turn, after its other connections.
                    self.reg.blocked_on_write = false;
                    return Drive::Open(Again::NextTurn);
                }
                Err(_) => return Drive::Close,
            }
            moved |= self.out.pending() != before;
            if self.out.is_empty() && !self.tls_pending() {
                self.observe_answered(ctx.stats);
                match self.output_written(ctx) {
                    ControlFlow::Continue(m) => moved |= m,
                    ControlFlow::Break(d) => return d,
                }
            }
            if !moved {
                self.rest(ctx);
                return Drive::Open(self.again());
            }
        }
    }

    /// Everything queued is written: offer a tunnel to the kernel, shut the client's write
    /// side after a tunnel's last bytes, close or linger when closing. Continue(moved), or Break
    /// with how the drive ends.
    fn output_written(&mut self, ctx: &mut WorkerCtx<'_>) -> ControlFlow<Drive, bool> {
        let mut moved = false;
        if self.shut_pending {
            // The tunnel's close_notify is out: now the FIN.
            self.shut_pending = false;
            sys::shutdown_write(self.sock.as_raw_fd());
        }
        match self.offer_tunnel(ctx) {
            Offer::ReadFirst => moved = true,
            Offer::Done(true) => {
                // Both directions are the kernel's now: only their ends are watched.
                return ControlFlow::Break(
                    self.follow_kernel_tunnel(ctx)
                        .unwrap_or(Drive::Open(Again::OnEvent)),
                );
            }
            Offer::Done(false) | Offer::No => {}
        }
        if let Some(t) = self.tunnel()
            && t.wants_client_shutdown()
        {
            if self.close_notify() {
                self.shut_pending = true;
                return ControlFlow::Continue(true);
            }
            sys::shutdown_write(self.sock.as_raw_fd());
        }
        if matches!(self.phase, Phase::Closing) {
            if self.close_notify() {
                return ControlFlow::Continue(true);
            }
            // Linger only when input may still be unread: closing with unread data would
            // reset the connection and could destroy the last response.
            if self.start == self.end && self.discard == 0 && !self.unread_input {
                return ControlFlow::Break(Drive::Close);
            }
            return ControlFlow::Break(self.begin_linger());
        }
        if self.last_read == LastRead::Eof && matches!(self.phase, Phase::Requests) {
            if self.close_notify() {
                return ControlFlow::Continue(true);
            }
            // Everything answered that could be: a partial request at EOF is dropped.
            return ControlFlow::Break(Drive::Close);
        }
        ControlFlow::Continue(moved)
    }

    fn again(&mut self) -> Again {
        match self.tunnel() {
            Some(t) if t.draining() => Again::Soon,
            _ => Again::OnEvent,
        }
    }

    /// Offers a tunnel whose buffers are empty to the kernel (`--ebpf-splice on`).
    fn offer_tunnel(&mut self, ctx: &mut WorkerCtx<'_>) -> Offer {
        let client_idle = self.start == self.end && self.reg.registered;
        if self.tls.is_some() {
            // The kernel cannot splice TLS (that needs kTLS): tunnels stay in user space.
            return Offer::No;
        }
        let Some(up) = ctx.up.as_ref() else {
            return Offer::No;
        };
        let Some(splicer) = up.splicer else {
            return Offer::No;
        };
        if !client_idle {
            return Offer::No;
        }
        let drained = self.last_read == LastRead::Empty;
        let end = client_end(&self.sock, ctx.token, self.read_total, self.last_read);
        let Phase::Tunnel(t) = &mut self.phase else {
            return Offer::No;
        };
        let offer = t.offer(&end, drained, splicer, up.registry, ctx.stats);
        if offer == Offer::ReadFirst && !drained {
            self.want_read = true;
        }
        offer
    }

    /// Follows a tunnel in the kernel. Some(drive) when the drive ends here (both directions
    /// are the kernel's, or the tunnel is over); None to go on in user space.
    fn follow_kernel_tunnel(&mut self, ctx: &mut WorkerCtx<'_>) -> Option<Drive> {
        let end = client_end(&self.sock, ctx.token, self.read_total, self.last_read);
        let Phase::Tunnel(t) = &mut self.phase else {
            return None;
        };
        if !t.in_kernel() {
            return None;
        }
        let step = t.follow(&end);
        let all = t.all_in_kernel();
        match step {
            TunnelStep::Open if all => Some(Drive::Open(self.again())),
            TunnelStep::Open => None,
            TunnelStep::Closed { .. } | TunnelStep::Failed(_) => {
                self.end_forwarding(ctx, None);
                Some(Drive::Close)
            }
        }
    }

    /// Its tunnel is in the kernel (at least partly): the worker checks it regularly.
    pub fn in_kernel(&self) -> bool {
        matches!(&self.phase, Phase::Tunnel(t) if t.in_kernel())
    }

    /// Its tunnel in the kernel has been draining for a while: the sweep polls it.
    pub fn kernel_stalled(&self) -> bool {
        matches!(&self.phase, Phase::Tunnel(t) if t.stalled())
    }

    /// How its tunnel in the kernel is doing (bytes moved count as activity).
    pub fn kernel_health(&mut self, now: Instant, token: usize) -> SpliceHealth {
        let end = client_end(&self.sock, token, self.read_total, self.last_read);
        let health = match &mut self.phase {
            Phase::Tunnel(t) => t.health(&end, now),
            _ => SpliceHealth::default(),
        };
        if health.moved {
            self.last_active = now;
        }
        health
    }

    /// The upstream timeout passed with no response: answer 504.
    pub fn upstream_timeout(&mut self, ctx: &mut WorkerCtx<'_>, timeout: Duration) -> Drive {
        if !self.upstream_overdue(ctx.now, timeout) {
            return Drive::Open(Again::OnEvent);
        }
        self.fail_exchange(ctx, ProxyError::Timeout(timeout));
        self.drive(ctx, Event::Client(Readable::No))
    }

    /// An idle connection (everything answered and sent, nothing buffered) gives its read
    /// buffer back to the worker: an idle keep-alive connection then costs its `Conn` alone
    /// (about 470 bytes), not a touched buffer too.
    fn rest(&mut self, ctx: &mut WorkerCtx<'_>) {
        if self.start == self.end
            && !self.rbuf.is_empty()
            && matches!(self.phase, Phase::Requests)
            && self.out.is_empty()
        {
            let buf = std::mem::take(&mut self.rbuf);
            (self.start, self.end) = (0, 0);
            if buf.len() == READ_BUF && ctx.spare_bufs.len() < SPARE_BUFS {
                ctx.spare_bufs.push(buf);
            }
        }
    }

    /// Reading is over for good (closing, lingering or both directions in the kernel).
    fn reads_stopped(&self) -> bool {
        match &self.phase {
            Phase::Requests | Phase::Forwarding(_) => false,
            Phase::Tunnel(t) => t.all_in_kernel(),
            Phase::Closing | Phase::Lingering => true,
        }
    }

    /// Reads what is available (up to the cap). Ok(true) if anything arrived.
    fn fill(&mut self) -> io::Result<bool> {
        let mut got = false;
        while self.want_read
            && self.last_read != LastRead::Eof
            && self.end - self.start < READ_CAP
            && !self.reads_stopped()
        {
            self.make_room();
            if self.end == self.rbuf.len() {
                break;
            }
            let room = self.rbuf.len() - self.end;
            match self.sock.read(&mut self.rbuf[self.end..]) {
                Ok(0) => self.last_read = LastRead::Eof,
                Ok(n) => {
                    self.read_total += n as u64;
                    // One read per round: the caller answers what arrived before reading
                    // again. A short read from a TCP socket means its queue was empty (Linux
                    // copies until the buffer is full or no segment is left), so reading stops
                    // until the next edge: no EAGAIN read per request. Unless the peer may have
                    // closed: then read on until EAGAIN or EOF.
                    // (Not `LastRead::Empty`, which only EAGAIN proves: a read also stops
                    // short at an urgent mark, and the kernel must not take over a tunnel
                    // inside a segment.)
                    self.want_read = n == room || self.read_to_end;
                    self.last_read = LastRead::Data;
                    self.end += n;
                    got = true;
                    break;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.want_read = false;
                        self.last_read = LastRead::Empty;
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

    /// [`Conn::fill`] for a TLS connection: plaintext from the session, which reads TLS bytes
    /// from the socket as it needs them (the same rules: stop at a short read unless the
    /// peer may have closed, one batch of plaintext per round).
    fn fill_tls(&mut self, stats: &crate::stats::Stats) -> io::Result<bool> {
        let mut got = false;
        while self.wants_input()
            && self.last_read != LastRead::Eof
            && self.end - self.start < READ_CAP
            && !self.reads_stopped()
            && !got
        {
            self.make_room();
            if self.end == self.rbuf.len() {
                break;
            }
            let Some(tls) = self.tls.as_mut() else {
                break;
            };
            match tls.read(
                &self.sock,
                &mut self.rbuf[self.end..],
                self.want_read,
                stats,
            ) {
                Ok(crate::tls::Got::Plain(n)) => {
                    self.end += n;
                    got = true;
                }
                Ok(crate::tls::Got::Socket { n, short }) => {
                    self.read_total += n as u64;
                    self.last_read = LastRead::Data;
                    if short && !self.read_to_end {
                        self.want_read = false;
                    }
                }
                Ok(crate::tls::Got::Eof) => self.last_read = LastRead::Eof,
                // The decrypted bytes are all taken and the socket is drained (a short read
                // said so): no read until the next edge.
                Ok(crate::tls::Got::Nothing) => break,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.want_read = false;
                        self.last_read = LastRead::Empty;
                        self.read_to_end = false;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
        Ok(got)
    }

    /// Moves buffered bytes to the front or grows the buffer, so a read has room (up to the
    /// cap).
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.rbuf.len() && self.start > 0 {
            self.rbuf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.rbuf.len() {
            // A long head or a body: grow (the buffer is zeroed once, not per read).
            let grown = (self.rbuf.len() * 2).min(READ_CAP);
            if grown > self.end {
                self.rbuf.resize(grown, 0);
            }
        }
    }

    /// Reads the PROXY protocol header this listener expects. Ok(true) once it is read (the
    /// client address is the one it names; bytes after it are the connection's own, handed to
    /// TLS or left for the parser); Ok(false) while it is incomplete; Err: not a valid header,
    /// or the connection ended first (close).
    fn read_proxy_header(&mut self, stats: &crate::stats::Stats) -> io::Result<bool> {
        loop {
            match crate::proxyproto::parse(&self.rbuf[self.start..self.end]) {
                Ok(crate::proxyproto::Parsed::Done { len, source }) => {
                    self.start += len;
                    if let Some(src) = source {
                        self.peer = src;
                    }
                    self.proxy_header = false;
                    if let Some(t) = self.tls.as_mut() {
                        t.feed(&self.rbuf[self.start..self.end], &self.sock, stats)?;
                        self.start = self.end;
                    }
                    return Ok(true);
                }
                Ok(crate::proxyproto::Parsed::Incomplete) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.last_read == LastRead::Eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.make_room();
            if self.end == self.rbuf.len() {
                return Err(io::Error::other("PROXY protocol header too long"));
            }
            let mut s = &self.sock;
            match s.read(&mut self.rbuf[self.end..]) {
                Ok(0) => self.last_read = LastRead::Eof,
                Ok(n) => {
                    self.read_total += n as u64;
                    self.end += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_read = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Parses and answers buffered requests while output has room; moves the exchange or the
    /// tunnel in progress.
    fn process(&mut self, ctx: &mut WorkerCtx<'_>) -> Round {
        let mut moved = false;
        while self.out.pending() < OUT_HIGH {
            let step = match self.phase {
                Phase::Forwarding(_) => self.pump(ctx),
                Phase::Tunnel(_) => self.pump_tunnel(ctx),
                Phase::Requests => self.next_request(ctx),
                Phase::Closing | Phase::Lingering => Round::Still,
            };
            match step {
                Round::Moved => moved = true,
                Round::Still => break,
                Round::Close => return Round::Close,
            }
        }
        if moved { Round::Moved } else { Round::Still }
    }

    /// Skips a body, or parses and answers (or starts forwarding) the next buffered request.
    fn next_request(&mut self, ctx: &mut WorkerCtx<'_>) -> Round {
        let avail = self.end - self.start;
        if self.discard > 0 {
            let k = (avail as u64).min(self.discard);
            if k == 0 {
                return Round::Still;
            }
            self.discard -= k;
            self.start += k as usize;
            return Round::Moved;
        }
        if avail == 0 {
            return Round::Still;
        }
        // The head borrows the read buffer while the connection changes: hold it aside.
        let rbuf = std::mem::take(&mut self.rbuf);
        let round = self.answer_head(&rbuf[self.start..self.end], ctx);
        self.rbuf = rbuf;
        round
    }

    /// Parses the request at the front of `buf` and answers it here, or starts forwarding it.
    fn answer_head(&mut self, buf: &[u8], ctx: &mut WorkerCtx<'_>) -> Round {
        let head = match request::parse(buf) {
            Ok(None) => {
                self.head_since.get_or_insert(ctx.now);
                if self.last_read == LastRead::Eof {
                    self.start = self.end;
                }
                return Round::Still;
            }
            Ok(Some(head)) => head,
            Err(e) => {
                let a = answer::bad_head(e.status(), ctx.date, &mut self.out);
                self.count_answered(&a, ctx, false);
                self.close_after(true);
                self.start = self.end;
                return Round::Moved;
            }
        };
        self.head_since = None;
        let host = answer::route(
            &head,
            ctx.table,
            ctx.listeners.get(usize::from(self.listener)),
        );
        let mut actx = answer::Ctx {
            date: ctx.date,
            path_buf: ctx.path_buf,
            forward: ctx.up.as_ref().is_some_and(|u| u.upstream.enabled)
                || host.is_some_and(|h| h.settings.upstream.is_some()),
            tls: self.tls.is_some(),
            https_port: ctx.https_port,
        };
        if let Some(a) = answer::answer(&head, host, &mut actx, &mut self.out) {
            self.finish_request(&head, &a, host, ctx, false);
            if let Framing::Length(n) = head.framing() {
                self.discard = n;
            }
            self.start += head.len;
            if a.close {
                self.close_after(head.framing() == Framing::Chunked || head.expect_continue);
            }
            return Round::Moved;
        }
        // Not a static hit: forward it.
        self.forward(&head, &buf[..head.len], host, ctx)
    }

    /// Starts an exchange for a request that is not a static hit (`raw`: its head).
    fn forward(
        &mut self,
        head: &Head<'_>,
        raw: &[u8],
        host: Option<&std::sync::Arc<crate::vhosts::Host>>,
        ctx: &mut WorkerCtx<'_>,
    ) -> Round {
        let Some(up) = ctx.up.as_mut() else {
            return Round::Close;
        };
        let bufs = (
            up.bufs.pop().unwrap_or_default(),
            up.bufs.pop().unwrap_or_default(),
        );
        let meta = host.map(|h| h.meta.clone());
        let req = self.forward_request(head, raw, meta, up.fallback_host, bufs);
        let len = head.len;
        match Exchange::start(req, up) {
            Ok(x) => {
                self.start += len;
                self.phase = Phase::Forwarding(Slot::holding(x, up.slots));
                self.begin_timing_at(ctx.now, ctx.stats, None);
            }
            Err(e) => {
                ctx.stats.proxy_failed(e.class());
                e.log(
                    head.method_bytes,
                    head.target,
                    host.map_or("-", |h| h.name.as_str()),
                );
                // The body was not read: skip it, or close when it cannot be skipped, so it
                // is never parsed as a request.
                let keep = head.keep_alive && !head.chunked && !head.expect_continue;
                let a =
                    answer::gateway_error(e.status(), ctx.date, keep, head.minor, &mut self.out);
                self.finish_request(head, &a, host, ctx, true);
                if let Framing::Length(n) = head.framing() {
                    self.discard = n;
                }
                self.start += len;
                if a.close {
                    self.close_after(true);
                }
            }
        }
        Round::Moved
    }

    /// Closes once the output is written (`unread`: input may be left unread, so linger).
    fn close_after(&mut self, unread: bool) {
        self.phase = Phase::Closing;
        self.unread_input |= unread;
    }

    /// Counts a request answered here; its duration runs from this turn (the head was
    /// complete in it).
    fn count_answered(&mut self, a: &Answered, ctx: &WorkerCtx<'_>, forwarded: bool) {
        ctx.stats.request(a.status, a.bytes, forwarded);
        let outcome = crate::stats::Outcome::local(a.status);
        self.begin_timing_at(ctx.now, ctx.stats, Some(outcome));
    }

    /// A request begins: its duration runs from `start`. An answer still pending (pipelined)
    /// is observed now.
    fn begin_timing_at(
        &mut self,
        start: Instant,
        stats: &crate::stats::Stats,
        outcome: Option<crate::stats::Outcome>,
    ) {
        self.observe_answered(stats);
        self.timing = Some(Timing { start, outcome });
    }

    /// The request's answer is decided (an exchange or tunnel is over).
    fn decided(&mut self, outcome: crate::stats::Outcome) {
        if let Some(t) = &mut self.timing {
            t.outcome.get_or_insert(outcome);
        }
    }

    /// Observes the duration of the request whose answer is decided, if any: its last bytes
    /// are written (or the connection ends).
    fn observe_answered(&mut self, stats: &crate::stats::Stats) {
        if let Some(Timing {
            start,
            outcome: Some(o),
        }) = self.timing
        {
            self.timing = None;
            stats.observe(o, Instant::now().saturating_duration_since(start));
        }
    }

    /// Counts and logs a request answered here (`forwarded`: it was meant for the upstream).
    fn finish_request(
        &mut self,
        head: &Head<'_>,
        a: &Answered,
        host: Option<&std::sync::Arc<crate::vhosts::Host>>,
        ctx: &WorkerCtx<'_>,
        forwarded: bool,
    ) {
        self.count_answered(a, ctx, forwarded);
        if let Some(h) = host {
            h.stats
                .request(!forwarded && matches!(a.status, 200 | 206 | 304), a.bytes);
            if let Some(log) = &h.log {
                log.record(&record(head, a, self.peer, ctx.clf_time, self.tls_info()));
            }
        }
    }

    /// The request for the upstream: its head rewritten from the parsed one, with what the
    /// exchange and the log need.
    fn forward_request(
        &self,
        head: &Head<'_>,
        raw: &[u8],
        host: Option<std::sync::Arc<crate::vhosts::HostMeta>>,
        fallback_host: &str,
        (mut up_head, log): (Vec<u8>, Vec<u8>),
    ) -> Request {
        up_head.clear();
        up_head.reserve(head.len + 128);
        proxy::upstream_request(
            raw,
            head,
            self.peer.ip(),
            self.tls.is_some(),
            fallback_host,
            &mut up_head,
        );
        let m = head.method_bytes;
        let mut log = LogFields::new(
            log,
            m,
            head.target,
            head.referer,
            head.user_agent,
            head.minor,
            host,
        );
        log.tls = self.tls_info();
        Request {
            head: up_head,
            client: ClientRequest {
                framing: head.framing(),
                minor: head.minor,
                keep_alive: head.keep_alive,
                head: head.method() == Method::Head,
                upgrade: head.upgrade,
            },
            idempotent: matches!(head.method(), Method::Get | Method::Head)
                || matches!(m, b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"),
            log,
        }
    }

    /// Moves the exchange in progress.
    fn pump(&mut self, ctx: &mut WorkerCtx<'_>) -> Round {
        let Some(up) = ctx.up.as_mut() else {
            return Round::Close;
        };
        let Phase::Forwarding(slot) = &mut self.phase else {
            return Round::Still;
        };
        let Some(x) = slot.get_mut() else {
            return Round::Still;
        };
        let mut consumed = 0;
        let progress = x.pump(&mut Turn {
            input: &self.rbuf[self.start..self.end],
            consumed: &mut consumed,
            out: &mut self.out,
            up,
            date: ctx.date,
            now: ctx.now,
        });
        self.start += consumed;
        match progress {
            // Client bytes moved upstream count as progress: the read side may have stopped at
            // its cap and must be read again (edge-triggered: no new event would come).
            Progress::Waiting if consumed > 0 => Round::Moved,
            Progress::Waiting => Round::Still,
            Progress::Upgraded => {
                if let Phase::Forwarding(slot) = std::mem::replace(&mut self.phase, Phase::Requests)
                    && let Some(x) = slot.release(up.slots)
                {
                    self.phase = Phase::Tunnel(Box::new(x.into_tunnel()));
                }
                Round::Moved
            }
            Progress::Done {
                status,
                bytes,
                close_client,
            } => {
                let a = Answered {
                    status,
                    bytes,
                    close: close_client,
                };
                self.end_forwarding(ctx, Some(a));
                if close_client {
                    self.close_after(true);
                }
                Round::Moved
            }
            Progress::Failed(e) => {
                self.fail_exchange(ctx, e);
                Round::Moved
            }
        }
    }

    /// Moves the tunnel's bytes in user space.
    fn pump_tunnel(&mut self, ctx: &mut WorkerCtx<'_>) -> Round {
        let Some(up) = ctx.up.as_ref() else {
            return Round::Close;
        };
        let eof = self.last_read == LastRead::Eof;
        let Phase::Tunnel(t) = &mut self.phase else {
            return Round::Still;
        };
        let mut consumed = 0;
        let step = t.pump(
            &self.rbuf[self.start..self.end],
            &mut consumed,
            eof,
            &mut self.out,
            up.registry,
        );
        self.start += consumed;
        match step {
            TunnelStep::Open if consumed > 0 => Round::Moved,
            TunnelStep::Open => Round::Still,
            TunnelStep::Closed { .. } => {
                self.end_forwarding(ctx, None);
                self.close_after(true);
                Round::Moved
            }
            TunnelStep::Failed(e) => {
                tracing::debug!("tunnel ended: {e}");
                // Send what arrived, then close.
                self.end_forwarding(ctx, None);
                self.close_after(false);
                Round::Moved
            }
        }
    }

    /// An exchange that cannot complete: an error page when nothing of the response was sent
    /// (502, 504, 400), else the connection closes after what was sent (the truncation shows).
    /// Logged once here, counted by class.
    fn fail_exchange(&mut self, ctx: &mut WorkerCtx<'_>, e: ProxyError) {
        let Some(up) = ctx.up.as_mut() else {
            return;
        };
        if !matches!(self.phase, Phase::Forwarding(_)) {
            return;
        }
        let Phase::Forwarding(slot) = std::mem::replace(&mut self.phase, Phase::Requests) else {
            return;
        };
        let Some(x) = slot.release(up.slots) else {
            return;
        };
        ctx.stats.proxy_failed(e.class());
        e.log(x.log.method(), x.log.target(), x.log.host_name());
        let sent = x.sent_client();
        self.decided(crate::stats::Outcome::exchange(sent));
        let a = if sent {
            let (status, bytes) = x.outcome();
            Answered {
                status,
                bytes,
                close: true,
            }
        } else {
            answer::gateway_error(e.status(), ctx.date, false, x.log.minor, &mut self.out)
        };
        self.log_exchange(&x.log, &a, ctx.stats, ctx.clf_time);
        x.finish(up.pool, up.registry, up.bufs);
        self.close_after(!sent);
    }

    /// Ends the exchange or tunnel in progress: logged (`a`, or with what was sent so far),
    /// its upstream connection pooled or closed; the phase goes back to `Requests`.
    fn end_forwarding(&mut self, ctx: &mut WorkerCtx<'_>, a: Option<Answered>) {
        match ctx.up.as_mut() {
            Some(up) => {
                let spare = Spare {
                    pool: &mut *up.pool,
                    registry: up.registry,
                    bufs: &mut *up.bufs,
                    slots: &mut *up.slots,
                };
                self.settle(Phase::Requests, a, ctx.stats, ctx.clf_time, spare);
            }
            None => self.phase = Phase::Requests,
        }
    }

    /// At close: an exchange or tunnel cut short (client gone, timeout, drain) is still
    /// logged, and its upstream connection closed.
    pub fn end_cut_short(
        &mut self,
        stats: &crate::stats::Stats,
        clf_time: &str,
        pool: &mut crate::forward::Pool,
        registry: &Registry,
        bufs: &mut Vec<Vec<u8>>,
        slots: &mut crate::forward::Slots,
    ) {
        let spare = Spare {
            pool,
            registry,
            bufs,
            slots,
        };
        self.settle(Phase::Closing, None, stats, clf_time, spare);
        // Whatever was answered is over: counted with its duration so far.
        self.observe_answered(stats);
    }

    /// Ends the exchange or tunnel in progress (any other phase is left as it is): logged
    /// with `a`, or with what was sent so far, and its upstream connection pooled or closed;
    /// the connection goes on in `next`.
    fn settle(
        &mut self,
        next: Phase,
        a: Option<Answered>,
        stats: &crate::stats::Stats,
        clf_time: &str,
        spare: Spare<'_>,
    ) {
        let Spare {
            pool,
            registry,
            bufs,
            slots,
        } = spare;
        match std::mem::replace(&mut self.phase, next) {
            Phase::Forwarding(slot) => {
                let Some(x) = slot.release(slots) else {
                    return;
                };
                self.decided(crate::stats::Outcome::exchange(x.sent_client()));
                let a = a.unwrap_or_else(|| {
                    let (status, bytes) = x.outcome();
                    Answered {
                        status,
                        bytes,
                        close: true,
                    }
                });
                self.log_exchange(&x.log, &a, stats, clf_time);
                x.finish(pool, registry, bufs);
            }
            Phase::Tunnel(t) => {
                let a = Answered {
                    status: 101,
                    bytes: t.bytes(),
                    close: true,
                };
                self.decided(crate::stats::Outcome::Tunnel);
                self.log_exchange(&t.log, &a, stats, clf_time);
                t.finish(pool, bufs);
            }
            other => self.phase = other,
        }
    }

    /// Counts and logs an exchange with the upstream that is over, for whatever reason, on
    /// the host it was routed to.
    fn log_exchange(
        &self,
        l: &LogFields,
        a: &Answered,
        stats: &crate::stats::Stats,
        clf_time: &str,
    ) {
        stats.request(a.status, a.bytes, true);
        let Some(h) = &l.host else {
            return;
        };
        h.stats.request(false, a.bytes);
        if let Some(log) = &h.log {
            log.record(&Record {
                client: self.peer.ip(),
                time: clf_time,
                method: l.method(),
                target: l.target(),
                minor: l.minor,
                status: a.status,
                bytes: a.bytes,
                referer: l.referer(),
                user_agent: l.user_agent(),
                tls: l.tls,
            });
        }
    }

    /// All output written: shut the write side and drain input briefly, so the client gets
    /// the last response before the close (no RST on unread data).
    fn begin_linger(&mut self) -> Drive {
        sys::shutdown_write(self.sock.as_raw_fd());
        self.phase = Phase::Lingering;
        if self.linger() {
            Drive::Open(Again::OnEvent)
        } else {
            Drive::Close
        }
    }

    /// Reads and drops input; false once the client closed (or failed).
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

/// The client side of a tunnel (a function of the fields, not of `Conn`: the tunnel is
/// borrowed from the connection's phase at the same time).
fn client_end(
    sock: &TcpStream,
    token: usize,
    read_total: u64,
    last_read: LastRead,
) -> ClientEnd<'_> {
    ClientEnd {
        sock,
        token,
        read_total,
        eof: last_read == LastRead::Eof,
    }
}

fn record<'a>(
    h: &Head<'a>,
    a: &Answered,
    peer: SocketAddr,
    time: &'a str,
    tls: Option<(&'static str, &'static str)>,
) -> Record<'a> {
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
        tls,
    }
}
