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
                    Item::Region { root, off, len }
                        if io == IoModel::Mmap || *len <= SMALL_REGION =>
                    {
                        let s = *off as usize;
                        bufs[n] = &root.bytes()[s..s + *len as usize];
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
                sys::sendfile(sock, root.file(), *off, count)
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
