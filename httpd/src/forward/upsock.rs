//! The upstream socket of an exchange or a tunnel: what its events and its last read said, and
//! reads and writes that keep that straight (edge-triggered: a short read ends reading until
//! the next edge, unless the peer may have closed).

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::pool::UP_TOKEN_BASE;

/// What the last read of the socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRead {
    /// No read yet (or bytes: a segment may be half read).
    Data,
    /// EAGAIN: the receive queue was empty, no segment is half read.
    Empty,
    /// EOF: the upstream closed its side.
    Eof,
}

/// What one read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    Bytes(usize),
    /// Nothing there (EAGAIN), or the read was interrupted.
    Nothing,
    Eof,
}

/// Readiness of the upstream socket from one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpReady {
    pub readable: bool,
    pub writable: bool,
    /// The peer may have closed: read on to EAGAIN or EOF.
    pub closed: bool,
}

pub struct UpSock {
    pub sock: TcpStream,
    /// Its slot in the worker's pool (token `UP_TOKEN_BASE + slot`).
    pub slot: usize,
    pub addr: SocketAddr,
    /// Registered for writability too (a write blocked).
    pub watching_writes: bool,
    readable: bool,
    writable: bool,
    read_to_end: bool,
    pub last_read: LastRead,
    /// Bytes ever read.
    pub read_total: u64,
}

impl UpSock {
    /// A socket just checked out (new or pooled): writable, and nothing to read before the
    /// request is sent (its readiness event says when).
    pub fn new(sock: TcpStream, slot: usize, addr: SocketAddr) -> UpSock {
        UpSock {
            sock,
            slot,
            addr,
            watching_writes: false,
            readable: false,
            writable: true,
            read_to_end: false,
            last_read: LastRead::Data,
            read_total: 0,
        }
    }

    pub fn token(&self) -> Token {
        Token(UP_TOKEN_BASE + self.slot)
    }

    pub fn ready(&mut self, r: UpReady) {
        self.readable |= r.readable;
        self.writable |= r.writable;
        self.read_to_end |= r.closed;
    }

    /// Asks for one more read (before a splice: only EAGAIN proves no segment is half read).
    pub fn want_read(&mut self) {
        self.readable = true;
    }

    pub fn can_read(&self) -> bool {
        self.readable && self.last_read != LastRead::Eof
    }

    pub fn eof(&self) -> bool {
        self.last_read == LastRead::Eof
    }

    /// Reads up to `max` more bytes onto the end of `buf`.
    pub fn read(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Got> {
        match crate::sys::read_spare(&self.sock, buf, max) {
            Ok(0) => {
                self.last_read = LastRead::Eof;
                Ok(Got::Eof)
            }
            Ok(n) => {
                self.read_total += n as u64;
                self.last_read = LastRead::Data;
                // A short read means the socket's queue was empty (as for the client in
                // `conn::fill`): wait for the next edge instead of an EAGAIN read.
                if n < max && !self.read_to_end {
                    self.readable = false;
                }
                Ok(Got::Bytes(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                self.read_to_end = false;
                self.last_read = LastRead::Empty;
                Ok(Got::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Got::Nothing),
            Err(e) => Err(e),
        }
    }

    /// Writes what it can of `bytes`; when the socket is full (or still connecting), watches
    /// for writability and returns 0. `hangup_only`: its arrivals go elsewhere (spliced).
    pub fn write(
        &mut self,
        bytes: &[u8],
        registry: &Registry,
        hangup_only: bool,
    ) -> io::Result<usize> {
        if !self.writable || bytes.is_empty() {
            return Ok(0);
        }
        loop {
            match self.sock.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => return Ok(n),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOTCONN) =>
                {
                    self.writable = false;
                    self.watch_writes(registry, hangup_only);
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `out` until it is empty or the socket is full: Ok(whether anything was written).
    pub fn write_out(
        &mut self,
        out: &mut Outbox,
        registry: &Registry,
        hangup_only: bool,
    ) -> io::Result<bool> {
        let mut moved = false;
        while !out.is_empty() && self.writable {
            match self.write(out.pending(), registry, hangup_only)? {
                0 => break,
                n => {
                    out.advance(n);
                    moved = true;
                }
            }
        }
        Ok(moved)
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    fn watch_writes(&mut self, registry: &Registry, hangup_only: bool) {
        if self.watching_writes {
            return;
        }
        self.watching_writes = true;
        let t = self.token();
        if hangup_only {
            // Spliced towards the client: its arrivals must not wake the worker.
            let _ = crate::sys::watch_hangup_only(registry, &self.sock, t.0, true);
        } else {
            let _ = registry.reregister(&mut self.sock, t, Interest::READABLE | Interest::WRITABLE);
        }
    }

    /// A fresh connection in place of this one (a retry): same slot and token.
    pub fn replace(&mut self, mut sock: TcpStream, registry: &Registry) -> io::Result<()> {
        registry.register(&mut sock, self.token(), Interest::READABLE)?;
        *self = UpSock::new(sock, self.slot, self.addr);
        Ok(())
    }
}

/// Bytes waiting to be written, and how far the writes got.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    pos: usize,
}

impl Outbox {
    pub fn with(buf: Vec<u8>) -> Outbox {
        Outbox { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Bytes still to write.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// The buffer, for reuse.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// Back to the start: everything pushed since the last time the buffer was emptied is to
    /// be written again.
    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    /// Appends bytes (reusing the space of what was written).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.is_empty() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }
}
