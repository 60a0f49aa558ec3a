//! A worker: one thread, one mio event loop, its own listeners; a connection is served by the
//! worker that accepted it until it closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::accesslog::clf_time;
use crate::conn::{Conn, WorkerCtx};
use crate::http::date::DateCache;
use crate::out::IoModel;
use crate::vhosts::Registry;

pub const WAKER: Token = Token(usize::MAX);
/// How long a closing connection may linger to drain the client's input.
const LINGER: Duration = Duration::from_secs(2);

/// Settings every worker reads.
#[derive(Clone, Debug)]
pub struct Limits {
    pub io: IoModel,
    pub inactivity: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub drain: Duration,
}

/// State shared by the workers and the main thread.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub limits: Limits,
    pub open: AtomicUsize,
    pub stop: AtomicBool,
}

pub struct Worker {
    pub poll: Poll,
    pub waker: Arc<Waker>,
}

impl Worker {
    pub fn new() -> std::io::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Worker { poll, waker })
    }

    pub fn run(
        mut self,
        listeners: Vec<std::net::TcpListener>,
        shared: Arc<Shared>,
    ) -> std::io::Result<()> {
        let mut listeners: Vec<TcpListener> =
            listeners.into_iter().map(TcpListener::from_std).collect();
        let nl = listeners.len();
        for (i, l) in listeners.iter_mut().enumerate() {
            self.poll
                .registry()
                .register(l, Token(i), Interest::READABLE)?;
        }
        let limits = shared.limits.clone();
        let mut conns: Slab<Conn> = Slab::with_capacity(1024);
        let mut events = Events::with_capacity(1024);
        let mut date = DateCache::default();
        let mut clf = String::new();
        let mut clf_secs = u64::MAX;
        let mut table_gen = shared.registry.generation();
        let mut table = shared.registry.table();
        let mut path_buf = Vec::with_capacity(256);
        let mut last_sweep = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        let mut fresh: Vec<usize> = Vec::new();
        loop {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            date.now();
            if date.secs() != clf_secs {
                clf_secs = date.secs();
                clf = clf_time(clf_secs);
            }
            let g = shared.registry.generation();
            if g != table_gen {
                table_gen = g;
                table = shared.registry.table();
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    continue;
                }
                if t.0 < nl {
                    if drain_deadline.is_none() {
                        fresh.clear();
                        accept(
                            &mut listeners[t.0],
                            &mut conns,
                            &self.poll,
                            nl,
                            &shared,
                            now,
                            &mut fresh,
                        );
                        // Deferred accept: the request is usually there already; answer it
                        // now instead of after another epoll round.
                        for &key in &fresh {
                            let Some(conn) = conns.get_mut(key) else {
                                continue;
                            };
                            let mut ctx = WorkerCtx {
                                table: &table,
                                date: date.now(),
                                clf_time: &clf,
                                io: limits.io,
                                now,
                                path_buf: &mut path_buf,
                            };
                            if !conn.drive(&mut ctx, true) {
                                close(&mut conns, key, &shared);
                            } else if conn.blocked_on_write {
                                watch_writes(&self.poll, &mut conns, key, nl, &shared);
                            }
                        }
                    }
                    continue;
                }
                let key = t.0 - nl;
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                let mut ctx = WorkerCtx {
                    table: &table,
                    date: date.now(),
                    clf_time: &clf,
                    io: limits.io,
                    now,
                    path_buf: &mut path_buf,
                };
                if !conn.drive(
                    &mut ctx,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ) {
                    close(&mut conns, key, &shared);
                } else if conn.blocked_on_write {
                    watch_writes(&self.poll, &mut conns, key, nl, &shared);
                }
            }
            if shared.stop.load(Ordering::Acquire) && drain_deadline.is_none() {
                for l in &mut listeners {
                    let _ = self.poll.registry().deregister(l);
                }
                listeners.clear();
                drain_deadline = Some(now + limits.drain);
            }
            if now.duration_since(last_sweep) >= Duration::from_millis(500)
                || drain_deadline.is_some()
            {
                last_sweep = now;
                let expired: Vec<usize> = conns
                    .iter()
                    .filter(|(_, c)| {
                        let idle = now.duration_since(c.last_active);
                        (c.is_lingering() && idle >= LINGER)
                            || idle >= limits.inactivity
                            || c.head_since
                                .is_some_and(|s| now.duration_since(s) >= limits.header_timeout)
                            || (drain_deadline.is_some() && c.is_idle())
                    })
                    .map(|(k, _)| k)
                    .collect();
                for k in expired {
                    close(&mut conns, k, &shared);
                }
            }
            if let Some(d) = drain_deadline
                && (conns.is_empty() || now >= d)
            {
                return Ok(());
            }
        }
    }
}

/// Watch writability only once a write has blocked (big bodies, slow readers): most
/// connections never need it, and registering it costs an event per connection.
fn watch_writes(poll: &Poll, conns: &mut Slab<Conn>, key: usize, nl: usize, shared: &Shared) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    if conn.watching_writes {
        return;
    }
    conn.watching_writes = true;
    if poll
        .registry()
        .reregister(
            &mut conn.sock,
            Token(key + nl),
            Interest::READABLE | Interest::WRITABLE,
        )
        .is_err()
    {
        close(conns, key, shared);
    }
}

fn accept(
    l: &mut TcpListener,
    conns: &mut Slab<Conn>,
    poll: &Poll,
    nl: usize,
    shared: &Shared,
    now: Instant,
    fresh: &mut Vec<usize>,
) {
    loop {
        match l.accept() {
            Ok((mut sock, peer)) => {
                if shared.open.load(Ordering::Relaxed) >= shared.limits.max_connections {
                    drop(sock); // over the limit: refuse by closing at once
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let entry = conns.vacant_entry();
                let token = Token(entry.key() + nl);
                if poll
                    .registry()
                    .register(&mut sock, token, Interest::READABLE)
                    .is_err()
                {
                    continue;
                }
                shared.open.fetch_add(1, Ordering::Relaxed);
                fresh.push(entry.key());
                entry.insert(Conn::new(sock, peer, now));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: log and let the next readiness retry.
                tracing::warn!("accept: {e}");
                return;
            }
        }
    }
}

/// Closing the socket removes it from the epoll set (no epoll_ctl needed).
fn close(conns: &mut Slab<Conn>, key: usize, shared: &Shared) {
    if conns.try_remove(key).is_some() {
        shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}
