//! Opening (with full structural validation) and looking up a webroot.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use memmap2::Mmap;

use super::error::{Error, Result};
use super::headers::etag_for;
use super::layout::*;
use super::path_hash;

/// What an index entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A servable object with representations.
    File,
    /// A directory named without its slash: redirect to `path/`.
    Redirect,
}

/// One stored representation of an object: the header block at `hdr_off` is followed directly
/// by the body, so `[hdr_off, hdr_off + hdr_len + body_len)` is a complete 200 response tail.
#[derive(Clone, Debug)]
pub struct Rep {
    pub encoding: Encoding,
    pub hdr_off: u64,
    pub hdr_len: u32,
    pub body_len: u64,
    pub hash: [u8; 32],
    /// The strong ETag, quotes included.
    pub etag: Box<str>,
}

impl Rep {
    /// File offset of the first body byte (4 KiB-aligned).
    pub fn body_off(&self) -> u64 {
        self.hdr_off + u64::from(self.hdr_len)
    }
}

/// One decoded index entry.
#[derive(Clone, Debug)]
pub struct Object {
    pub path: Box<[u8]>,
    pub kind: Kind,
    pub mime: Box<str>,
    pub cache_control: Option<Box<str>>,
    /// Last-Modified, Unix seconds.
    pub mtime: i64,
    /// `reps[0]` is identity; the others are precompressed variants.
    pub reps: Vec<Rep>,
    target: u32,
}

impl Object {
    /// The identity representation (None for redirects).
    pub fn identity(&self) -> Option<&Rep> {
        self.reps.first()
    }
    /// The variant with this encoding, if stored.
    pub fn rep(&self, e: Encoding) -> Option<&Rep> {
        self.reps.iter().find(|r| r.encoding == e)
    }
    /// Whether responses must carry `Vary: Accept-Encoding`.
    pub fn has_variants(&self) -> bool {
        self.reps.len() > 1
    }
}

/// A problem found by [`Webroot::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyProblem {
    pub path: String,
    pub what: String,
}

/// How [`Webroot::open_with`] opens a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Take a read lease (`F_SETLEASE`) whose break is announced with this signal. The caller
    /// must handle that signal before opening (unhandled, SIGIO terminates the process), and
    /// then call [`Webroot::lease_broken`] on its webroots.
    pub lease_signal: Option<i32>,
}

/// Whether a webroot holds a read lease on its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Held: a writer's open waits (up to `lease-break-time`) until this webroot is dropped.
    Held,
    /// Not asked for.
    NotAsked,
    /// Asked for and refused (not the owner and no CAP_LEASE, a filesystem without leases):
    /// an in-place write is only noticed after the fact.
    Refused(String),
}

/// Size and modification time of the file when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// An open, validated webroot. Share it behind an `Arc`.
///
/// User space never reads the mapped file: the header, index and meta sections are copied
/// with `pread` at open and validated in memory, and bodies and header blocks reach the socket
/// only through syscalls (`sendfile`, `sendmsg` from the mapping, `pread`). A writer that
/// truncates the file under us therefore makes a syscall fail (EFAULT, a short count), never
/// raises SIGBUS. With a lease (see [`OpenOptions`]) a writer cannot even start before the
/// webroot is dropped.
pub struct Webroot {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
    objects: Vec<Object>,
    /// A copy of the index section.
    index: Box<[u8]>,
    buckets: usize,
    data_len: u64,
    stamp: Stamp,
    lease: Lease,
    revoked: AtomicBool,
    /// One word per 4 KiB page of the file, for the server (see [`Webroot::page_stamps`]).
    page_stamps: OnceLock<Box<[AtomicU32]>>,
}

impl Drop for Webroot {
    fn drop(&mut self) {
        if self.lease == Lease::Held {
            // The mapping holds the open file too, so closing alone would keep the lease until
            // the unmap: release it first, explicitly.
            let _ = set_lease(&self.file, libc::F_UNLCK);
        }
    }
}

/// fcntl(F_SETLEASE).
fn set_lease(file: &File, kind: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl with integer arguments on a descriptor this File owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, kind) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `F_SETSIG` of Linux's <fcntl.h> (not exported by the libc crate).
const F_SETSIG: libc::c_int = 10;

/// Takes a read lease announced by `signal`. EAGAIN: the file is open for writing (or a lease
/// break is in progress).
fn take_lease(file: &File, signal: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl with integer arguments on a descriptor this File owns. The signal is set
    // before the lease, so a break never raises the default SIGIO.
    if unsafe { libc::fcntl(file.as_raw_fd(), F_SETSIG, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_lease(file, libc::F_RDLCK)
}

/// Where validation reads the file's sections from.
trait Source {
    fn len(&self) -> u64;
    /// `len` bytes at `off` (both within [`Source::len`]).
    fn read(&self, off: u64, len: usize) -> std::io::Result<Vec<u8>>;
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read(&self, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        usize::try_from(off)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }
}

struct FileSource<'a> {
    file: &'a File,
    len: u64,
}

impl Source for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&self, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }
}

/// What validation found: everything lookups need, in owned memory.
struct Validated {
    objects: Vec<Object>,
    index: Vec<u8>,
    buckets: usize,
    data_len: u64,
}

impl std::fmt::Debug for Webroot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webroot")
            .field("path", &self.path)
            .field("objects", &self.objects.len())
            .finish()
    }
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn bad(&self, section: &'static str, what: impl Into<String>) -> Error {
        Error::Malformed {
            path: self.path.to_path_buf(),
            section,
            what: what.into(),
        }
    }
}

fn section(
    ctx: &Ctx<'_>,
    name: &'static str,
    off: u64,
    len: u64,
    file_len: u64,
) -> Result<(usize, usize)> {
    let end = off
        .checked_add(len)
        .ok_or_else(|| ctx.bad(name, "offset overflow"))?;
    if off < ALIGN || !off.is_multiple_of(ALIGN) || end > file_len {
        return Err(ctx.bad(
            name,
            format!("section {off}+{len} outside the file or unaligned"),
        ));
    }
    let o = usize::try_from(off).map_err(|_| ctx.bad(name, "offset too large"))?;
    let e = usize::try_from(end).map_err(|_| ctx.bad(name, "offset too large"))?;
    Ok((o, e))
}

impl Webroot {
    /// Opens and validates a webroot file. Every error names the file and what is wrong.
    pub fn open(path: impl AsRef<Path>) -> Result<Webroot> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`Webroot::open`] with options (a read lease).
    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Webroot> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let lease = match opts.lease_signal {
            None => Lease::NotAsked,
            Some(sig) => match take_lease(&file, sig) {
                Ok(()) => Lease::Held,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    return Err(Error::Busy {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) => Lease::Refused(e.to_string()),
            },
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let stamp = Stamp::of(&meta);
        let v = Self::validate(
            path,
            &FileSource {
                file: &file,
                len: meta.len(),
            },
        )?;
        // SAFETY: the mapping is never read in user space (module docs): its bytes go only to
        // syscalls, where a page the file no longer has makes the call fail with EFAULT
        // instead of raising SIGBUS, so a writer changing the file cannot fault this process.
        let map = match meta.len() {
            0 => None,
            _ => Some(unsafe { Mmap::map(&file) }.map_err(io)?),
        };
        Ok(Webroot {
            path: path.to_path_buf(),
            file,
            map,
            objects: v.objects,
            index: v.index.into_boxed_slice(),
            buckets: v.buckets,
            data_len: v.data_len,
            stamp,
            lease,
            revoked: AtomicBool::new(false),
            page_stamps: OnceLock::new(),
        })
    }

    /// Runs every check of [`Webroot::open`] on bytes in memory (used by the fuzz target).
    /// Returns the number of index entries.
    pub fn validate_bytes(name: &Path, bytes: &[u8]) -> Result<usize> {
        Self::validate(name, bytes).map(|v| v.objects.len())
    }

    fn validate<S: Source + ?Sized>(path: &Path, src: &S) -> Result<Validated> {
        let ctx = Ctx { path };
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if src.len() < HEADER_LEN as u64 {
            return Err(Error::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let m = &src.read(0, HEADER_LEN).map_err(io)?[..];
        if m[H_MAGIC..H_MAGIC + 8] != MAGIC {
            return Err(Error::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let version = get_u32(m, H_VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::Version {
                path: path.to_path_buf(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        if xxhash_rust::xxh3::xxh3_64(&m[..HEADER_SUM_AT]) != get_u64(m, HEADER_SUM_AT) {
            return Err(Error::Checksum {
                path: path.to_path_buf(),
                section: "header",
            });
        }
        let file_len = get_u64(m, H_FILE_LEN);
        if file_len != src.len() {
            return Err(Error::Length {
                path: path.to_path_buf(),
                expected: file_len,
                found: src.len(),
            });
        }
        if get_u32(m, H_HEADER_LEN) as usize != HEADER_LEN {
            return Err(ctx.bad("header", "unexpected header length"));
        }
        let n = get_u32(m, H_OBJECTS) as usize;
        let buckets = get_u32(m, H_BUCKETS) as usize;
        if !buckets.is_power_of_two() || buckets <= n {
            return Err(ctx.bad(
                "header",
                "bucket count not a power of two above the object count",
            ));
        }
        let (index_off, index_end) = section(
            &ctx,
            "index",
            get_u64(m, H_INDEX_OFF),
            get_u64(m, H_INDEX_LEN),
            file_len,
        )?;
        if index_end - index_off != buckets * BUCKET_LEN {
            return Err(ctx.bad("index", "length does not match the bucket count"));
        }
        let (meta_off, meta_end) = section(
            &ctx,
            "meta",
            get_u64(m, H_META_OFF),
            get_u64(m, H_META_LEN),
            file_len,
        )?;
        let data_off = get_u64(m, H_DATA_OFF);
        let data_len = get_u64(m, H_DATA_LEN);
        let data_end = data_off
            .checked_add(data_len)
            .ok_or_else(|| ctx.bad("header", "data section overflow"))?;
        if data_off < ALIGN || data_end > index_off as u64 || index_end as u64 > meta_off as u64 {
            return Err(ctx.bad("header", "sections overlap or are out of order"));
        }
        let index = src
            .read(index_off as u64, index_end - index_off)
            .map_err(io)?;
        let meta = &src.read(meta_off as u64, meta_end - meta_off).map_err(io)?[..];
        if xxhash_rust::xxh3::xxh3_64(&index) != get_u64(m, H_INDEX_SUM) {
            return Err(Error::Checksum {
                path: path.to_path_buf(),
                section: "index",
            });
        }
        if xxhash_rust::xxh3::xxh3_64(meta) != get_u64(m, H_META_SUM) {
            return Err(Error::Checksum {
                path: path.to_path_buf(),
                section: "meta",
            });
        }
        let rec_bytes = n
            .checked_mul(RECORD_LEN)
            .filter(|&b| b <= meta.len())
            .ok_or_else(|| ctx.bad("meta", "shorter than its records"))?;
        let strings = &meta[rec_bytes..];
        let string = |off: u32, len: usize, what: &str| -> Result<&[u8]> {
            let o = off as usize;
            o.checked_add(len)
                .and_then(|e| strings.get(o..e))
                .ok_or_else(|| ctx.bad("meta", format!("{what} string out of bounds")))
        };

        let mut objects = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for i in 0..n {
            let r = &meta[i * RECORD_LEN..(i + 1) * RECORD_LEN];
            let p = string(
                get_u32(r, R_PATH_OFF),
                get_u32(r, R_PATH_LEN) as usize,
                "path",
            )?;
            if p.first() != Some(&b'/') {
                return Err(ctx.bad("meta", format!("object {i}: path does not start with '/'")));
            }
            let kind = r[R_KIND];
            let target = get_u32(r, R_TARGET);
            if target as usize >= n {
                return Err(ctx.bad("meta", format!("object {i}: target out of range")));
            }
            let mut obj = Object {
                path: p.into(),
                kind: Kind::Redirect,
                mime: "".into(),
                cache_control: None,
                mtime: get_u64(r, R_MTIME) as i64,
                reps: Vec::new(),
                target,
            };
            match kind {
                KIND_FILE => {
                    obj.kind = Kind::File;
                    let text = |b: &[u8], what: &str| -> Result<Box<str>> {
                        std::str::from_utf8(b)
                            .ok()
                            .filter(|s| !s.bytes().any(|c| c < 0x20 || c == 0x7f))
                            .map(Box::from)
                            .ok_or_else(|| ctx.bad("meta", format!("object {i}: bad {what}")))
                    };
                    obj.mime = text(
                        string(
                            get_u32(r, R_MIME_OFF),
                            get_u16(r, R_MIME_LEN) as usize,
                            "mime",
                        )?,
                        "mime",
                    )?;
                    let cl = get_u16(r, R_CC_LEN) as usize;
                    if cl > 0 {
                        obj.cache_control = Some(text(
                            string(get_u32(r, R_CC_OFF), cl, "cache-control")?,
                            "cache-control",
                        )?);
                    }
                    let nreps = r[R_NREPS] as usize;
                    if nreps == 0 || nreps > MAX_REPS {
                        return Err(ctx.bad("meta", format!("object {i}: {nreps} representations")));
                    }
                    for k in 0..nreps {
                        let p = &r[R_REPS + k * REP_LEN..R_REPS + (k + 1) * REP_LEN];
                        let enc = Encoding::from_u8(p[P_ENCODING])
                            .filter(|e| (k == 0) == (*e == Encoding::Identity))
                            .ok_or_else(|| ctx.bad("meta", format!("object {i}: bad encoding")))?;
                        let hdr_off = get_u64(p, P_HDR_OFF);
                        let hdr_len = get_u32(p, P_HDR_LEN);
                        let body_len = get_u64(p, P_BODY_LEN);
                        let end = hdr_off
                            .checked_add(u64::from(hdr_len))
                            .and_then(|v| v.checked_add(body_len));
                        if hdr_off < data_off || end.is_none_or(|e| e > data_end) || hdr_len < 2 {
                            return Err(ctx.bad(
                                "meta",
                                format!("object {i}: body outside the data section"),
                            ));
                        }
                        let mut hash = [0u8; 32];
                        hash.copy_from_slice(&p[P_HASH..P_HASH + 32]);
                        obj.reps.push(Rep {
                            encoding: enc,
                            hdr_off,
                            hdr_len,
                            body_len,
                            etag: etag_for(&hash, enc).into(),
                            hash,
                        });
                    }
                }
                KIND_REDIRECT | KIND_ALIAS => {}
                other => return Err(ctx.bad("meta", format!("object {i}: unknown kind {other}"))),
            }
            kinds.push(kind);
            objects.push(obj);
        }
        for (i, o) in objects.iter().enumerate() {
            if kinds[i] == KIND_ALIAS && kinds[o.target as usize] != KIND_FILE {
                return Err(ctx.bad("meta", format!("object {i}: alias of a non-file")));
            }
        }
        // Every object is reachable through exactly one bucket whose hash matches its path,
        // and `lookup` gets there: the probe from the hash's own bucket meets no empty bucket
        // and no other object of the same path on the way.
        let mut seen = vec![false; n];
        for b in 0..buckets {
            let slot = get_u32(&index, b * BUCKET_LEN + 8) as usize;
            if slot == 0 {
                continue;
            }
            let o = objects
                .get(slot - 1)
                .ok_or_else(|| ctx.bad("index", format!("bucket {b} names object {slot}")))?;
            let h = get_u64(&index, b * BUCKET_LEN);
            if h != path_hash(&o.path) || std::mem::replace(&mut seen[slot - 1], true) {
                return Err(ctx.bad("index", format!("bucket {b} inconsistent")));
            }
            let mut p = (h as usize) & (buckets - 1);
            while p != b {
                let s = get_u32(&index, p * BUCKET_LEN + 8) as usize;
                if s == 0 || objects.get(s - 1).is_some_and(|x| x.path == o.path) {
                    return Err(ctx.bad("index", format!("bucket {b} unreachable by lookup")));
                }
                p = (p + 1) & (buckets - 1);
            }
        }
        if seen.iter().any(|s| !s) {
            return Err(ctx.bad("index", "an object is missing from the index"));
        }
        // Aliases resolve to their target's data once, so lookups need no second step.
        for i in 0..n {
            if kinds[i] == KIND_ALIAS {
                let t = &objects[objects[i].target as usize];
                let (kind, mime, cc, mtime, reps) = (
                    t.kind,
                    t.mime.clone(),
                    t.cache_control.clone(),
                    t.mtime,
                    t.reps.clone(),
                );
                let o = &mut objects[i];
                (o.kind, o.mime, o.cache_control, o.mtime, o.reps) = (kind, mime, cc, mtime, reps);
            }
        }
        Ok(Validated {
            objects,
            index,
            buckets,
            data_len,
        })
    }

    /// The object stored under a normalised path (`/`, `/dir/`, `/a/b.css`), aliases resolved.
    /// Cost is independent of the number of objects: one hash, a short linear probe.
    pub fn lookup(&self, path: &[u8]) -> Option<&Object> {
        let h = path_hash(path);
        let mask = self.buckets - 1;
        let mut b = (h as usize) & mask;
        let index = &self.index[..];
        loop {
            let at = b * BUCKET_LEN;
            let slot = get_u32(index, at + 8) as usize;
            if slot == 0 {
                return None;
            }
            if get_u64(index, at) == h {
                let o = &self.objects[slot - 1];
                if &*o.path == path {
                    return Some(o);
                }
            }
            b = (b + 1) & mask;
        }
    }

    /// All objects in path order (aliases included, resolved).
    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    /// The file this webroot was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for sendfile and pread.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes `[off, off + len)` of the mapped file, for handing to a syscall (sendmsg) and
    /// nothing else: user space must never read them, as a writer may have truncated the file
    /// (a read would raise SIGBUS; a syscall gets EFAULT). `None` when out of the mapping.
    pub fn kernel_bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        let s = usize::try_from(off).ok()?;
        let e = s.checked_add(usize::try_from(len).ok()?)?;
        self.map.as_ref()?.get(s..e)
    }

    /// Tells the kernel this file is read at random: no readahead around reads or faults
    /// (`posix_fadvise(RANDOM)` on the file, `madvise(RANDOM)` on the mapping). For a server
    /// that reads in what it needs itself.
    pub fn advise_random(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        if let Some(m) = &self.map {
            m.advise(memmap2::Advice::Random)?;
        }
        // SAFETY: posix_fadvise with integer arguments on a descriptor this File owns.
        let r =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        Ok(())
    }

    /// One word per 4 KiB page of the file, zero at first, for the server's own use: httpd
    /// stamps in them when it last saw each page in the page cache, so that a hot page is not
    /// asked about again at every hit. Allocated at the first call.
    pub fn page_stamps(&self) -> &[AtomicU32] {
        self.page_stamps.get_or_init(|| {
            let len = self.map.as_ref().map_or(0, |m| m.len());
            let pages = len.div_ceil(4096);
            (0..pages).map(|_| AtomicU32::new(0)).collect()
        })
    }

    /// Total bytes of the data section (header blocks, bodies, padding).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Reads `len` bytes at `off` with pread (a copy user space may look at).
    fn read_at(&self, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// The header block of a representation, read from the file.
    pub fn header_block(&self, rep: &Rep) -> std::io::Result<Vec<u8>> {
        self.read_at(rep.hdr_off, u64::from(rep.hdr_len))
    }

    /// The body of a representation, read from the file.
    pub fn body(&self, rep: &Rep) -> std::io::Result<Vec<u8>> {
        self.read_at(rep.body_off(), rep.body_len)
    }

    /// Whether the file holds a read lease, and why not.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether a writer is waiting for this webroot's lease: its file is about to change, so
    /// nothing more may be sent from it, and it must be dropped for the writer to go on.
    pub fn lease_broken(&self) -> bool {
        use std::os::fd::AsRawFd;
        if self.lease != Lease::Held {
            return false;
        }
        // SAFETY: fcntl with integer arguments on a descriptor this Webroot owns.
        let t = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) };
        t != libc::F_RDLCK
    }

    /// Whether the file's size or modification time differ from when it was opened (written
    /// in place, possibly without a lease).
    pub fn changed_on_disk(&self) -> bool {
        self.file
            .metadata()
            .map_or(true, |m| Stamp::of(&m) != self.stamp)
    }

    /// Marks this webroot as withdrawn: nothing more may be sent from it.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// See [`Webroot::revoke`].
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Checks every body against its content hash and every header block for its framing,
    /// reading the file with pread. Returns the problems found (empty: the file is intact).
    pub fn verify(&self) -> Vec<VerifyProblem> {
        let mut problems = Vec::new();
        for (o, i) in self.objects.iter().zip(0u32..) {
            if o.target != i {
                continue; // alias: checked through its target
            }
            for r in &o.reps {
                let mut report = |what: String| {
                    problems.push(VerifyProblem {
                        path: String::from_utf8_lossy(&o.path).into_owned(),
                        what,
                    })
                };
                match self.body_hash(r) {
                    Ok(h) if h == r.hash => {}
                    Ok(_) => report(format!(
                        "{} body does not match its content hash",
                        r.encoding.token()
                    )),
                    Err(e) => report(format!("{} body unreadable: {e}", r.encoding.token())),
                }
                let block = self.header_block(r).unwrap_or_default();
                let cl = format!("Content-Length: {}\r\n", r.body_len);
                let et = format!("ETag: {}\r\n", r.etag);
                let contains = |n: &str| block.windows(n.len()).any(|w| w == n.as_bytes());
                if !block.ends_with(b"\r\n\r\n") || !contains(&cl) || !contains(&et) {
                    report(format!("{} header block corrupted", r.encoding.token()));
                }
            }
        }
        problems
    }

    /// BLAKE3 of a body, read in 1 MiB pieces.
    fn body_hash(&self, r: &Rep) -> std::io::Result<[u8; 32]> {
        const PIECE: u64 = 1 << 20;
        let mut hasher = blake3::Hasher::new();
        let mut done = 0;
        while done < r.body_len {
            let n = (r.body_len - done).min(PIECE);
            hasher.update(&self.read_at(r.body_off() + done, n)?);
            done += n;
        }
        Ok(*hasher.finalize().as_bytes())
    }
}
