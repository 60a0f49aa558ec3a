//! A connection's output queue: owned bytes (response heads, error pages) and regions of a
//! webroot file, written with the selected I/O model.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use httpd_common::webroot::Webroot;

use crate::sys;

/// How large webroot regions reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoModel {
    /// sendfile(2) from the webroot file: zero copies.
    Sendfile,
    /// pread(2) into a buffer, then write.
    Read,
    /// Gathered writes straight from the mapped file.
    Mmap,
}

/// Regions up to this size are written from the mapping together with their head in one
/// sendmsg, whatever the model: one syscall instead of two (measured faster for small files).
pub const SMALL_REGION: u64 = 32 * 1024;
/// Chunk size of the `read` model.
const READ_CHUNK: usize = 64 * 1024;

enum Item {
    Bytes {
        buf: Vec<u8>,
        pos: usize,
    },
    Region {
        root: Arc<Webroot>,
        off: u64,
        len: u64,
    },
}

#[derive(Default)]
pub struct OutQueue {
    items: VecDeque<Item>,
    pending: u64,
    /// The webroot this connection last sent from with sendfile. sendfile hands page-cache
    /// pages to TCP by reference, and they stay referenced until the peer acknowledged them
    /// (and, for a peer on this host, read them): until then a write to the file would change
    /// bytes already "sent". Holding the webroot holds its lease, so no writer can start.
    zero_copy: Option<Arc<Webroot>>,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn push_bytes(&mut self, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        self.pending += buf.len() as u64;
        self.items.push_back(Item::Bytes { buf, pos: 0 });
    }

    pub fn push_region(&mut self, root: &Arc<Webroot>, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.pending += len;
        self.items.push_back(Item::Region {
            root: root.clone(),
            off,
            len,
        });
    }

    fn consume(&mut self, mut n: usize) {
        self.pending -= n as u64;
        while n > 0 {
            let Some(front) = self.items.front_mut() else {
                return;
            };
            match front {
                Item::Bytes { buf, pos } => {
                    let left = buf.len() - *pos;
                    if n >= left {
                        n -= left;
                        self.items.pop_front();
                    } else {
                        *pos += n;
                        n = 0;
                    }
                }
                Item::Region { off, len, .. } => {
                    let k = (n as u64).min(*len);
                    *off += k;
                    *len -= k;
                    n -= k as usize;
                    if *len == 0 {
                        self.items.pop_front();
                    }
                }
            }
        }
    }

    /// Whether a queued region comes from a webroot that was withdrawn (its file is being
    /// written in place): the connection must close without sending more of it.
    pub fn holds_revoked(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i, Item::Region { root, .. } if root.is_revoked()))
    }

    /// Whether the webroot last sent from with sendfile was withdrawn.
    pub fn zero_copy_revoked(&self) -> bool {
        self.zero_copy.as_ref().is_some_and(|r| r.is_revoked())
    }

    /// Lets go of the webroot last sent from with sendfile (its bytes are delivered).
    pub fn release_zero_copy(&mut self) -> Option<Arc<Webroot>> {
        self.zero_copy.take()
    }

    /// Writes as much as the socket takes. Ok(true): everything written; Ok(false): the socket
    /// is full (wait for writable).
    pub fn flush(&mut self, sock: &impl AsRawFd, io: IoModel) -> io::Result<bool> {
        while !self.items.is_empty() {
            // Gather the leading in-memory pieces (and small or mmap regions) into one sendmsg.
            let mut bufs: [&[u8]; 64] = [&[]; 64];
            let mut n = 0;
            let mut next_is_file = false;
            for item in &self.items {
                if n == bufs.len() {
                    break;
                }
                match item {
                    Item::Bytes { buf, pos } => bufs[n] = &buf[*pos..],
                    Item::Region { root, .. } if root.is_revoked() => return Err(withdrawn()),
                    Item::Region { root, off, len }
                        if io == IoModel::Mmap || *len <= SMALL_REGION =>
                    {
                        // Only the kernel reads these bytes (see Webroot::kernel_bytes).
                        bufs[n] = root.kernel_bytes(*off, *len).ok_or_else(withdrawn)?;
                    }
                    Item::Region { .. } => {
                        next_is_file = true;
                        break;
                    }
                }
                n += 1;
            }
            let res = if n > 0 {
                sys::sendv(sock, &bufs[..n], next_is_file && io == IoModel::Sendfile)
            } else {
                self.write_file_front(sock, io)
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => self.consume(k),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn write_file_front(&mut self, sock: &impl AsRawFd, io: IoModel) -> io::Result<usize> {
        let Some(Item::Region { root, off, len }) = self.items.front() else {
            return Ok(0);
        };
        match io {
            IoModel::Sendfile => {
                let count = (*len).min(1 << 30) as usize;
                let sent = sys::sendfile(sock, root.file(), *off, count);
                if sent.as_ref().is_ok_and(|&n| n > 0)
                    // A withdrawn one is kept until its pages are delivered (the worker).
                    && !self
                        .zero_copy
                        .as_ref()
                        .is_some_and(|z| Arc::ptr_eq(z, root) || z.is_revoked())
                {
                    self.zero_copy = Some(root.clone());
                }
                sent
            }
            _ => {
                // Read model: move a chunk into memory, put it in front as bytes.
                let want = (*len).min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                let got = root.file().read_at(&mut buf, *off)?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.truncate(got);
                let (root, off, len) = (root.clone(), *off, *len);
                self.items.pop_front();
                if len > got as u64 {
                    self.items.push_front(Item::Region {
                        root,
                        off: off + got as u64,
                        len: len - got as u64,
                    });
                }
                self.items.push_front(Item::Bytes { buf, pos: 0 });
                sys::sendv(sock, &[self.front_bytes()], false)
            }
        }
    }

    fn front_bytes(&self) -> &[u8] {
        match self.items.front() {
            Some(Item::Bytes { buf, pos }) => &buf[*pos..],
            _ => &[],
        }
    }
}

/// The error that ends a response whose webroot was withdrawn or shrank under it.
fn withdrawn() -> io::Error {
    io::Error::other("webroot written in place: response cut")
}
