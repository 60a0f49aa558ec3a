//! Opening (with full structural validation) and looking up a webroot.

use std::fs::File;
use std::path::{Path, PathBuf};

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

/// An open, validated webroot. Immutable; share it behind an `Arc`.
pub struct Webroot {
    path: PathBuf,
    file: File,
    map: Mmap,
    objects: Vec<Object>,
    index_off: usize,
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
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: webroot files are immutable by contract (written to a temporary name and
        // renamed into place, never modified in place), so the mapping cannot change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (objects, index_off, buckets, data_len) = Self::validate(path, &map)?;
        Ok(Webroot {
            path: path.to_path_buf(),
            file,
            map,
            objects,
            index_off,
            buckets,
            data_len,
        })
    }

    /// Runs every check of [`Webroot::open`] on bytes in memory (used by the fuzz target).
    /// Returns the number of index entries.
    pub fn validate_bytes(name: &Path, bytes: &[u8]) -> Result<usize> {
        Self::validate(name, bytes).map(|(objects, ..)| objects.len())
    }

    fn validate(path: &Path, m: &[u8]) -> Result<(Vec<Object>, usize, usize, u64)> {
        let ctx = Ctx { path };
        if m.len() < HEADER_LEN || m[H_MAGIC..H_MAGIC + 8] != MAGIC {
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
        if file_len != m.len() as u64 {
            return Err(Error::Length {
                path: path.to_path_buf(),
                expected: file_len,
                found: m.len() as u64,
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
        let index = &m[index_off..index_end];
        let meta = &m[meta_off..meta_end];
        if xxhash_rust::xxh3::xxh3_64(index) != get_u64(m, H_INDEX_SUM) {
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
        // Every object is reachable through exactly one bucket whose hash matches its path.
        let mut seen = vec![false; n];
        for b in 0..buckets {
            let slot = get_u32(index, b * BUCKET_LEN + 8) as usize;
            if slot == 0 {
                continue;
            }
            let o = objects
                .get(slot - 1)
                .ok_or_else(|| ctx.bad("index", format!("bucket {b} names object {slot}")))?;
            if get_u64(index, b * BUCKET_LEN) != path_hash(&o.path)
                || std::mem::replace(&mut seen[slot - 1], true)
            {
                return Err(ctx.bad("index", format!("bucket {b} inconsistent")));
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
        Ok((objects, index_off, buckets, data_len))
    }

    /// The object stored under a normalised path (`/`, `/dir/`, `/a/b.css`), aliases resolved.
    /// Cost is independent of the number of objects: one hash, a short linear probe.
    pub fn lookup(&self, path: &[u8]) -> Option<&Object> {
        let h = path_hash(path);
        let mask = self.buckets - 1;
        let mut b = (h as usize) & mask;
        let index = &self.map[self.index_off..self.index_off + self.buckets * BUCKET_LEN];
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

    /// The open file, for sendfile.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Total bytes of the data section (header blocks, bodies, padding).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The header block of a representation (validated in bounds at open).
    pub fn header_block(&self, rep: &Rep) -> &[u8] {
        let s = rep.hdr_off as usize;
        &self.map[s..s + rep.hdr_len as usize]
    }

    /// The body of a representation (validated in bounds at open).
    pub fn body(&self, rep: &Rep) -> &[u8] {
        let s = rep.body_off() as usize;
        &self.map[s..s + rep.body_len as usize]
    }

    /// Checks every body against its content hash and every header block for its framing.
    /// Returns the problems found (empty: the file is intact).
    pub fn verify(&self) -> Vec<VerifyProblem> {
        let mut problems = Vec::new();
        for (o, i) in self.objects.iter().zip(0u32..) {
            if o.target != i {
                continue; // alias: checked through its target
            }
            for r in &o.reps {
                let name = || String::from_utf8_lossy(&o.path).into_owned();
                if blake3::hash(self.body(r)).as_bytes() != &r.hash {
                    problems.push(VerifyProblem {
                        path: name(),
                        what: format!(
                            "{} body does not match its content hash",
                            r.encoding.token()
                        ),
                    });
                }
                let block = self.header_block(r);
                let cl = format!("Content-Length: {}\r\n", r.body_len);
                let et = format!("ETag: {}\r\n", r.etag);
                let contains = |n: &str| block.windows(n.len()).any(|w| w == n.as_bytes());
                if !block.ends_with(b"\r\n\r\n") || !contains(&cl) || !contains(&et) {
                    problems.push(VerifyProblem {
                        path: name(),
                        what: format!("{} header block corrupted", r.encoding.token()),
                    });
                }
            }
        }
        problems
    }
}
