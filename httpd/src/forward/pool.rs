//! The upstream connections of a worker: a pool of idle keep-alive connections and one poll
//! token per connection for its whole life.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::Upstream;
use crate::stats::Stats;

/// Idle upstream connections kept per worker.
const POOL_MAX: usize = 64;

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

    pub(super) fn opened(&self) {
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
    pub(super) fn checkout(
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

    pub(super) fn give_back(
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
    pub(super) fn release(&mut self, slot: usize) {
        if self.slots.contains(slot) {
            self.slots.remove(slot);
            self.stats.upstream_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}
