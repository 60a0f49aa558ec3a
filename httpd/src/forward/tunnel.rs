//! An upgraded connection (after 101): a byte pipe between the client and the upstream, in user
//! space, or handed over to the kernel (`--ebpf-splice on`) once both of its buffers are empty.
//! Its kernel state lives here and in [`super::splice`]; the connection only asks the tunnel
//! to move, offers it the handover, and follows its end.
//!
//! ```text
//!  user space --buffers empty, both reads EAGAIN--> kernel (both ways, or upstream to client)
//!      |                                              |
//!      +--both sides closed (FIN each way)--> closed <--+ (every byte before each FIN queued)
//! ```

use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::Registry;
use mio::net::TcpStream;

use super::error::ProxyError;
use super::pool::Pool;
use super::splice::{Drain, DrainState, Joined, Link, Splicer};
use super::upsock::{Got, LastRead, Outbox, UpReady, UpSock};
use super::{CLIENT_HIGH, LogFields, READ_CHUNK};
use crate::http::proxy;
use crate::out::OutQueue;
use crate::stats::Stats;
use crate::sys::{self, TcpCounters};

use super::UP_BUF;
/// Checks of a draining spliced tunnel at every turn of the loop before the sweep takes over.
const FAST_DRAIN_POLLS: u32 = 200;

/// How a turn of a tunnel ended.
#[derive(Debug)]
pub enum TunnelStep {
    /// Still open.
    Open,
    /// Both sides closed and every byte went through.
    Closed { bytes: u64 },
    /// A socket failed: close the connection after what was sent.
    Failed(ProxyError),
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

/// The client side of a tunnel, as its connection sees it.
pub struct ClientEnd<'a> {
    pub sock: &'a TcpStream,
    /// Its poll token.
    pub token: usize,
    /// Bytes ever read from it.
    pub read_total: u64,
    /// It sent its FIN (read EOF).
    pub eof: bool,
}

/// The tunnel handed over to the kernel.
struct Kernel {
    _link: Link,
    /// Upstream to client: always in the kernel.
    u2c: Drain,
    /// Client to upstream, when in the kernel too (else it stays in user space).
    c2u: Option<Drain>,
    /// A FIN arrived and its direction is not drained yet: check again soon.
    draining: bool,
    /// Checks in a row that found it still draining.
    drain_polls: u32,
    /// Bytes received on both sockets when last looked at (for the inactivity timeout).
    seen: u64,
    /// Since when a direction holds more than `splice::BACKLOG_MAX` in the kernel.
    over_since: Option<Instant>,
    /// Bytes sent to the client in user space before the handover.
    bytes_before: u64,
}

pub struct Tunnel {
    up: UpSock,
    to_up: Outbox,
    from_up: Vec<u8>,
    /// Bytes from the upstream to the client (after the 101 head).
    bytes: u64,
    /// Our write sides shut: towards the upstream, towards the client.
    up_shut: bool,
    client_shut: bool,
    kernel: Option<Kernel>,
    /// The handover was tried (once).
    offered: bool,
    pub log: LogFields,
}

/// What an offer of the handover did.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not possible (buffers not empty, a side closing, or the kernel refused): go on in user
    /// space.
    No,
    /// Read the client once more first (its last read was not EAGAIN); the upstream is read
    /// again too when needed.
    ReadFirst,
    /// Handed over; true when both directions are the kernel's (the client is not read again).
    Done(bool),
}

impl Tunnel {
    pub(super) fn new(
        up: UpSock,
        to_up: Outbox,
        from_up: Vec<u8>,
        bytes: u64,
        log: LogFields,
    ) -> Tunnel {
        Tunnel {
            up,
            to_up,
            from_up,
            bytes,
            up_shut: false,
            client_shut: false,
            kernel: None,
            offered: false,
            log,
        }
    }

    pub fn ready(&mut self, r: UpReady) {
        self.up.ready(r);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Moves bytes both ways in user space (the client-to-upstream direction only, when the
    /// other is in the kernel). `input`: the client's unread bytes, `*consumed` advanced.
    pub fn pump(
        &mut self,
        input: &[u8],
        consumed: &mut usize,
        client_eof: bool,
        out: &mut OutQueue,
        registry: &Registry,
    ) -> TunnelStep {
        loop {
            let mut moved = false;
            let avail = &input[*consumed..];
            let room = UP_BUF.saturating_sub(self.to_up.len());
            if room > 0 && !avail.is_empty() {
                let n = avail.len().min(room);
                self.to_up.push(&avail[..n]);
                *consumed += n;
                moved = true;
            }
            match self
                .up
                .write_out(&mut self.to_up, registry, self.kernel.is_some())
            {
                Ok(m) => moved |= m,
                Err(e) => return TunnelStep::Failed(ProxyError::upstream_io(&e)),
            }
            if client_eof && self.to_up.is_empty() && *consumed == input.len() && !self.up_shut {
                self.up_shut = true;
                let _ = self.up.sock.shutdown(Shutdown::Write);
            }
            if self.kernel.is_none()
                && self.up.can_read()
                && out.pending() < CLIENT_HIGH
                && self.from_up.len() < READ_CHUNK + proxy::MAX_RESPONSE_HEAD
            {
                match self.up.read(&mut self.from_up, READ_CHUNK) {
                    Ok(Got::Bytes(_) | Got::Eof) => moved = true,
                    Ok(Got::Nothing) => {}
                    Err(e) => return TunnelStep::Failed(ProxyError::upstream_io(&e)),
                }
            }
            if !self.from_up.is_empty() {
                let chunk = std::mem::take(&mut self.from_up);
                self.bytes += chunk.len() as u64;
                out.push_bytes(chunk);
                moved = true;
            }
            if self.up.eof() && client_eof && self.up_shut {
                return TunnelStep::Closed { bytes: self.bytes };
            }
            if !moved {
                return TunnelStep::Open;
            }
        }
    }

    /// The upstream closed and everything it sent is queued for the client: the client's
    /// write side may be shut once the output drains (once).
    pub fn wants_client_shutdown(&mut self) -> bool {
        if self.up.eof() && !self.client_shut {
            self.client_shut = true;
            return true;
        }
        false
    }

    /// In the kernel (at least the upstream-to-client direction).
    pub fn in_kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// Both directions are in the kernel: the connection must not read the client any more.
    pub fn all_in_kernel(&self) -> bool {
        self.kernel.as_ref().is_some_and(|k| k.c2u.is_some())
    }

    /// Draining after a FIN: poll again at the next turn of the loop (about a millisecond), for
    /// the first checks; after that (the receiver is slow, or gone), `stalled` says so and the
    /// worker's sweep polls it.
    pub fn draining(&self) -> bool {
        self.kernel
            .as_ref()
            .is_some_and(|k| k.draining && k.drain_polls < FAST_DRAIN_POLLS)
    }

    /// Draining for longer than the fast polls.
    pub fn stalled(&self) -> bool {
        self.kernel
            .as_ref()
            .is_some_and(|k| k.draining && k.drain_polls >= FAST_DRAIN_POLLS)
    }

    /// Offers the handover to the kernel, once, when the client's buffers are empty (`client`
    /// read EAGAIN last: `client_drained`) and so are the tunnel's.
    pub fn offer(
        &mut self,
        client: &ClientEnd<'_>,
        client_drained: bool,
        splicer: &Arc<Splicer>,
        registry: &Registry,
        stats: &Stats,
    ) -> Offer {
        let ready = !self.offered
            && self.to_up.is_empty()
            && self.from_up.is_empty()
            && !self.up.eof()
            && !self.up_shut
            && !self.client_shut
            && !client.eof;
        if !ready {
            return Offer::No;
        }
        // Only EAGAIN proves no segment is half read (a short read may also stop at an urgent
        // mark): one more read of each side whose last read was not EAGAIN.
        let up_unread = self.up.last_read != LastRead::Empty;
        if up_unread {
            self.up.want_read();
        }
        if !client_drained || up_unread {
            return Offer::ReadFirst;
        }
        Offer::Done(self.hand_over(client, splicer, registry, stats))
    }

    /// Joins both sockets to the tunnel maps; true when both directions are spliced.
    fn hand_over(
        &mut self,
        client: &ClientEnd<'_>,
        splicer: &Arc<Splicer>,
        registry: &Registry,
        stats: &Stats,
    ) -> bool {
        self.offered = true;
        // Each side's queued total before any redirected byte can join it.
        let (Ok(c), Ok(u)) = (
            sys::tcp_counters(client.sock),
            sys::tcp_counters(&self.up.sock),
        ) else {
            return false;
        };
        let (link, both) = match splicer.join(client.sock, &self.up.sock) {
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
        let _ = sys::watch_hangup_only(registry, &self.up.sock, self.up.token().0, false);
        self.up.watching_writes = false;
        if both {
            let _ = sys::watch_hangup_only(registry, client.sock, client.token, false);
        }
        self.kernel = Some(Kernel {
            _link: link,
            u2c: Drain::new(&c),
            c2u: both.then(|| Drain::new(&u)),
            draining: false,
            drain_polls: 0,
            seen: c.bytes_received + u.bytes_received + c.bytes_acked + u.bytes_acked,
            over_since: None,
            bytes_before: self.bytes,
        });
        both
    }

    /// Follows the tunnel in the kernel to its end: when a side's FIN arrived and everything
    /// before it is queued on the other socket, shut that socket's write side. Closed when
    /// both directions are over (the client-to-upstream one may be in user space: `pump`).
    pub fn follow(&mut self, client: &ClientEnd<'_>) -> TunnelStep {
        if self.kernel.is_none() {
            return TunnelStep::Open;
        }
        let (c, u) = match self.counters(client) {
            Ok(both) => both,
            Err(e) => return TunnelStep::Failed(ProxyError::upstream_io(&e)),
        };
        let Some(k) = self.kernel.as_mut() else {
            return TunnelStep::Open;
        };
        k.draining = false;
        if !k.u2c.done {
            let state = k.u2c.step(
                (&self.up.sock, &u),
                self.up.read_total,
                self.up_shut,
                (client.sock, &c),
            );
            self.bytes = k.bytes_before + k.u2c.moved;
            match state {
                DrainState::Open => {}
                DrainState::Draining => k.draining = true,
                DrainState::Drained => {
                    // X's FIN is in: its counters are final, whatever the order they were read.
                    let n = k.u2c.doubled(
                        (&u, self.up.read_total, self.up_shut),
                        (&c, self.client_shut),
                    );
                    if n > 0 {
                        return doubled_abort(client.sock, &self.up.sock, n);
                    }
                    sys::shutdown_write(client.sock.as_raw_fd());
                    k.u2c.done = true;
                    self.client_shut = true;
                    // Everything the upstream sent went to the client.
                    self.up.last_read = LastRead::Eof;
                }
            }
        }
        if let Some(d) = k.c2u.as_mut()
            && !d.done
        {
            match d.step(
                (client.sock, &c),
                client.read_total,
                self.client_shut,
                (&self.up.sock, &u),
            ) {
                DrainState::Open => {}
                DrainState::Draining => k.draining = true,
                DrainState::Drained => {
                    let n = d.doubled(
                        (&c, client.read_total, self.client_shut),
                        (&u, self.up_shut),
                    );
                    if n > 0 {
                        return doubled_abort(client.sock, &self.up.sock, n);
                    }
                    let _ = self.up.sock.shutdown(Shutdown::Write);
                    d.done = true;
                    self.up_shut = true;
                }
            }
        }
        k.drain_polls = if k.draining { k.drain_polls + 1 } else { 0 };
        if k.u2c.done && k.c2u.as_ref().is_some_and(|d| d.done) {
            return TunnelStep::Closed { bytes: self.bytes };
        }
        TunnelStep::Open
    }

    /// Both sockets' byte counters (client, upstream), or the error either socket has.
    fn counters(&self, client: &ClientEnd<'_>) -> std::io::Result<(TcpCounters, TcpCounters)> {
        for s in [client.sock, &self.up.sock] {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
        }
        Ok((
            sys::tcp_counters(client.sock)?,
            sys::tcp_counters(&self.up.sock)?,
        ))
    }

    /// Whether bytes moved through the tunnel in the kernel since the last call, and whether
    /// one of its directions holds more than `splice::BACKLOG_MAX` inside the kernel.
    pub fn health(&mut self, client: &ClientEnd<'_>, now: Instant) -> SpliceHealth {
        let Some(k) = self.kernel.as_mut() else {
            return SpliceHealth::default();
        };
        // The client twice, around the upstream: each direction compares its receiver's
        // counters with its sender's read after them (see Drain::doubled).
        let (Ok(c), Ok(u), Ok(c_after)) = (
            sys::tcp_counters(client.sock),
            sys::tcp_counters(&self.up.sock),
            sys::tcp_counters(client.sock),
        ) else {
            return SpliceHealth::default();
        };
        // Bytes arriving, or bytes leaving (a slow reader draining its queue).
        let total = c.bytes_received + u.bytes_received + c.bytes_acked + u.bytes_acked;
        let moved = total != k.seen;
        k.seen = total;
        let mut backlog = k.u2c.backlog(&u, self.up.read_total, self.up_shut, &c);
        let mut doubled = k.u2c.doubled(
            (&u, self.up.read_total, self.up_shut),
            (&c, self.client_shut),
        );
        if let Some(d) = &k.c2u {
            backlog = backlog.max(d.backlog(&c, client.read_total, self.client_shut, &u));
            doubled += d.doubled(
                (&c_after, client.read_total, self.client_shut),
                (&u, self.up_shut),
            );
        }
        if doubled > 0 {
            reset_doubled(client.sock, &self.up.sock, doubled);
        }
        let overloaded = if backlog > super::splice::BACKLOG_MAX {
            now.duration_since(*k.over_since.get_or_insert(now)) >= super::splice::BACKLOG_GRACE
        } else {
            k.over_since = None;
            false
        };
        SpliceHealth {
            moved,
            overloaded,
            doubled,
        }
    }

    /// Closes the upstream side: a tunnel's connection never goes back to the pool.
    pub fn finish(self, pool: &mut Pool, bufs: &mut Vec<Vec<u8>>) {
        pool.release(self.up.slot);
        super::exchange::recycle(self.to_up.into_buf(), bufs);
        super::exchange::recycle(self.log.into_buf(), bufs);
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

/// A tunnel reset because the kernel delivered `n` bytes twice.
fn doubled_abort(client: &TcpStream, upstream: &TcpStream, n: u64) -> TunnelStep {
    reset_doubled(client, upstream, n);
    TunnelStep::Failed(ProxyError::UpstreamIo(std::io::ErrorKind::InvalidData))
}
