//! Cold reads (`--io async-sendfile`): the bytes of a response that are not in the page cache
//! are sent by a small pool of threads, so a worker's event loop never waits for the disk while
//! its other connections wait for it.
//!
//! - Detection: one relaxed load per 4 KiB page (the webroot's page stamps: when httpd last saw
//!   the page cached); a page not seen in the last [`FRESH_MS`] is asked about with
//!   `preadv2(RWF_NOWAIT)`, which copies what is cached and stops at the first page that is not,
//!   never waiting. A hot hit therefore costs no syscall of its own.
//! - Waiting: the connection hands at most [`COLD_CHUNK`] bytes at a time to the pool; a
//!   thread asks the kernel for them (and the chunk after) at once, then sends them itself
//!   with sendfile on a duplicate of the client's socket, waiting for the disk where the loop
//!   would have, and tells the worker what it sent through its waker (an eventfd in the same
//!   epoll set). The rest of that region goes the same way: pages read in are not trusted to
//!   stay cached (a proactive reclaimer such as DAMON may evict a page milliseconds after it was
//!   read), so the loop never sends bytes that only just came from the disk.
//! - Bounds: [`PER_WORKER`] sends queued or running per worker (more wait in the worker's
//!   backlog, in order), `--io-threads` at once in all, no buffer (sendfile copies nothing).
//!   A connection has at most one send queued, and the queue is first in, first out: a large
//!   cold object advances one chunk per turn and cannot starve the others.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use httpd_common::webroot::Webroot;

use crate::stats::Stats;

/// Page size of the stamps (and of the page cache).
const PAGE: u64 = 4096;
/// How long a page seen in the page cache is taken to still be there. Short, because page
/// cache does not stay put even with memory free: on this VM a proactive reclaimer (DAMON
/// `pageout`, run every 5 s) evicted pages 600 ms after httpd had seen them cached, and a
/// sendfile of such a page waited 250-390 ms behind the throttled disk in the cold bench. A page
/// in use is stamped again at every send, so only pages idle this long are asked about again.
pub const FRESH_MS: u32 = 100;
/// Most bytes one RWF_NOWAIT probe copies (the worker's probe buffer).
pub const PROBE_MAX: usize = 64 * 1024;
/// Most bytes sent per cold send: a 64 MiB body that is partly cached waits only for its cold
/// megabytes, one at a time, and other cold objects get their turn between them.
pub const COLD_CHUNK: u64 = 1024 * 1024;
/// Reads one worker may have queued or running; the rest wait in its backlog.
pub const PER_WORKER: usize = 64;

/// Milliseconds on a process clock, never 0 (0 is "never seen").
fn now_ms() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    (ms as u32).max(1)
}

fn fresh(stamp: u32, now: u32) -> bool {
    stamp != 0 && now.wrapping_sub(stamp) < FRESH_MS
}

/// Marks the pages holding bytes `[off, off + n)` as seen cached now.
fn stamp(stamps: &[AtomicU32], off: u64, n: u64, now: u32) {
    if n == 0 {
        return;
    }
    let first = (off / PAGE) as usize;
    let last = ((off + n - 1) / PAGE) as usize;
    for s in stamps.iter().take(last + 1).skip(first) {
        s.store(now, Ordering::Relaxed);
    }
}

/// Marks the pages of `[off, off + n)` of `root` as seen cached now (they were just sent).
pub fn sent(root: &Webroot, off: u64, n: u64) {
    stamp(root.page_stamps(), off, n, now_ms());
}

/// How many bytes from `off` (at most `max`) were seen cached in the last [`FRESH_MS`], from
/// the stamps alone (no syscall). Large regions are sent from the loop only this far: anything
/// else goes to the cold-send threads, which find out by sending.
pub fn fresh_len(root: &Webroot, off: u64, max: u64) -> u64 {
    let stamps = root.page_stamps();
    let now = now_ms();
    let end = off + max;
    let mut pos = off;
    while pos < end {
        let page = (pos / PAGE) as usize;
        if !stamps
            .get(page)
            .is_some_and(|s| fresh(s.load(Ordering::Relaxed), now))
        {
            break;
        }
        pos = ((page as u64 + 1) * PAGE).min(end);
    }
    pos - off
}

/// How many bytes from `off` (at most `max`) are in the page cache: known from the stamps, or
/// asked with RWF_NOWAIT (into `probe`, whose bytes are thrown away). 0: the page at `off` is
/// not cached, a send from it would wait for the disk.
pub fn resident(root: &Webroot, off: u64, max: u64, probe: &mut [u8]) -> u64 {
    let end = off + max;
    let mut pos = off;
    loop {
        pos += fresh_len(root, pos, end - pos);
        if pos >= end {
            break;
        }
        let want = (end - pos).min(probe.len() as u64) as usize;
        match crate::sys::read_nowait(root.file(), &mut probe[..want], pos) {
            Ok(n) if n > 0 => {
                stamp(root.page_stamps(), pos, n as u64, now_ms());
                pos += n as u64;
                if n < want {
                    break;
                }
            }
            // EAGAIN (not cached), EOF (a file cut short: the send reports it), or an error.
            _ => break,
        }
    }
    pos - off
}

/// How a cold send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All of it went.
    Sent,
    /// The socket filled first: the rest waits for the client.
    Full,
    /// A read error, the file ended early or the client is gone: the response is cut.
    Failed,
}

/// Sends `[off, off + len)` of the webroot to the socket (blocking on the disk: pool threads
/// only), having asked the kernel for it and the `ahead` bytes after it at once (webroots are
/// opened for random access, without readahead: this is where the reading ahead happens, off
/// the loop). The socket is non-blocking: a full one ends the send early.
fn send_cold(w: &Want) -> (u64, Outcome) {
    let _ = crate::sys::will_need_range(w.root.file(), w.off, w.len + w.ahead);
    let Some(sock) = &w.sock else {
        return warm(w);
    };
    let mut done = 0;
    while done < w.len {
        let want = (w.len - done) as usize;
        match crate::sys::sendfile(sock, w.root.file(), w.off + done, want) {
            Ok(0) => {
                tracing::warn!(
                    "cold send of {}: the file ended early",
                    w.root.path().display()
                );
                return (done, Outcome::Failed);
            }
            Ok(n) => {
                sent(&w.root, w.off + done, n as u64);
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (done, Outcome::Full),
            Err(e) => {
                tracing::debug!("cold send of {}: {e}", w.root.path().display());
                return (done, Outcome::Failed);
            }
        }
    }
    (done, Outcome::Sent)
}

/// Reads `[off, off + len)` into the page cache (for a connection without a socket to send
/// to: TLS). Returns (0, how it went): nothing was sent.
fn warm(w: &Want) -> (u64, Outcome) {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < w.len {
        let want = ((w.len - done) as usize).min(buf.len());
        match w.root.file().read_at(&mut buf[..want], w.off + done) {
            Ok(0) => {
                tracing::warn!(
                    "cold read of {}: the file ended early",
                    w.root.path().display()
                );
                return (0, Outcome::Failed);
            }
            Ok(n) => {
                sent(&w.root, w.off + done, n as u64);
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("cold read of {}: {e}", w.root.path().display());
                return (0, Outcome::Failed);
            }
        }
    }
    (0, Outcome::Sent)
}

/// What a connection hands to the pool: `[off, off + len)` of `root` for `sock` (a duplicate
/// of the client's socket), and `ahead` bytes after it that the response goes on for (asked of
/// the kernel at the same time). Without a socket (a TLS connection, which encrypts in user
/// space) the bytes are only read into the page cache, and the loop reads them from there.
pub struct Want {
    pub root: Arc<Webroot>,
    pub off: u64,
    pub len: u64,
    pub ahead: u64,
    pub sock: Option<OwnedFd>,
}

/// A cold read asked for by a connection.
pub struct Task {
    /// Held until the read is done: a webroot swapped meanwhile stays open (and leased).
    want: Want,
    /// The connection's slab key in its worker, and the number of this read in the worker.
    pub conn: usize,
    pub serial: u64,
    done: Arc<Done>,
    queued: Instant,
}

/// A read that is over, for the worker that asked.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub conn: usize,
    pub serial: u64,
    /// Bytes sent to the client.
    pub sent: u64,
    pub outcome: Outcome,
}

/// A worker's completion list: pool threads append and wake the worker's loop.
pub struct Done {
    list: Mutex<Vec<Finished>>,
    waker: Arc<mio::Waker>,
}

impl Done {
    pub fn new(waker: Arc<mio::Waker>) -> Arc<Done> {
        Arc::new(Done {
            list: Mutex::new(Vec::new()),
            waker,
        })
    }

    fn push(&self, f: Finished) {
        lock(&self.list).push(f);
        let _ = self.waker.wake();
    }

    /// Takes what finished since the last call.
    pub fn take(&self, into: &mut Vec<Finished>) {
        into.append(&mut lock(&self.list));
    }
}

/// A poisoned lock only means a thread panicked while holding it; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cold-send threads, shared by all workers.
pub struct Pool {
    queue: Mutex<VecDeque<Task>>,
    ready: Condvar,
    stats: Arc<Stats>,
}

impl Pool {
    /// Starts `threads` cold-send threads (named `cold-N`).
    pub fn start(threads: usize, stats: Arc<Stats>) -> io::Result<Arc<Pool>> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            stats,
        });
        for i in 0..threads.clamp(1, 256) {
            let p = pool.clone();
            std::thread::Builder::new()
                .name(format!("cold-{i}"))
                .spawn(move || p.serve())?;
        }
        Ok(pool)
    }

    fn serve(&self) {
        // A cold-send thread mostly waits for the disk: it must not preempt a busy worker
        // when its read completes (SCHED_BATCH: no wakeup preemption, same share).
        if let Err(e) = crate::sys::batch_scheduling() {
            tracing::debug!("cold-send thread: SCHED_BATCH: {e}");
        }
        loop {
            let task = {
                let mut q = lock(&self.queue);
                loop {
                    match q.pop_front() {
                        Some(t) => break t,
                        None => q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            let (sent, outcome) = send_cold(&task.want);
            let s = &self.stats;
            s.cold_reads.fetch_add(1, Ordering::Relaxed);
            let read = match (&task.want.sock, outcome) {
                (None, Outcome::Sent) => task.want.len,
                _ => sent,
            };
            s.cold_bytes.fetch_add(read, Ordering::Relaxed);
            s.cold_wait_us
                .fetch_add(task.queued.elapsed().as_micros() as u64, Ordering::Relaxed);
            s.cold_in_flight.fetch_sub(1, Ordering::Relaxed);
            let Task {
                want,
                conn,
                serial,
                done,
                ..
            } = task;
            // The webroot and the socket are let go here, before the worker hears (its lease
            // may be awaited; a closed connection's socket ends here).
            drop(want);
            done.push(Finished {
                conn,
                serial,
                sent,
                outcome,
            });
        }
    }

    fn push(&self, t: Task) {
        self.stats.cold_in_flight.fetch_add(1, Ordering::Relaxed);
        lock(&self.queue).push_back(t);
        self.ready.notify_one();
    }

    /// Takes a read back if no thread has started it. True when it was still queued.
    fn cancel(&self, done: &Arc<Done>, conn: usize, serial: u64) -> bool {
        let mut q = lock(&self.queue);
        let Some(i) = q
            .iter()
            .position(|t| t.conn == conn && t.serial == serial && Arc::ptr_eq(&t.done, done))
        else {
            return false;
        };
        q.remove(i);
        self.stats.cold_in_flight.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

/// A worker's side of the pool: its reads in flight, its backlog, its completions.
pub struct Reads {
    pool: Arc<Pool>,
    pub done: Arc<Done>,
    in_flight: usize,
    backlog: VecDeque<Task>,
    serial: u64,
    finished: Vec<Finished>,
}

impl Reads {
    pub fn new(pool: Arc<Pool>, done: Arc<Done>) -> Reads {
        Reads {
            pool,
            done,
            in_flight: 0,
            backlog: VecDeque::new(),
            serial: 0,
            finished: Vec::new(),
        }
    }

    /// Asks for what connection `conn` wants; returns the read's serial.
    pub fn submit(&mut self, conn: usize, want: Want) -> u64 {
        self.serial += 1;
        let t = Task {
            want,
            conn,
            serial: self.serial,
            done: self.done.clone(),
            queued: Instant::now(),
        };
        if self.in_flight < PER_WORKER {
            self.in_flight += 1;
            self.pool.push(t);
        } else {
            self.backlog.push_back(t);
        }
        self.serial
    }

    /// The reads finished since the last call (their slots go to the backlog).
    pub fn finished(&mut self) -> Vec<Finished> {
        let mut out = std::mem::take(&mut self.finished);
        out.clear();
        self.done.take(&mut out);
        self.in_flight -= out.len().min(self.in_flight);
        while self.in_flight < PER_WORKER {
            let Some(t) = self.backlog.pop_front() else {
                break;
            };
            self.in_flight += 1;
            self.pool.push(t);
        }
        out
    }

    /// Gives back the vector `finished` returned (keeps its allocation).
    pub fn recycle(&mut self, v: Vec<Finished>) {
        self.finished = v;
    }

    /// A connection closed while its read was pending: drops it if it has not started.
    pub fn cancel(&mut self, conn: usize, serial: u64) {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|t| t.conn == conn && t.serial == serial)
        {
            self.backlog.remove(i);
        } else if self.pool.cancel(&self.done, conn, serial) {
            self.in_flight -= 1;
        }
    }
}
