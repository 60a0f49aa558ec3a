//! One client connection: read, parse, answer in order (pipelining), write, keep alive.
//! Driven by the worker's event loop (edge-triggered), never blocking.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;

use crate::accesslog::Record;
use crate::answer::{self, Answered};
use crate::http::request::{self, Framing, Head};
use crate::out::{IoModel, OutQueue};
use crate::sys;
use crate::vhosts::HostTable;

/// Initial read buffer; it grows up to a full request head.
const READ_BUF: usize = 8 * 1024;
/// Stop reading ahead (pipelined requests) past this many buffered bytes.
const READ_CAP: usize = request::MAX_HEAD + 4096;
/// Stop answering pipelined requests while this much output waits.
const OUT_HIGH: u64 = 512 * 1024;

/// Everything a connection borrows from its worker while it runs.
pub struct WorkerCtx<'a> {
    pub table: &'a HostTable,
    pub date: &'a str,
    pub clf_time: &'a str,
    pub io: IoModel,
    pub now: Instant,
    pub path_buf: &'a mut Vec<u8>,
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
    /// The socket may have unread input (last read was not short, or a new readable edge).
    want_read: bool,
    /// A write hit EAGAIN: the worker must watch for writability.
    pub blocked_on_write: bool,
    /// The worker registered this socket for writability.
    pub watching_writes: bool,
    /// The last request's body was not consumed (chunked, or Expect: 100-continue).
    unread_input: bool,
    pub last_active: Instant,
    /// When the current (incomplete) request head began arriving.
    pub head_since: Option<Instant>,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            sock,
            peer,
            rbuf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            out: OutQueue::default(),
            discard: 0,
            state: State::Open,
            eof: false,
            want_read: true,
            blocked_on_write: false,
            watching_writes: false,
            unread_input: false,
            last_active: now,
            head_since: None,
        }
    }

    /// Whether the connection sits between requests with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty() && self.start == self.end && self.discard == 0
    }

    pub fn is_lingering(&self) -> bool {
        self.state == State::Lingering
    }

    /// Handles readiness. Returns false when the connection must be closed now.
    pub fn drive(&mut self, ctx: &mut WorkerCtx<'_>, readable: bool) -> bool {
        self.last_active = ctx.now;
        if readable {
            self.want_read = true;
        }
        if self.state == State::Lingering {
            return self.linger();
        }
        loop {
            let mut progress = false;
            match self.fill() {
                Ok(p) => progress |= p,
                Err(_) => return false,
            }
            progress |= self.process(ctx);
            let before = self.out.pending();
            match self.out.flush(&self.sock, ctx.io) {
                Ok(true) => {}
                Ok(false) => self.blocked_on_write = true,
                Err(_) => return false,
            }
            progress |= self.out.pending() != before;
            if self.out.is_empty() {
                if self.state == State::Closing {
                    // Linger only when input may still be unread: closing with unread data
                    // would reset the connection and could destroy the last response.
                    if self.start == self.end && self.discard == 0 && !self.unread_input {
                        return false;
                    }
                    return self.begin_linger();
                }
                if self.eof {
                    // Everything answered that could be: a partial request at EOF is dropped.
                    return false;
                }
            }
            if !progress {
                return true;
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
                // A long head: grow (the buffer is zeroed once, not per read).
                let grown = (self.rbuf.len() * 2).min(READ_CAP);
                if grown <= self.end {
                    break;
                }
                self.rbuf.resize(grown, 0);
            }
            match self.sock.read(&mut self.rbuf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let short = self.end + n < self.rbuf.len();
                    self.end += n;
                    got = true;
                    if short {
                        // A short read drained the socket: the next edge tells us about more.
                        self.want_read = false;
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.want_read = false;
                        break;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
        Ok(got)
    }

    /// Parses and answers buffered requests while output has room. True if any progress.
    fn process(&mut self, ctx: &mut WorkerCtx<'_>) -> bool {
        let mut progress = false;
        while self.state == State::Open && self.out.pending() < OUT_HIGH {
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
                    let host = answer::route(&head, ctx.table);
                    let mut actx = answer::Ctx {
                        date: ctx.date,
                        path_buf: ctx.path_buf,
                    };
                    let a = answer::answer(&head, host, &mut actx, &mut self.out);
                    if let Some(log) = host.and_then(|h| h.log.as_ref()) {
                        log.record(&record(&head, &a, self.peer, ctx.clf_time));
                    }
                    if let Framing::Length(n) = head.framing() {
                        self.discard = n;
                    }
                    self.start += head.len;
                    if a.close {
                        self.state = State::Closing;
                        self.unread_input =
                            head.framing() == Framing::Chunked || head.expect_continue;
                    }
                    progress = true;
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
        progress
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
