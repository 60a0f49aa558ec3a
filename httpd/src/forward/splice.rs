//! Splicing tunnels in the kernel (`--ebpf-splice on`): once an upgraded connection is a plain
//! byte pipe, its client and upstream sockets join the `TUNNELS` SOCKHASH and the stream
//! verdict `httpd_splice` sends what each receives out of the other, with no copy to user
//! space. httpd then only watches for the ends.
//!
//! The handover keeps byte order: every byte httpd read is written out before the sockets
//! join (the caller checks that its buffers are empty), and bytes that arrived since stay in the
//! receive queue, which the verdict drains first when it is poked (SO_RCVLOWAT). Both sockets
//! become redirect *targets* (`TARGETS`, no program) before either gets the verdict, so a
//! verdict never runs without its target; if the second socket cannot join (its peer just
//! closed), only the upstream-to-client direction is spliced and the other stays in user
//! space.
//!
//! The teardown loses no byte: when one side's FIN arrives, httpd shuts the other side's write
//! only once everything received before that FIN is queued on the other socket, which it sees
//! in TCP_INFO and SIOCOUTQ (see [`Drain`]).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap, MapData, SockHash};
use httpd_common::ebpf::SockKey;
use mio::net::TcpStream;

use crate::sys::{self, TcpCounters};
use httpd_common::ebpf::ip_u32;

/// The tunnel maps, shared by the workers.
pub struct Splicer {
    maps: Mutex<Maps>,
    /// The sk_msg fast path's source address: an upstream socket from it is in `SOCKS`, where
    /// sk_msg would deliver the app's bytes behind the verdict's back.
    fast_source: Option<std::net::Ipv4Addr>,
    /// The maps refused an update once (already said in the log).
    refused: std::sync::atomic::AtomicBool,
}

pub struct Maps {
    pub tunnels: SockHash<MapData, SockKey>,
    pub targets: SockHash<MapData, SockKey>,
    pub peers: HashMap<MapData, SockKey, SockKey>,
}

/// How far a handover went.
pub enum Joined {
    /// Nothing changed: the tunnel stays in user space.
    No,
    /// Upstream-to-client is spliced; client-to-upstream stays in user space.
    UpstreamOnly(Link),
    /// Both directions are spliced.
    Both(Link),
}

/// A tunnel's entries in the maps; dropping it removes them. (The sockets themselves leave the
/// SOCKHASHes when they close.)
pub struct Link {
    splicer: Arc<Splicer>,
    client: SockKey,
    upstream: SockKey,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Ok(mut m) = self.splicer.maps.lock() {
            let _ = m.peers.remove(&self.client);
            let _ = m.peers.remove(&self.upstream);
        }
    }
}

fn key(s: &TcpStream) -> Option<SockKey> {
    match (s.local_addr().ok()?, s.peer_addr().ok()?) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => Some(SockKey {
            local_ip: ip_u32(*l.ip()),
            remote_ip: ip_u32(*r.ip()),
            local_port: u32::from(l.port()),
            remote_port: u32::from(r.port()),
        }),
        _ => None,
    }
}

impl Splicer {
    pub fn new(maps: Maps, fast_source: Option<std::net::Ipv4Addr>) -> Splicer {
        Splicer {
            maps: Mutex::new(maps),
            fast_source,
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Hands a tunnel over to the kernel. The caller has written out everything it read from
    /// either socket and reads neither again in the directions spliced.
    pub fn join(self: &Arc<Self>, client: &TcpStream, upstream: &TcpStream) -> Joined {
        let (Some(kc), Some(ku)) = (key(client), key(upstream)) else {
            return Joined::No;
        };
        if self.fast_source.is_some_and(|ip| ku.local_ip == ip_u32(ip)) {
            return Joined::No;
        }
        let Ok(mut m) = self.maps.lock() else {
            return Joined::No;
        };
        if let Err(e) = m
            .peers
            .insert(kc, ku, 0)
            .and_then(|()| m.peers.insert(ku, kc, 0))
        {
            let _ = m.peers.remove(&kc);
            // Not the tunnel's fault (privileges dropped with --user, map full): say it once.
            if !self
                .refused
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    "tunnel splice: eBPF map update refused ({e}); tunnels stay in user space"
                );
            }
            return Joined::No;
        }
        let link = Link {
            splicer: self.clone(),
            client: kc,
            upstream: ku,
        };
        // Targets first: no program, so nothing changes for either socket yet.
        if m.targets.insert(kc, client.as_raw_fd(), 0).is_err()
            || m.targets.insert(ku, upstream.as_raw_fd(), 0).is_err()
        {
            let _ = m.targets.remove(&kc);
            drop(m);
            return Joined::No;
        }
        if m.tunnels.insert(ku, upstream.as_raw_fd(), 0).is_err() {
            let _ = m.targets.remove(&kc);
            let _ = m.targets.remove(&ku);
            drop(m);
            return Joined::No;
        }
        let both = m.tunnels.insert(kc, client.as_raw_fd(), 0).is_ok();
        drop(m);
        // Bytes that arrived before the verdict was attached wait in the receive queue: have
        // the verdict take them now, ahead of anything later.
        let _ = sys::poke_data_ready(upstream);
        if both {
            let _ = sys::poke_data_ready(client);
            Joined::Both(link)
        } else {
            Joined::UpstreamOnly(link)
        }
    }
}

/// Bytes a spliced direction may hold inside the kernel (received, not yet queued on the
/// other socket) for longer than `BACKLOG_GRACE` before httpd closes the tunnel. Redirected
/// segments are charged to neither socket: the verdict takes them off the receive queue at
/// once, so the receive window stays open and the kernel applies no backpressure; a reader
/// that stops would let its sender fill memory. (Clamping the sender's window does not help:
/// the window reopens as fast as the verdict consumes.) A fast transfer can hold more for a
/// moment (the kworker that sends redirected segments lags behind the verdict); a reader that
/// stopped holds it for good. The workers check every spliced tunnel every few milliseconds.
pub const BACKLOG_MAX: u64 = 64 << 20;
pub const BACKLOG_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// TCP states (include/net/tcp_states.h).
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

/// One spliced direction, from socket X (where the bytes arrive) to socket Y.
#[derive(Debug)]
pub struct Drain {
    /// Y's queued total (acked + outq) at the handover: what httpd itself had written.
    base_queued: u64,
    /// X's last bytes, read by httpd: X left the SOCKHASH before its verdict saw them.
    tail: Option<Vec<u8>>,
    /// How much of `tail` is written to Y.
    tail_pos: usize,
    /// Bytes moved from X to Y so far (for the access log).
    pub moved: u64,
    /// Y's write side is shut: this direction is over.
    pub done: bool,
}

/// Where a direction stands.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainState {
    /// X has not finished sending.
    Open,
    /// X's FIN arrived; bytes before it are still on their way into Y.
    Draining,
    /// Everything X sent is queued on Y: shut Y's write side now.
    Drained,
}

/// X ended by FIN: states a socket reaches only after receiving its peer's FIN (CLOSE too,
/// once its own FIN was sent first and acknowledged; a reset is told apart by SO_ERROR).
pub fn fin_received(x: &TcpCounters, x_shut_by_us: bool) -> bool {
    matches!(
        x.state,
        TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT
    ) || (x.state == TCP_CLOSE && x_shut_by_us)
}

/// Reads `sock` to its end (it has its FIN) without blocking.
fn read_rest(mut sock: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return out,
        }
    }
}

impl Drain {
    /// Bytes X received that are not queued on Y yet: in flight inside the kernel (bytes_received
    /// counts a FIN as one; the tail httpd read itself is not the kernel's).
    pub fn backlog(
        &self,
        x: &TcpCounters,
        x_read: u64,
        x_shut_by_us: bool,
        y: &TcpCounters,
    ) -> u64 {
        let (received, queued) = self.totals(x, x_read, x_shut_by_us, y);
        received.saturating_sub(queued)
    }

    /// Bytes queued on Y beyond what X received: bytes the kernel delivered twice (a
    /// retransmitted segment that partly overlapped what had arrived goes to the verdict
    /// whole: ARCHITECTURE.md, "The tunnel splice"). Meaningful only with Y's counters read
    /// before X's, or after X's FIN (else bytes arriving in between look doubled).
    /// `y_shut_by_us`: httpd shut Y's write side, whose FIN counts one in Y's queued total.
    pub fn doubled(
        &self,
        (x, x_read, x_shut_by_us): (&TcpCounters, u64, bool),
        (y, y_shut_by_us): (&TcpCounters, bool),
    ) -> u64 {
        let (received, queued) = self.totals(x, x_read, x_shut_by_us, y);
        queued
            .saturating_sub(u64::from(y_shut_by_us))
            .saturating_sub(received)
    }

    /// What X received and what Y got queued since the handover, by the kernel.
    fn totals(
        &self,
        x: &TcpCounters,
        x_read: u64,
        x_shut_by_us: bool,
        y: &TcpCounters,
    ) -> (u64, u64) {
        let fin = u64::from(fin_received(x, x_shut_by_us));
        let tail = self.tail.as_ref().map_or(0, |t| t.len() as u64);
        let received = x
            .bytes_received
            .saturating_sub(fin)
            .saturating_sub(x_read)
            .saturating_sub(tail);
        let queued = y
            .queued()
            .saturating_sub(self.base_queued)
            .saturating_sub(self.tail_pos as u64);
        (received, queued)
    }

    /// At the handover, with Y's counters read before X's bytes can be redirected into it.
    pub fn new(y: &TcpCounters) -> Drain {
        Drain {
            base_queued: y.queued(),
            tail: None,
            tail_pos: 0,
            moved: 0,
            done: false,
        }
    }

    /// Moves the direction towards its end. `x_read`: bytes httpd itself read from X before
    /// the handover (it wrote those out itself); `x_shut_by_us`: httpd shut X's write side.
    ///
    /// When X's FIN arrives while X is in the SOCKHASH, its verdict has taken every byte
    /// before it. But when httpd had shut X first, the segment with X's FIN closes X at
    /// once (TIME_WAIT), which takes X out of the SOCKHASH before the verdict sees that
    /// segment's data: httpd reads that tail itself and writes it to Y after the kernel has
    /// queued everything it redirected earlier.
    pub fn step(
        &mut self,
        (xs, x): (&TcpStream, &TcpCounters),
        x_read: u64,
        x_shut_by_us: bool,
        (ys, y): (&TcpStream, &TcpCounters),
    ) -> DrainState {
        self.moved = y.queued().saturating_sub(self.base_queued);
        if !fin_received(x, x_shut_by_us) {
            return DrainState::Open;
        }
        if x.state == TCP_CLOSE && self.tail.is_none() {
            self.tail = Some(read_rest(xs));
        }
        if self.backlog(x, x_read, x_shut_by_us, y) > 0 {
            return DrainState::Draining;
        }
        // The kernel's bytes are all queued on Y: the tail (if any) goes after them.
        let tail = self.tail.as_deref().unwrap_or_default();
        let written_before = self.tail_pos;
        let mut ys = ys;
        while self.tail_pos < tail.len() {
            match ys.write(&tail[self.tail_pos..]) {
                Ok(0) => break,
                Ok(n) => self.tail_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return DrainState::Draining,
                // Y is gone: nothing more can reach it.
                Err(_) => break,
            }
        }
        self.moved += (self.tail_pos - written_before) as u64;
        DrainState::Drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(state: u8, acked: u64, received: u64, outq: u64) -> TcpCounters {
        TcpCounters {
            state,
            bytes_acked: acked,
            bytes_received: received,
            outq,
        }
    }

    /// Y got queued what X received since the handover, no more: nothing doubled; beyond it
    /// (the kernel redirecting an overlapping retransmission whole) is what `doubled` reports.
    #[test]
    fn doubled_bytes_are_what_y_got_beyond_what_x_received() {
        const ESTABLISHED: u8 = 1;
        // At the handover Y had queued 161 bytes (httpd's own), X had received 70 (all read
        // by httpd: x_read).
        let d = Drain::new(&counters(ESTABLISHED, 161, 0, 0));
        let y = |queued: u64| counters(ESTABLISHED, 161 + queued - 1000, 0, 1000);
        let x = |received: u64| counters(ESTABLISHED, 0, 70 + received, 0);
        // In flight: received, not all queued yet.
        assert_eq!(d.backlog(&x(100_000), 70, false, &y(60_000)), 40_000);
        assert_eq!(d.doubled((&x(100_000), 70, false), (&y(60_000), false)), 0);
        assert_eq!(d.doubled((&x(100_000), 70, false), (&y(100_000), false)), 0);
        // httpd shut Y after that: its FIN is one more in Y's queued total, not a byte.
        assert_eq!(d.doubled((&x(100_000), 70, false), (&y(100_001), true)), 0);
        // A segment of 65,483 bytes delivered twice.
        assert_eq!(
            d.doubled((&x(100_000), 70, false), (&y(165_483), false)),
            65_483
        );
        assert_eq!(d.backlog(&x(100_000), 70, false, &y(165_483)), 0);
        // X's FIN counts one in bytes_received, not a byte of data.
        let fin = counters(TCP_CLOSE_WAIT, 0, 70 + 100_000 + 1, 0);
        assert_eq!(d.doubled((&fin, 70, false), (&y(100_000), false)), 0);
        assert_eq!(d.backlog(&fin, 70, false, &y(100_000)), 0);
    }
}
