//! A worker: one thread, one mio event loop, its own listeners; a connection is served by the
//! worker that accepted it until it closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::accesslog::clf_time;
use crate::conn::{Again, Conn, Drive, Event, Readable, Retired, WorkerCtx};
use crate::forward::{Pool, UP_TOKEN_BASE, UpCtx, UpEvent, UpReady};
use crate::http::date::DateCache;
use crate::out::IoModel;
use crate::vhosts::Registry;

pub const WAKER: Token = Token(usize::MAX);
/// How often spliced tunnels are looked at (backpressure, activity).
const SPLICE_CHECK: Duration = Duration::from_millis(5);

/// Settings every worker reads.
#[derive(Clone, Debug)]
pub struct Limits {
    pub io: IoModel,
    pub inactivity: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub drain: Duration,
    pub upstream: Option<crate::forward::Upstream>,
}

/// State shared by the workers and the main thread.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub stats: crate::stats::StatsSet,
    pub limits: Limits,
    pub open: AtomicUsize,
    pub stop: AtomicBool,
    /// The kernel tunnel splice (`--ebpf-splice on` with the programs loaded).
    pub splicer: Option<Arc<crate::forward::splice::Splicer>>,
    /// The cold-send threads of `--io async-sendfile`.
    pub cold: Option<Arc<crate::cold::Pool>>,
    /// What each listener is for, in the order of every worker's listeners.
    pub listeners: Vec<crate::listen::ListenerInfo>,
    /// The port of HTTPS redirects: the first TLS listener's.
    pub https_port: Option<u16>,
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

    /// Runs worker `index` until the stop's drain ends.
    pub fn run(
        mut self,
        listeners: Vec<std::net::TcpListener>,
        shared: Arc<Shared>,
        index: usize,
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
        let mut st = LoopState::new(nl, &shared, &self.waker, index);
        let mut clock = Clock::new(nl, shared.registry.generation());
        let mut events = Events::with_capacity(1024);
        loop {
            let wait = if clock.drain_deadline.is_none() && clock.backlog.contains(&Backlog::More) {
                Duration::ZERO
            } else {
                st.wait()
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                shared.open.fetch_sub(st.conns.len(), Ordering::Relaxed);
                return Err(e);
            }
            let now = Instant::now();
            #[cfg(feature = "failpoints")]
            crate::failpoints::worker_turn(index);
            st.stats.turn();
            st.new_turn(&self.poll, &shared, &mut clock);
            let mut woken = false;
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    woken = true;
                } else if t.0 < nl {
                    if clock.drain_deadline.is_none() {
                        clock.backlog[t.0] = st.accept_and_drive(
                            &mut listeners[t.0],
                            t.0,
                            &self.poll,
                            &shared,
                            &limits,
                            now,
                            &mut clock.fresh,
                        );
                    }
                } else if let Some((key, ready)) = st.classify(ev) {
                    st.drive(&self.poll, &shared, &limits, key, now, ready);
                }
            }
            st.after_events(&self.poll, &shared, &limits, now, woken, &mut clock);
            if st.housekeeping(
                &self.poll,
                &shared,
                &limits,
                now,
                &mut listeners,
                &mut clock,
            ) {
                return Ok(());
            }
        }
    }
}

/// A worker's timers and the listeners' state, between turns of its loop.
struct Clock {
    table_gen: u64,
    last_sweep: Instant,
    last_splice_check: Instant,
    /// Set when the stop began: the listeners are closed and connections end by then.
    drain_deadline: Option<Instant>,
    /// What each listener's last accept left: more to accept at the next turn, or a failure
    /// (EMFILE) retried by the sweep.
    backlog: Vec<Backlog>,
    /// Connections accepted in this turn (reused by `accept_and_drive`).
    fresh: Vec<usize>,
}

impl Clock {
    fn new(listeners: usize, table_gen: u64) -> Clock {
        let now = Instant::now();
        Clock {
            table_gen,
            last_sweep: now,
            last_splice_check: now,
            drain_deadline: None,
            backlog: vec![Backlog::Drained; listeners],
            fresh: Vec::new(),
        }
    }
}

/// What an accept round left on its listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backlog {
    /// Accepted until EAGAIN.
    Drained,
    /// Stopped at the round's budget (TLS handshakes): accept again at the next turn, after
    /// the events of the connections already open.
    More,
    /// accept failed (EMFILE): the sweep retries.
    Failed,
}

/// Connections a TLS listener accepts (and drives, handshake and all) per turn of the loop: a
/// burst of new connections waits its turn instead of holding up the requests of the open
/// ones behind a row of handshakes. Plain listeners accept until EAGAIN.
const TLS_ACCEPTS_PER_TURN: usize = 4;

/// Why a connection is driven.
#[derive(Clone, Copy)]
enum Wake {
    Event(Event),
    /// The sweep found its exchange past the upstream timeout.
    Timeout,
}

/// The worker's state, apart from the poll and the listeners.
struct LoopState {
    conns: Slab<Conn>,
    date: DateCache,
    clf: String,
    clf_secs: u64,
    table: Arc<crate::vhosts::HostTable>,
    path_buf: Vec<u8>,
    /// The Host given to an HTTP/1.0 request forwarded without one: the upstream's address.
    fallback_host: String,
    /// Small buffers of finished exchanges (see `UpCtx::bufs`).
    up_bufs: Vec<Vec<u8>>,
    /// The upstream read buffer (see `UpCtx::scratch`).
    up_scratch: Vec<u8>,
    /// Boxes of finished exchanges (see `forward::Slot`).
    slots: crate::forward::Slots,
    /// Read buffers given back by idle connections (`Conn::rest`).
    spare_bufs: Vec<Vec<u8>>,
    pool: Pool,
    stats: Arc<crate::stats::Stats>,
    nl: usize,
    /// Connections to drive again at the next turn (spliced tunnels draining).
    ticking: Vec<usize>,
    /// Connections that wrote their flush budget and have more: driven again at the next
    /// turn, after a poll that does not wait.
    yielded: Vec<usize>,
    /// Connections whose tunnel is spliced in the kernel (checked every SPLICE_CHECK).
    spliced: Vec<usize>,
    /// Closed connections' sendfile webroots, oldest first (see [`Retired`]).
    retired_recent: std::collections::VecDeque<(Retired, Instant)>,
    /// The same, withdrawn: checked until delivered.
    retired_held: Vec<(Retired, Instant)>,
    /// Buffer for asking whether bytes are cached (`cold::resident`).
    probe: Box<[u8]>,
    /// This worker's cold reads (`--io async-sendfile`).
    reads: Option<crate::cold::Reads>,
}

impl LoopState {
    fn new(nl: usize, shared: &Shared, waker: &Arc<Waker>, index: usize) -> LoopState {
        let stats = shared.stats.worker(index);
        LoopState {
            conns: Slab::with_capacity(1024),
            date: DateCache::default(),
            clf: String::new(),
            clf_secs: u64::MAX,
            table: shared.registry.table(),
            path_buf: Vec::with_capacity(256),
            fallback_host: shared
                .limits
                .upstream
                .map(|u| u.addr.to_string())
                .unwrap_or_default(),
            up_bufs: Vec::new(),
            up_scratch: Vec::new(),
            slots: Default::default(),
            spare_bufs: Vec::new(),
            pool: Pool::new(stats.clone()),
            stats,
            nl,
            ticking: Vec::new(),
            yielded: Vec::new(),
            spliced: Vec::new(),
            retired_recent: Default::default(),
            retired_held: Vec::new(),
            probe: vec![0; crate::cold::PROBE_MAX].into_boxed_slice(),
            reads: shared
                .cold
                .as_ref()
                .map(|p| crate::cold::Reads::new(p.clone(), crate::cold::Done::new(waker.clone()))),
        }
    }

    /// At each wakeup: the clock for Date and the access log, and the host table if it changed.
    fn new_turn(&mut self, poll: &Poll, shared: &Shared, clock: &mut Clock) {
        self.date.now();
        if self.date.secs() != self.clf_secs {
            self.clf_secs = self.date.secs();
            self.clf = clf_time(self.clf_secs);
        }
        let g = shared.registry.generation();
        if g != clock.table_gen {
            clock.table_gen = g;
            self.table = shared.registry.table();
            self.withdraw(poll, shared, true);
        }
    }

    /// After the events: finished cold reads, connections driven again (yielded, or
    /// draining a spliced tunnel), and the spliced tunnels' check when it is due.
    fn after_events(
        &mut self,
        poll: &Poll,
        shared: &Shared,
        limits: &Limits,
        now: Instant,
        woken: bool,
        clock: &mut Clock,
    ) {
        if woken {
            self.cold_finished(poll, shared, limits, now);
        }
        let again = std::mem::take(&mut self.yielded);
        for key in again.into_iter().chain(std::mem::take(&mut self.ticking)) {
            self.drive(poll, shared, limits, key, now, Wake::Event(Event::Tick));
        }
        if !self.spliced.is_empty() && now.duration_since(clock.last_splice_check) >= SPLICE_CHECK {
            clock.last_splice_check = now;
            self.check_spliced(poll, shared, limits, now);
        }
    }

    /// After the events: the listeners' next accept rounds, the stop (listeners closed, the
    /// drain deadline set), the sweep every 250 ms (withdrawn webroots, stalled listeners,
    /// timeouts), and the end of the drain: true when the worker is done.
    fn housekeeping(
        &mut self,
        poll: &Poll,
        shared: &Shared,
        limits: &Limits,
        now: Instant,
        listeners: &mut Vec<TcpListener>,
        clock: &mut Clock,
    ) -> bool {
        self.accept_backlog(poll, shared, limits, now, listeners, clock);
        if shared.stop.load(Ordering::Acquire) && clock.drain_deadline.is_none() {
            for l in listeners.iter_mut() {
                let _ = poll.registry().deregister(l);
            }
            listeners.clear();
            clock.backlog.fill(Backlog::Drained);
            clock.drain_deadline = Some(now + limits.drain.min(crate::cli::MAX_DURATION));
        }
        if now.duration_since(clock.last_sweep) >= Duration::from_millis(250)
            || clock.drain_deadline.is_some()
        {
            clock.last_sweep = now;
            self.withdraw(poll, shared, false);
            for (i, l) in listeners.iter_mut().enumerate() {
                if clock.backlog.get(i) == Some(&Backlog::Failed) {
                    clock.backlog[i] =
                        self.accept_and_drive(l, i, poll, shared, limits, now, &mut clock.fresh);
                }
            }
            self.expire(poll, shared, limits, now, clock.drain_deadline.is_some());
        }
        if let Some(d) = clock.drain_deadline
            && (self.conns.is_empty() || now >= d)
        {
            // Past the deadline: what is still open is closed (and logged) now.
            let left: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for k in left {
                self.close(poll, k, shared);
            }
            return true;
        }
        false
    }

    /// How long the poll may wait: not at all when connections yielded; a millisecond while a
    /// spliced tunnel drains after a FIN (the kernel sends no event when its queue empties);
    /// a few while tunnels are spliced; else half a second (the sweep).
    fn wait(&self) -> Duration {
        if !self.yielded.is_empty() {
            Duration::ZERO
        } else if !self.ticking.is_empty() {
            Duration::from_millis(1)
        } else if !self.spliced.is_empty() {
            SPLICE_CHECK
        } else {
            Duration::from_millis(500)
        }
    }

    /// The connection an event of a client or upstream socket is for, and what it says.
    /// None for an idle pooled upstream connection (the pool dropped it if it closed).
    fn classify(&mut self, ev: &mio::event::Event) -> Option<(usize, Wake)> {
        let t = ev.token();
        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
        if t.0 >= UP_TOKEN_BASE {
            return match self.pool.event(t, readable) {
                UpEvent::Conn(key) => {
                    let r = UpReady {
                        readable,
                        writable,
                        closed: ev.is_read_closed() || ev.is_error(),
                    };
                    Some((key, Wake::Event(Event::Upstream(r))))
                }
                UpEvent::Idle => None,
            };
        }
        let r = if ev.is_read_closed() || ev.is_error() || ev.is_priority() {
            Readable::ToEnd
        } else if readable {
            Readable::Yes
        } else {
            Readable::No
        };
        Some((t.0 - self.nl, Wake::Event(Event::Client(r))))
    }

    /// The sweep's timeouts: exchanges past the upstream timeout get 504; connections
    /// lingering, inactive, sending a head too slowly, or idle while draining are closed.
    fn expire(
        &mut self,
        poll: &Poll,
        shared: &Shared,
        limits: &Limits,
        now: Instant,
        draining: bool,
    ) {
        if let Some(u) = limits.upstream {
            let waiting: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.upstream_overdue(now, u.timeout))
                .map(|(k, _)| k)
                .collect();
            for key in waiting {
                self.drive(poll, shared, limits, key, now, Wake::Timeout);
            }
        }
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.expired(now, limits.inactivity, limits.header_timeout, draining))
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            self.close(poll, k, shared);
        }
    }

    /// Listeners left with more to accept ([`Backlog::More`]) get their next round.
    fn accept_backlog(
        &mut self,
        poll: &Poll,
        shared: &Shared,
        limits: &Limits,
        now: Instant,
        listeners: &mut [TcpListener],
        clock: &mut Clock,
    ) {
        if clock.drain_deadline.is_some() {
            return;
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            if clock.backlog.get(i) == Some(&Backlog::More) {
                clock.backlog[i] =
                    self.accept_and_drive(l, i, poll, shared, limits, now, &mut clock.fresh);
            }
        }
    }

    /// Accepts what is queued (a TLS listener: a few per turn) and drives each new connection
    /// at once: with deferred accept the request (or the ClientHello) is usually there
    /// already.
    #[allow(clippy::too_many_arguments)]
    fn accept_and_drive(
        &mut self,
        l: &mut TcpListener,
        index: usize,
        poll: &Poll,
        shared: &Shared,
        limits: &Limits,
        now: Instant,
        fresh: &mut Vec<usize>,
    ) -> Backlog {
        fresh.clear();
        let backlog = accept(l, index, &mut self.conns, shared, &self.stats, now, fresh);
        for &key in fresh.iter() {
            self.drive(
                poll,
                shared,
                limits,
                key,
                now,
                Wake::Event(Event::Client(Readable::ToEnd)),
            );
        }
        backlog
    }

    fn drive(
        &mut self,
        poll: &Poll,
        shared: &Shared,
        limits: &Limits,
        key: usize,
        now: Instant,
        wake: Wake,
    ) {
        let nl = self.nl;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut ctx = WorkerCtx {
            table: &self.table,
            date: self.date.current(),
            clf_time: &self.clf,
            io: limits.io,
            now,
            token: client_token(nl, key).0,
            path_buf: &mut self.path_buf,
            spare_bufs: &mut self.spare_bufs,
            probe: &mut self.probe,
            stats: &self.stats,
            listeners: &shared.listeners,
            https_port: shared.https_port,
            up: limits.upstream.map(|u| UpCtx {
                registry: poll.registry(),
                owner: key,
                upstream: u,
                fallback_host: &self.fallback_host,
                pool: &mut self.pool,
                bufs: &mut self.up_bufs,
                scratch: &mut self.up_scratch,
                slots: &mut self.slots,
                splicer: shared.splicer.as_ref(),
            }),
        };
        let d = match wake {
            Wake::Event(ev) => conn.drive(&mut ctx, ev),
            Wake::Timeout => match limits.upstream {
                Some(u) => conn.upstream_timeout(&mut ctx, u.timeout),
                None => Drive::Open(Again::OnEvent),
            },
        };
        let again = match d {
            Drive::Close => {
                self.close(poll, key, shared);
                return;
            }
            Drive::Open(again) => again,
        };
        if let Some(reads) = self.reads.as_mut()
            && let Some(want) = conn.take_cold_wanted()
        {
            conn.cold_waiting(reads.submit(key, want));
        }
        let list = match again {
            Again::OnEvent => None,
            Again::NextTurn => Some(&mut self.yielded),
            Again::Soon => Some(&mut self.ticking),
        };
        if let Some(list) = list
            && !list.contains(&key)
        {
            list.push(key);
        }
        if conn.in_kernel() && !self.spliced.contains(&key) {
            self.spliced.push(key);
        }
        if conn
            .sync_poll(poll.registry(), client_token(nl, key))
            .is_err()
        {
            self.close(poll, key, shared);
        }
    }

    /// Drives the connections whose cold send ended (the cold-send threads woke the loop).
    fn cold_finished(&mut self, poll: &Poll, shared: &Shared, limits: &Limits, now: Instant) {
        let Some(reads) = self.reads.as_mut() else {
            return;
        };
        let done = reads.finished();
        for f in &done {
            if self
                .conns
                .get_mut(f.conn)
                .is_some_and(|c| c.cold_done(f.serial, f.sent, f.outcome))
            {
                self.drive(
                    poll,
                    shared,
                    limits,
                    f.conn,
                    now,
                    Wake::Event(Event::Client(Readable::No)),
                );
            }
        }
        if let Some(reads) = self.reads.as_mut() {
            reads.recycle(done);
        }
    }

    /// Looks at every spliced tunnel: activity (for the inactivity timeout), the bytes held in
    /// the kernel (past `splice::BACKLOG_MAX` the tunnel is closed), a drain that outlasted
    /// the fast polls (driven).
    fn check_spliced(&mut self, poll: &Poll, shared: &Shared, limits: &Limits, now: Instant) {
        let mut keys = std::mem::take(&mut self.spliced);
        for &key in &keys {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            let health = c.kernel_health(now, client_token(self.nl, key).0);
            if health.doubled > 0 {
                self.close(poll, key, shared);
            } else if health.overloaded {
                tracing::warn!(
                    "spliced tunnel closed: over {} MiB held in the kernel for {:?} (its reader \
                     fell behind; the kernel splice has no backpressure)",
                    crate::forward::splice::BACKLOG_MAX >> 20,
                    crate::forward::splice::BACKLOG_GRACE
                );
                self.close(poll, key, shared);
            } else if c.kernel_stalled() {
                self.drive(poll, shared, limits, key, now, Wake::Event(Event::Tick));
            }
        }
        keys.retain(|&k| self.conns.get(k).is_some_and(|c| c.in_kernel()));
        for k in keys {
            if !self.spliced.contains(&k) {
                self.spliced.push(k);
            }
        }
    }

    /// Lets go of webroots withdrawn because their file is being written in place, so that the
    /// last holder drops them and the lease the writer waits for is released: responses still
    /// sending from one are cut (reset, so no queued page of the file goes out later), and
    /// webroots whose pages were sent with sendfile are held until those pages are delivered.
    /// `changed`: the host table changed since the last call (a webroot may be withdrawn).
    fn withdraw(&mut self, poll: &Poll, shared: &Shared, changed: bool) {
        let now = Instant::now();
        if changed {
            let cut: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.holds_revoked())
                .map(|(k, _)| k)
                .collect();
            for k in cut {
                if let Some(c) = self.conns.get_mut(k) {
                    c.cut();
                }
                self.close(poll, k, shared);
            }
            let (held, recent): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired_recent)
                .into_iter()
                .partition(|(r, _)| r.root.is_revoked());
            self.retired_recent = recent.into();
            self.retired_held.extend(held);
        }
        for (_, c) in self.conns.iter_mut() {
            if c.zero_copy_revoked() {
                c.release_if_delivered();
            }
        }
        // Oldest first: let go of those held long enough or whose pages are delivered (the
        // usual case, within milliseconds), a bounded number of lookups per sweep.
        let mut lookups = RETIRED_LOOKUPS;
        while let Some((r, t)) = self.retired_recent.front() {
            if *t > now {
                if lookups == 0 || !crate::sys::delivered_after_close(r.local, r.peer) {
                    break;
                }
                lookups -= 1;
            }
            self.retired_recent.pop_front();
        }
        self.retired_held.retain(|(r, until)| {
            now < *until && !crate::sys::delivered_after_close(r.local, r.peer)
        });
    }

    /// Closes a client connection and its exchange (closing a socket removes it from epoll).
    fn close(&mut self, poll: &Poll, key: usize, shared: &Shared) {
        if let Some(mut c) = self.conns.try_remove(key) {
            shared.open.fetch_sub(1, Ordering::Relaxed);
            c.closed(&self.stats);
            if let (Some(serial), Some(reads)) = (c.cold_serial(), self.reads.as_mut()) {
                reads.cancel(key, serial);
            }
            if let Some(r) = c.retire() {
                let until = Instant::now() + RETIRE_MAX;
                if r.root.is_revoked() {
                    self.retired_held.push((r, until));
                } else {
                    self.retired_recent.push_back((r, until));
                }
            }
            // An exchange cut short (client gone, timeout, drain) is still logged.
            c.end_cut_short(
                &self.stats,
                &self.clf,
                &mut self.pool,
                poll.registry(),
                &mut self.up_bufs,
                &mut self.slots,
            );
        }
    }
}

/// Most sock_diag lookups per sweep (every 250 ms) to let go of closed connections' webroots
/// before [`RETIRE_MAX`].
const RETIRED_LOOKUPS: usize = 256;

/// Longest a webroot is held for a closed connection's pages (the kernel's own
/// lease-break-time, 45 s by default, lets a writer go on anyway).
const RETIRE_MAX: Duration = Duration::from_secs(60);

/// A client connection's poll token (listeners come first).
fn client_token(nl: usize, key: usize) -> Token {
    Token(nl + key)
}

fn accept(
    l: &mut TcpListener,
    index: usize,
    conns: &mut Slab<Conn>,
    shared: &Shared,
    stats: &crate::stats::Stats,
    now: Instant,
    fresh: &mut Vec<usize>,
) -> Backlog {
    let budget = match shared.listeners.get(index) {
        Some(info) if info.tls.is_some() => TLS_ACCEPTS_PER_TURN,
        _ => usize::MAX,
    };
    loop {
        if fresh.len() >= budget {
            return Backlog::More;
        }
        match l.accept() {
            Ok((sock, peer)) => {
                if shared.open.load(Ordering::Relaxed) >= shared.limits.max_connections {
                    drop(sock); // over the limit: refuse by closing at once
                    continue;
                }
                let Some(info) = shared.listeners.get(index) else {
                    continue;
                };
                if let Some(nets) = &info.proxy
                    && !crate::proxyproto::trusted(nets, peer.ip())
                {
                    // Not a proxy this listener trusts: it may not say who the client is.
                    stats.proxy_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("{peer}: not a trusted PROXY protocol source; closed");
                    continue;
                }
                match Conn::new(sock, peer, now, index, info) {
                    Ok(c) => {
                        shared.open.fetch_add(1, Ordering::Relaxed);
                        // Registered with epoll after its first drive (LoopState::drive).
                        fresh.push(conns.insert(c));
                    }
                    Err(e) => tracing::warn!("{peer}: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Backlog::Drained,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: the queue is not drained, and edge-triggered epoll
                // will not say so again; the sweep retries this listener.
                tracing::warn!("accept: {e}");
                return Backlog::Failed;
            }
        }
    }
}
