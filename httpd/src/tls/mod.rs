//! HTTPS: TLS 1.2 and 1.3 with rustls (crypto from aws-lc-rs), under the connection's buffers.
//!
//! A TLS connection is the same `conn::Conn` with a [`Session`] between its socket and its
//! buffers: reads take TLS records from the socket and hand the connection plaintext; the
//! output queue's bytes (heads, webroot regions read with `pread`, forwarded bodies) are
//! encrypted and written by [`flush`]. Everything above (parsing, answering, forwarding,
//! tunnels in user space, timeouts, logs) is unchanged.
//!
//! - [`certs`]: the certificates by SNI, reloaded when their files change.
//! - Sessions resume by ticket (keys rotated every 6 hours, the previous key still accepted)
//!   or from a bounded server-side cache (TLS 1.2 session IDs).
//! - Webroot bodies are read with `pread` into the worker's buffer, then encrypted: never from
//!   the mapping, which user space must not read (a writer may truncate the file: SIGBUS).
//!   With `--io async-sendfile` the read is `RWF_NOWAIT`, and bytes not in the page cache are
//!   read in by the cold-read threads first, so a cold disk does not stall the worker.
//! - kTLS (the kernel encrypting, so sendfile could stay) would plug in below [`flush`]: after
//!   the handshake, hand the session's secrets to the socket and flush as for plain
//!   connections. This kernel has no `tls` ULP, so it is not written.

pub mod certs;

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::server::{ServerConfig, ServerConnection, ServerSessionMemoryCache};

use crate::out::{Flushed, Gathered, IoModel, OutQueue};
use crate::stats::{Stats, TlsFailure};

/// TLS 1.2 sessions kept for resumption by session ID (TLS 1.3 resumes by ticket).
const SESSION_CACHE: usize = 16 * 1024;
/// Most plaintext encrypted per step of a flush (rustls makes records of at most 16 KiB).
const PLAIN_STEP: usize = 64 * 1024;

/// The server side of TLS for every TLS listener.
pub fn server_config(store: Arc<certs::CertStore>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    // One ticket per full handshake is enough for a browser's next visit; every extra one
    // costs an encryption and a record.
    cfg.send_tls13_tickets = 1;
    Ok(Arc::new(cfg))
}

/// The crypto provider certificates are loaded with (the same as the server's).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What a read of a TLS connection gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// Plaintext bytes into the caller's buffer.
    Plain(usize),
    /// TLS bytes from the socket (`short`: fewer than asked, so the socket is drained); no
    /// plaintext yet (the caller reads again for it).
    Socket { n: usize, short: bool },
    /// The client closed (close_notify or EOF).
    Eof,
    /// No plaintext waits, and the socket was not to be read (`from_socket` false).
    Nothing,
}

/// One connection's TLS state.
pub struct Session {
    conn: ServerConnection,
    /// The handshake was counted (completed or failed).
    counted: bool,
    /// Decrypted bytes may be waiting in rustls.
    plain: bool,
}

/// The socket, counting what a read asked for (to tell a short read).
struct Counted<'a> {
    sock: &'a TcpStream,
    asked: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked = buf.len();
        let mut s = self.sock;
        s.read(buf)
    }
}

impl Session {
    pub fn new(cfg: &Arc<ServerConfig>) -> io::Result<Box<Session>> {
        let conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
        Ok(Box::new(Session {
            conn,
            counted: false,
            plain: false,
        }))
    }

    /// Decrypted bytes may wait: the connection should read even without a socket event.
    pub fn wants_input(&self) -> bool {
        self.plain
    }

    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// TLS bytes (handshake, records, alerts) wait to be written.
    pub fn pending_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// The negotiated version and cipher suite, once the handshake is done.
    pub fn info(&self) -> Option<(&'static str, &'static str)> {
        let v = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let c = self.conn.negotiated_cipher_suite()?.suite().as_str()?;
        Some((v, c))
    }

    /// Plaintext into `dst` when some is decrypted; else one read of TLS bytes from the socket
    /// (handshake messages are answered by the next [`flush`]). WouldBlock when the socket is
    /// drained.
    /// `from_socket`: the socket may be read (it may have input); else only decrypted bytes are
    /// taken, without a syscall.
    pub fn read(
        &mut self,
        sock: &TcpStream,
        dst: &mut [u8],
        from_socket: bool,
        stats: &Stats,
    ) -> io::Result<Got> {
        if self.plain {
            match self.conn.reader().read(dst) {
                Ok(0) if !dst.is_empty() => return Ok(Got::Eof),
                Ok(n) => return Ok(Got::Plain(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.plain = false,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Got::Eof),
                Err(e) => return Err(e),
            }
        }
        if !from_socket {
            return Ok(Got::Nothing);
        }
        let mut src = Counted { sock, asked: 0 };
        match self.conn.read_tls(&mut src) {
            Ok(0) => {
                self.abandoned(stats);
                Ok(Got::Eof)
            }
            Ok(n) => {
                self.process(sock, stats)?;
                Ok(Got::Socket {
                    n,
                    short: n < src.asked,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Bytes that arrived before TLS was in charge (after a PROXY protocol header).
    pub fn feed(&mut self, mut bytes: &[u8], sock: &TcpStream, stats: &Stats) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.conn.read_tls(&mut bytes)? == 0 {
                break;
            }
            self.process(sock, stats)?;
        }
        Ok(())
    }

    fn process(&mut self, sock: &TcpStream, stats: &Stats) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain |= state.plaintext_bytes_to_read() > 0 || state.peer_has_closed();
                if !self.counted && !self.conn.is_handshaking() {
                    self.counted = true;
                    stats.tls_handshake(matches!(
                        self.conn.handshake_kind(),
                        Some(rustls::HandshakeKind::Resumed)
                    ));
                }
                Ok(())
            }
            Err(e) => {
                if !self.counted {
                    self.counted = true;
                    stats.tls_failed(failure(&e));
                }
                tracing::debug!("TLS: {e}");
                // The alert rustls queued, best effort.
                let mut w = sock;
                let _ = self.conn.write_tls(&mut w);
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// The connection ends (closed by the client, timed out, drained) while handshaking.
    pub fn abandoned(&mut self, stats: &Stats) {
        if !self.counted && self.conn.is_handshaking() {
            self.counted = true;
            stats.tls_failed(TlsFailure::Incomplete);
        }
    }

    /// Queues close_notify (once; not during a handshake): the next [`flush`] writes it.
    pub fn close_notify(&mut self) {
        if !self.conn.is_handshaking() {
            self.conn.send_close_notify();
        }
    }
}

/// Why a handshake (or a later record) failed, for the counters.
fn failure(e: &rustls::Error) -> TlsFailure {
    use rustls::Error as E;
    match e {
        E::AlertReceived(_) => TlsFailure::Alert,
        E::PeerIncompatible(_) | E::NoApplicationProtocol => TlsFailure::Incompatible,
        E::General(m) if m.contains("certificate") => TlsFailure::NoCertificate,
        _ => TlsFailure::Protocol,
    }
}

/// Encrypts and writes the output queue, as `OutQueue::flush` does for plain connections:
/// TLS bytes waiting first, then the queue a step at a time (read into `scratch`, encrypted
/// by rustls, written), up to the flush budget.
pub fn flush(
    out: &mut OutQueue,
    tls: &mut Session,
    sock: &TcpStream,
    io: IoModel,
    scratch: &mut [u8],
    mut spent: Option<&mut Vec<Vec<u8>>>,
) -> io::Result<Flushed> {
    let mut budget = crate::out::FLUSH_BUDGET;
    let step = scratch.len().min(PLAIN_STEP);
    loop {
        let mut w = sock;
        while tls.conn.wants_write() {
            match tls.conn.write_tls(&mut w) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => budget = budget.saturating_sub(n as u64),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Full),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Ok(Flushed::All);
        }
        if budget == 0 {
            return Ok(Flushed::Budget);
        }
        match out.gather(io, &mut scratch[..step])? {
            Gathered::Bytes(0) => {}
            Gathered::Bytes(n) => {
                let k = tls.conn.writer().write(&scratch[..n])?;
                if k == 0 {
                    // rustls's buffer is full although nothing waits to be written: cannot
                    // happen (it was just emptied); stop rather than spin.
                    return Ok(Flushed::Full);
                }
                out.written(k, spent.as_deref_mut());
            }
            Gathered::Cold => return Ok(Flushed::Cold),
            Gathered::Failed => return Err(crate::out::cold_failed()),
        }
    }
}
