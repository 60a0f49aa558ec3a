//! A connection's output queue: owned bytes (response heads, error pages) and regions of a
//! webroot file, written with the selected I/O model.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use httpd_common::webroot::Webroot;

use crate::cold::Outcome;
use crate::sys;

/// How large webroot regions reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoModel {
    /// As sendfile, and bytes not known to be in the page cache are sent by the cold-send
    /// threads (`--io-threads`), so a cold read never stalls the worker's other connections.
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
/// Pieces gathered into one sendmsg.
const MAX_IOV: usize = 64;
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

/// What [`OutQueue::gather`] put in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// The next `n` queued bytes (not consumed: see [`OutQueue::written`]).
    Bytes(usize),
    /// The next bytes are not in the page cache: a cold read is wanted or running.
    Cold,
    /// A cold read failed: the response is cut.
    Failed,
}

/// A connection's cold send (`--io async-sendfile`).
#[derive(Default)]
enum ColdRead {
    #[default]
    None,
    /// To be handed to the cold-send threads.
    Wanted(crate::cold::Want),
    /// Handed over; its serial.
    Waiting(u64),
    /// The thread's send filled the socket: wait for writable before the next one.
    Full,
    /// It failed (read error, the file ended early, the client is gone): the response is cut.
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
    /// The region in front went cold: the rest of it is sent by the cold-send threads too
    /// (pages just read in may be evicted again before the loop would send them).
    cold_front: bool,
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

    /// Drops what `n` written bytes covered; buffers written whole go to `spent` (the
    /// worker's small-buffer pool, see [`crate::forward::recycle`]) for the next responses.
    fn consume(&mut self, mut n: usize, mut spent: Option<&mut Vec<Vec<u8>>>) {
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
                        if let (Some(Item::Bytes { buf, .. }), Some(pool)) =
                            (self.items.pop_front(), spent.as_deref_mut())
                        {
                            crate::forward::recycle(buf, pool);
                        }
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
                        self.cold_front = false;
                    }
                }
            }
        }
    }

    /// Bytes handed to the socket by a caller of [`OutQueue::gather`] (TLS: encrypted).
    pub fn written(&mut self, n: usize, spent: Option<&mut Vec<Vec<u8>>>) {
        self.consume(n, spent);
    }

    /// Copies the next queued bytes into `buf` without consuming them, for a connection that
    /// cannot hand regions to the kernel (TLS encrypts in user space). Regions are read with
    /// `pread` (never from the mapping, which user space must not touch); with
    /// `async-sendfile` with `RWF_NOWAIT`, and bytes not in the page cache go to the cold-read
    /// threads first (`Gathered::Cold`). Err: a region's webroot was withdrawn or cut short.
    pub fn gather(&mut self, io: IoModel, buf: &mut [u8]) -> io::Result<Gathered> {
        match self.cold {
            ColdRead::None => {}
            ColdRead::Failed => return Ok(Gathered::Failed),
            ColdRead::Full => self.cold = ColdRead::None,
            _ => return Ok(Gathered::Cold),
        }
        let nowait = io == IoModel::AsyncSendfile;
        let mut n = 0;
        let mut cold = None;
        for item in &self.items {
            if n == buf.len() {
                break;
            }
            match item {
                Item::Bytes { buf: b, pos } => {
                    let k = (b.len() - pos).min(buf.len() - n);
                    buf[n..n + k].copy_from_slice(&b[*pos..*pos + k]);
                    n += k;
                }
                Item::Region { root, .. } if root.is_revoked() => return Err(withdrawn()),
                Item::Region { root, off, len } => {
                    let want = (*len).min((buf.len() - n) as u64) as usize;
                    let dst = &mut buf[n..n + want];
                    let got = match nowait {
                        true => match sys::read_nowait(root.file(), dst, *off) {
                            // A file system without RWF_NOWAIT: read as the other models do.
                            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                                root.file().read_at(dst, *off)
                            }
                            r => r,
                        },
                        false => root.file().read_at(dst, *off),
                    };
                    match got {
                        Ok(0) => {
                            if n == 0 {
                                return Err(withdrawn());
                            }
                        }
                        Ok(k) => {
                            if nowait {
                                crate::cold::sent(root, *off, k as u64);
                            }
                            n += k;
                            if k == want {
                                continue;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if n == 0 {
                                cold = Some((root.clone(), *off, *len));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                    // A short read: send what is here, read on at the next step.
                    break;
                }
            }
        }
        if let Some((root, off, len)) = cold {
            self.cold = ColdRead::Wanted(crate::cold::Want {
                root,
                off,
                len: len.min(crate::cold::COLD_CHUNK),
                ahead: 0,
                sock: None,
            });
            return Ok(Gathered::Cold);
        }
        Ok(Gathered::Bytes(n))
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

    /// The cold send this queue wants, to hand to the cold-send threads.
    pub fn take_cold_wanted(&mut self) -> Option<crate::cold::Want> {
        match std::mem::take(&mut self.cold) {
            ColdRead::Wanted(want) => Some(want),
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

    /// A cold send ended, having sent `sent` bytes of the region in front. True when it was
    /// this queue's (flush again). `full`: the socket is still full, wait for writable.
    pub fn cold_done(&mut self, serial: u64, sent: u64, outcome: Outcome, full: bool) -> bool {
        if self.cold_serial() != Some(serial) {
            return false;
        }
        if sent > 0
            && let Some(Item::Region { root, .. }) = self.items.front()
        {
            // Its pages went by reference, as from the loop's own sendfile.
            if !self
                .zero_copy
                .as_ref()
                .is_some_and(|z| Arc::ptr_eq(z, root) || z.is_revoked())
            {
                self.zero_copy = Some(root.clone());
            }
            self.cold_front = true;
            self.consume(sent as usize, None);
        }
        self.cold = match outcome {
            Outcome::Failed => ColdRead::Failed,
            Outcome::Full if full => ColdRead::Full,
            _ => ColdRead::None,
        };
        true
    }

    /// Hands `[off, off + len)` of the region in front to the cold-send threads, with `ahead`
    /// bytes after it to ask the kernel for. False: no second descriptor of the socket could
    /// be had (out of fds): the caller sends it on the loop, as the synchronous model would.
    fn want_cold(&mut self, sock: &impl AsRawFd, root: &Arc<Webroot>, off: u64, len: u64) -> bool {
        let Ok(sock) = sys::dup(sock) else {
            return false;
        };
        let ahead = self
            .items
            .front()
            .map_or(0, |i| match i {
                Item::Region { off: o, len: l, .. } => (o + l).saturating_sub(off + len),
                Item::Bytes { .. } => 0,
            })
            .min(crate::cold::COLD_CHUNK);
        self.cold = ColdRead::Wanted(crate::cold::Want {
            root: root.clone(),
            off,
            len,
            ahead,
            sock: Some(sock),
        });
        true
    }

    /// Writes as much as the socket takes. `probe` is the worker's buffer for asking whether
    /// bytes are cached (`async-sendfile`); `spent` takes the buffers written whole.
    pub fn flush(
        &mut self,
        sock: &impl AsRawFd,
        io: IoModel,
        probe: &mut [u8],
        mut spent: Option<&mut Vec<Vec<u8>>>,
    ) -> io::Result<Flushed> {
        match self.cold {
            ColdRead::None => {}
            ColdRead::Failed => return Err(cold_failed()),
            ColdRead::Full => {
                self.cold = ColdRead::None;
                return Ok(Flushed::Full);
            }
            _ => return Ok(Flushed::Cold),
        }
        let nowait = io == IoModel::AsyncSendfile;
        let mut budget = FLUSH_BUDGET;
        while !self.items.is_empty() {
            if budget == 0 {
                return Ok(Flushed::Budget);
            }
            // Gather the leading in-memory pieces (and small or mmap regions) into one sendmsg.
            let mut bufs = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let mut next_is_file = false;
            let mut cold = None;
            for item in &self.items {
                if n == bufs.len() {
                    break;
                }
                match item {
                    Item::Bytes { buf, pos } => bufs[n] = IoSlice::new(&buf[*pos..]),
                    Item::Region { root, .. } if root.is_revoked() => return Err(withdrawn()),
                    Item::Region { root, off, len }
                        if io == IoModel::Mmap || *len <= SMALL_REGION =>
                    {
                        // A page missing from the cache would make sendmsg fault it in,
                        // waiting for the disk: a cold-send thread sends it instead.
                        if nowait
                            && ((n == 0 && self.cold_front)
                                || crate::cold::resident(root, *off, *len, probe) < *len)
                        {
                            if n == 0 {
                                cold = Some((root.clone(), *off, *len));
                            }
                            break;
                        }
                        // Only the kernel reads these bytes (see Webroot::kernel_bytes).
                        bufs[n] =
                            IoSlice::new(root.kernel_bytes(*off, *len).ok_or_else(withdrawn)?);
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
                if self.want_cold(sock, &root, off, len) {
                    return Ok(Flushed::Cold);
                }
                // No thread can take it: sent from the loop, as the synchronous models do.
                let body = root.kernel_bytes(off, len).ok_or_else(withdrawn)?;
                sys::sendv(sock, &[IoSlice::new(body)], false)
            } else {
                match self.write_file_front(sock, io, budget) {
                    Some(r) => r,
                    None => return Ok(Flushed::Cold),
                }
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    self.consume(k, spent.as_deref_mut());
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
        budget: u64,
    ) -> Option<io::Result<usize>> {
        let Some(Item::Region { root, off, len }) = self.items.front() else {
            return Some(Ok(0));
        };
        match io {
            IoModel::Sendfile | IoModel::AsyncSendfile => {
                let mut count = (*len).min(budget);
                if io == IoModel::AsyncSendfile {
                    // Send what was just seen cached; the cold-send threads send the rest, a
                    // chunk at a time, and all of the region once it went to them.
                    let hot = if self.cold_front {
                        0
                    } else {
                        crate::cold::fresh_len(root, *off, count)
                    };
                    if hot == 0 {
                        let (root, off) = (root.clone(), *off);
                        let chunk = (*len).min(crate::cold::COLD_CHUNK);
                        if self.want_cold(sock, &root, off, chunk) {
                            return None;
                        }
                        // No thread can take it: sent from the loop, as `--io sendfile` does.
                    } else {
                        count = hot;
                    }
                }
                Some(self.sendfile_front(sock, io, count))
            }
            _ => Some(self.read_front(sock)),
        }
    }

    /// sendfile of `count` bytes of the region in front, from the loop.
    fn sendfile_front(
        &mut self,
        sock: &impl AsRawFd,
        io: IoModel,
        count: u64,
    ) -> io::Result<usize> {
        let Some(Item::Region { root, off, .. }) = self.items.front() else {
            return Ok(0);
        };
        let sent = sys::sendfile(sock, root.file(), *off, count as usize);
        if let Ok(n) = sent
            && io == IoModel::AsyncSendfile
        {
            crate::cold::sent(root, *off, n as u64);
        }
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
        sys::sendv(sock, &[IoSlice::new(self.front_bytes())], false)
    }

    fn front_bytes(&self) -> &[u8] {
        match self.items.front() {
            Some(Item::Bytes { buf, pos }) => &buf[*pos..],
            _ => &[],
        }
    }
}

/// The error that ends a response whose cold read failed.
pub fn cold_failed() -> io::Error {
    io::Error::other("cold read failed or the webroot file ended early: response cut")
}

/// The error that ends a response whose webroot was withdrawn or shrank under it.
fn withdrawn() -> io::Error {
    io::Error::other("webroot written in place: response cut")
}
