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
    /// As sendfile, and bytes not in the page cache are first read in by the read threads
    /// (`--io-threads`), so a cold read never stalls the worker's other connections.
    AsyncSendfile,
    /// sendfile(2) from the webroot file: zero copies; a cold page blocks the worker.
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
/// `async-sendfile`: most bytes looked up in the page stamps before one sendfile call.
const HOT_AHEAD: u64 = 4 * 1024 * 1024;
/// At most this many bytes per flush: one large body cannot hold the worker for longer than
/// its share (a sendfile of 4 MiB into a loopback socket runs for milliseconds, and every other
/// connection of the worker waits that long). nginx's `sendfile_max_chunk` is the same idea.
pub const FLUSH_BUDGET: u64 = 512 * 1024;

impl IoModel {
    fn zero_copy(self) -> bool {
        matches!(self, IoModel::Sendfile | IoModel::AsyncSendfile)
    }
}

/// How far a flush got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is written.
    All,
    /// The socket is full: wait for writable.
    Full,
    /// The next bytes are not in the page cache: a cold read is wanted or running.
    Cold,
    /// This flush wrote its budget and more is queued: let the worker's other connections
    /// have a turn, then flush again (no event will say so: the socket may not fill).
    Budget,
}

/// A connection's cold read (`--io async-sendfile`).
#[derive(Default)]
enum ColdRead {
    #[default]
    None,
    /// To be asked of the read threads: `[off, off + len)` of the webroot, and how many bytes
    /// after it the response goes on for (started in the background).
    Wanted(Arc<Webroot>, u64, u64, u64),
    /// Asked; its serial.
    Waiting(u64),
    /// It failed (read error, or the file ended early): the response is cut.
    Failed,
}

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
    cold: ColdRead,
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

    /// The cold read this queue wants, to hand to the read threads.
    pub fn take_cold_wanted(&mut self) -> Option<crate::cold::Want> {
        match std::mem::take(&mut self.cold) {
            ColdRead::Wanted(root, off, len, ahead) => Some(crate::cold::Want {
                root,
                off,
                len,
                ahead,
            }),
            other => {
                self.cold = other;
                None
            }
        }
    }

    /// The cold read with this serial was handed out.
    pub fn cold_waiting(&mut self, serial: u64) {
        self.cold = ColdRead::Waiting(serial);
    }

    /// The serial of the cold read this queue waits for.
    pub fn cold_serial(&self) -> Option<u64> {
        match self.cold {
            ColdRead::Waiting(s) => Some(s),
            _ => None,
        }
    }

    /// A cold read ended. True when it was this queue's (flush again).
    pub fn cold_done(&mut self, serial: u64, ok: bool) -> bool {
        if self.cold_serial() != Some(serial) {
            return false;
        }
        self.cold = if ok { ColdRead::None } else { ColdRead::Failed };
        true
    }

    /// Writes as much as the socket takes. `probe` is the worker's buffer for asking whether
    /// bytes are cached (`async-sendfile`).
    pub fn flush(
        &mut self,
        sock: &impl AsRawFd,
        io: IoModel,
        probe: &mut [u8],
    ) -> io::Result<Flushed> {
        match self.cold {
            ColdRead::None => {}
            ColdRead::Failed => return Err(cold_failed()),
            _ => return Ok(Flushed::Cold),
        }
        let nowait = io == IoModel::AsyncSendfile;
        let mut budget = FLUSH_BUDGET;
        while !self.items.is_empty() {
            if budget == 0 {
                return Ok(Flushed::Budget);
            }
            // Gather the leading in-memory pieces (and small or mmap regions) into one sendmsg.
            let mut bufs: [&[u8]; 64] = [&[]; 64];
            let mut n = 0;
            let mut next_is_file = false;
            let mut cold = None;
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
                        // A page missing from the cache would make sendmsg fault it in,
                        // waiting for the disk: read it in first.
                        if nowait && crate::cold::resident(root, *off, *len, probe) < *len {
                            if n == 0 {
                                cold = Some((root.clone(), *off, *len));
                            }
                            break;
                        }
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
                sys::sendv(sock, &bufs[..n], next_is_file && io.zero_copy())
            } else if let Some((root, off, len)) = cold {
                self.cold = ColdRead::Wanted(root, off, len, 0);
                return Ok(Flushed::Cold);
            } else {
                match self.write_file_front(sock, io, probe, budget) {
                    Some(r) => r,
                    None => return Ok(Flushed::Cold),
                }
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    self.consume(k);
                    budget = budget.saturating_sub(k as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Full),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }

    /// Writes from the region in front. None: its next bytes are cold (a read is wanted).
    fn write_file_front(
        &mut self,
        sock: &impl AsRawFd,
        io: IoModel,
        probe: &mut [u8],
        budget: u64,
    ) -> Option<io::Result<usize>> {
        let Some(Item::Region { root, off, len }) = self.items.front() else {
            return Some(Ok(0));
        };
        match io {
            IoModel::Sendfile | IoModel::AsyncSendfile => {
                let mut count = (*len).min(budget);
                if io == IoModel::AsyncSendfile {
                    // Send what is cached; read in the rest, a chunk at a time.
                    count = crate::cold::resident(root, *off, count.min(HOT_AHEAD), probe);
                    if count == 0 {
                        let want = (*len).min(crate::cold::WARM_CHUNK);
                        let ahead = (*len - want).min(crate::cold::WARM_CHUNK);
                        self.cold = ColdRead::Wanted(root.clone(), *off, want, ahead);
                        return None;
                    }
                }
                let sent = sys::sendfile(sock, root.file(), *off, count as usize);
                if sent.as_ref().is_ok_and(|&n| n > 0)
                    // A withdrawn one is kept until its pages are delivered (the worker).
                    && !self
                        .zero_copy
                        .as_ref()
                        .is_some_and(|z| Arc::ptr_eq(z, root) || z.is_revoked())
                {
                    self.zero_copy = Some(root.clone());
                }
                Some(sent)
            }
            _ => Some(self.read_front(sock)),
        }
    }

    /// Read model: moves a chunk of the front region into memory, in front as bytes.
    fn read_front(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let Some(Item::Region { root, off, len }) = self.items.front() else {
            return Ok(0);
        };
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

    fn front_bytes(&self) -> &[u8] {
        match self.items.front() {
            Some(Item::Bytes { buf, pos }) => &buf[*pos..],
            _ => &[],
        }
    }
}

/// The error that ends a response whose cold read failed.
fn cold_failed() -> io::Error {
    io::Error::other("cold read failed or the webroot file ended early: response cut")
}

/// The error that ends a response whose webroot was withdrawn or shrank under it.
fn withdrawn() -> io::Error {
    io::Error::other("webroot written in place: response cut")
}
