//! Writing a webroot: bodies first (streamed, aligned), then the index and the meta section, then
//! the header with the checksums, so the writer never holds more than one body in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::headers::{BlockInput, etag_for, header_block};
use super::layout::*;
use super::path_hash;

/// Where a representation's bytes come from.
#[derive(Debug, Clone)]
pub enum Body {
    /// Bytes already in memory (typically a compressed variant).
    Bytes(Vec<u8>),
    /// A file read while writing; its content must still hash to the given hash.
    File(PathBuf),
}

/// One representation of an object, as given to the writer.
#[derive(Debug, Clone)]
pub struct InputRep {
    pub encoding: Encoding,
    pub body: Body,
    pub len: u64,
    /// blake3 of the body.
    pub hash: [u8; 32],
    /// sha-256 of the body, baked as `Repr-Digest` when present.
    pub sha256: Option<[u8; 32]>,
}

/// One entry of the index.
#[derive(Debug, Clone)]
pub enum InputObject {
    /// A servable object; `reps[0]` must be the identity representation.
    File {
        path: Vec<u8>,
        mime: String,
        mtime: i64,
        cache_control: Option<String>,
        reps: Vec<InputRep>,
    },
    /// A directory named without its trailing slash: the server redirects to `path/`.
    Redirect { path: Vec<u8> },
    /// Another name for a file object (`dir/` for `dir/index.html`).
    Alias { path: Vec<u8>, target: Vec<u8> },
}

impl InputObject {
    pub fn path(&self) -> &[u8] {
        match self {
            InputObject::File { path, .. }
            | InputObject::Redirect { path }
            | InputObject::Alias { path, .. } => path,
        }
    }
}

/// Knobs of the writer.
#[derive(Default)]
pub struct WriteOptions<'a> {
    /// Called with the number of body bytes written so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteStats {
    pub objects: u64,
    pub files: u64,
    pub variants: u64,
    pub body_bytes: u64,
    pub file_len: u64,
}

fn input_err(path: &[u8], what: impl Into<String>) -> Error {
    Error::Input {
        path: String::from_utf8_lossy(path).into_owned(),
        what: what.into(),
    }
}

fn validate(objects: &[InputObject]) -> Result<()> {
    let mut files: HashMap<&[u8], usize> = HashMap::new();
    for o in objects {
        let p = o.path();
        if p.first() != Some(&b'/') {
            return Err(input_err(p, "path must start with '/'"));
        }
        if p.len() > u32::MAX as usize {
            return Err(input_err(p, "path too long"));
        }
        let is_file = usize::from(matches!(o, InputObject::File { .. }));
        if files.insert(p, is_file).is_some() {
            return Err(input_err(p, "duplicate path"));
        }
        if let InputObject::File {
            reps,
            mime,
            cache_control,
            ..
        } = o
        {
            if reps.is_empty() || reps.len() > MAX_REPS || reps[0].encoding != Encoding::Identity {
                return Err(input_err(
                    p,
                    "first representation must be identity, at most 4",
                ));
            }
            let mut seen = [false; MAX_REPS];
            for r in reps {
                if std::mem::replace(&mut seen[r.encoding as usize], true) {
                    return Err(input_err(p, "duplicate encoding"));
                }
            }
            let bad = |s: &str| s.bytes().any(|c| c < 0x20 || c == 0x7f) || s.len() > 4096;
            if bad(mime) || cache_control.as_deref().is_some_and(bad) {
                return Err(input_err(p, "control characters or over-long header value"));
            }
        }
    }
    for o in objects {
        if let InputObject::Alias { path, target } = o
            && files.get(target.as_slice()) != Some(&1)
        {
            return Err(input_err(path, "alias target is not a file object"));
        }
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Placed {
    hdr_off: u64,
    hdr_len: u32,
}

/// Writes `objects` as a webroot to `out` (positioned anywhere; the file is written from 0).
/// `out_name` is used in error messages.
pub fn write_webroot<W: Write + Seek>(
    out: &mut W,
    out_name: &Path,
    mut objects: Vec<InputObject>,
    opts: &WriteOptions<'_>,
) -> Result<WriteStats> {
    objects.sort_by(|a, b| a.path().cmp(b.path()));
    validate(&objects)?;
    let werr = io_err(out_name);
    let mut stats = WriteStats {
        objects: objects.len() as u64,
        ..WriteStats::default()
    };
    let mut w = CountingWriter { inner: out, pos: 0 };
    w.inner.seek(SeekFrom::Start(0)).map_err(io_err(out_name))?;
    w.write_all(&[0u8; ALIGN as usize])
        .map_err(io_err(out_name))?;
    let data_off = w.pos;

    // Bodies, each preceded by its header block, bodies aligned.
    let mut placed: Vec<Vec<Placed>> = Vec::with_capacity(objects.len());
    for o in &objects {
        let mut reps_placed = Vec::new();
        if let InputObject::File {
            path,
            mime,
            mtime,
            cache_control,
            reps,
        } = o
        {
            stats.files += 1;
            let vary = reps.len() > 1;
            for r in reps {
                let etag = etag_for(&r.hash, r.encoding);
                let block = header_block(&BlockInput {
                    mime,
                    len: r.len,
                    etag: &etag,
                    mtime: *mtime,
                    encoding: r.encoding,
                    vary,
                    cache_control: cache_control.as_deref(),
                    repr_digest: r.sha256.as_ref(),
                });
                let body_at = align_up(w.pos + block.len() as u64);
                let hdr_off = body_at - block.len() as u64;
                w.pad_to(hdr_off).map_err(io_err(out_name))?;
                w.write_all(&block).map_err(io_err(out_name))?;
                copy_body(&mut w, path, r, out_name)?;
                stats.body_bytes += r.len;
                if r.encoding != Encoding::Identity {
                    stats.variants += 1;
                }
                if let Some(p) = opts.progress {
                    p(stats.body_bytes);
                }
                reps_placed.push(Placed {
                    hdr_off,
                    hdr_len: u32::try_from(block.len()).map_err(|_| input_err(path, "headers"))?,
                });
            }
        }
        placed.push(reps_placed);
    }
    let data_len = w.pos - data_off;

    // Index.
    let n = u32::try_from(objects.len()).map_err(|_| input_err(b"/", "too many objects"))?;
    let buckets = (objects.len() * 2).next_power_of_two().max(8);
    let mut index = vec![0u8; buckets * BUCKET_LEN];
    for (i, o) in objects.iter().enumerate() {
        let h = path_hash(o.path());
        let mut b = (h as usize) & (buckets - 1);
        while get_u32(&index, b * BUCKET_LEN + 8) != 0 {
            b = (b + 1) & (buckets - 1);
        }
        put_u64(&mut index, b * BUCKET_LEN, h);
        put_u32(&mut index, b * BUCKET_LEN + 8, i as u32 + 1);
    }

    // Meta: records then strings.
    let number: HashMap<&[u8], u32> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.path(), i as u32))
        .collect();
    let mut records = vec![0u8; objects.len() * RECORD_LEN];
    let mut strings: Vec<u8> = Vec::new();
    let mut intern = |s: &[u8]| -> (u32, usize) {
        let off = strings.len() as u32;
        strings.extend_from_slice(s);
        (off, s.len())
    };
    for (i, o) in objects.iter().enumerate() {
        let r = &mut records[i * RECORD_LEN..(i + 1) * RECORD_LEN];
        let (po, pl) = intern(o.path());
        put_u32(r, R_PATH_OFF, po);
        put_u32(r, R_PATH_LEN, pl as u32);
        put_u32(r, R_TARGET, i as u32);
        match o {
            InputObject::File {
                mime,
                mtime,
                cache_control,
                reps,
                ..
            } => {
                let (mo, ml) = intern(mime.as_bytes());
                put_u32(r, R_MIME_OFF, mo);
                put_u16(r, R_MIME_LEN, ml as u16);
                if let Some(cc) = cache_control {
                    let (co, cl) = intern(cc.as_bytes());
                    put_u32(r, R_CC_OFF, co);
                    put_u16(r, R_CC_LEN, cl as u16);
                }
                r[R_KIND] = KIND_FILE;
                r[R_NREPS] = reps.len() as u8;
                put_u64(r, R_MTIME, *mtime as u64);
                for (k, (rep, pl)) in reps.iter().zip(&placed[i]).enumerate() {
                    let p = &mut r[R_REPS + k * REP_LEN..R_REPS + (k + 1) * REP_LEN];
                    p[P_ENCODING] = rep.encoding as u8;
                    put_u32(p, P_HDR_LEN, pl.hdr_len);
                    put_u64(p, P_HDR_OFF, pl.hdr_off);
                    put_u64(p, P_BODY_LEN, rep.len);
                    p[P_HASH..P_HASH + 32].copy_from_slice(&rep.hash);
                }
            }
            InputObject::Redirect { .. } => r[R_KIND] = KIND_REDIRECT,
            InputObject::Alias { target, .. } => {
                r[R_KIND] = KIND_ALIAS;
                put_u32(r, R_TARGET, number[target.as_slice()]);
            }
        }
    }
    if strings.len() > u32::MAX as usize {
        return Err(input_err(b"/", "string area over 4 GiB"));
    }
    records.extend_from_slice(&strings);
    let meta = records;

    w.pad_to(align_up(w.pos)).map_err(io_err(out_name))?;
    let index_off = w.pos;
    w.write_all(&index).map_err(io_err(out_name))?;
    w.pad_to(align_up(w.pos)).map_err(io_err(out_name))?;
    let meta_off = w.pos;
    w.write_all(&meta).map_err(io_err(out_name))?;
    let file_len = w.pos;

    let mut h = [0u8; HEADER_LEN];
    h[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC);
    put_u32(&mut h, H_VERSION, FORMAT_VERSION);
    put_u32(&mut h, H_HEADER_LEN, HEADER_LEN as u32);
    put_u32(&mut h, H_OBJECTS, n);
    put_u32(&mut h, H_BUCKETS, buckets as u32);
    put_u64(&mut h, H_INDEX_OFF, index_off);
    put_u64(&mut h, H_INDEX_LEN, index.len() as u64);
    put_u64(&mut h, H_META_OFF, meta_off);
    put_u64(&mut h, H_META_LEN, meta.len() as u64);
    put_u64(&mut h, H_DATA_OFF, data_off);
    put_u64(&mut h, H_DATA_LEN, data_len);
    put_u64(&mut h, H_FILE_LEN, file_len);
    put_u64(&mut h, H_INDEX_SUM, xxhash_rust::xxh3::xxh3_64(&index));
    put_u64(&mut h, H_META_SUM, xxhash_rust::xxh3::xxh3_64(&meta));
    let sum = xxhash_rust::xxh3::xxh3_64(&h[..HEADER_SUM_AT]);
    put_u64(&mut h, HEADER_SUM_AT, sum);
    w.inner.seek(SeekFrom::Start(0)).map_err(werr)?;
    w.inner.write_all(&h).map_err(io_err(out_name))?;
    w.inner
        .seek(SeekFrom::Start(file_len))
        .map_err(io_err(out_name))?;
    w.inner.flush().map_err(io_err(out_name))?;
    stats.file_len = file_len;
    Ok(stats)
}

fn copy_body<W: Write>(
    w: &mut CountingWriter<'_, W>,
    path: &[u8],
    r: &InputRep,
    out_name: &Path,
) -> Result<()> {
    match &r.body {
        Body::Bytes(b) => {
            if b.len() as u64 != r.len {
                return Err(input_err(path, "body length does not match"));
            }
            w.write_all(b).map_err(io_err(out_name))
        }
        Body::File(src) => {
            let mut f = File::open(src).map_err(io_err(src))?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(io_err(src))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(io_err(out_name))?;
                total += n as u64;
            }
            if total != r.len || hasher.finalize().as_bytes() != &r.hash {
                return Err(Error::Io {
                    path: src.clone(),
                    source: std::io::Error::other("file changed while the webroot was built"),
                });
            }
            Ok(())
        }
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    pos: u64,
}

impl<W: Write> CountingWriter<'_, W> {
    fn pad_to(&mut self, to: u64) -> std::io::Result<()> {
        const ZEROS: [u8; ALIGN as usize] = [0u8; ALIGN as usize];
        while self.pos < to {
            let n = (to - self.pos).min(ALIGN) as usize;
            self.write_all(&ZEROS[..n])?;
        }
        Ok(())
    }
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Rewrites the file length and all checksums of a (possibly damaged) webroot image so that
/// only structural validation can refuse it. For fuzzing and corruption tests: it lets them
/// reach the checks behind the checksums.
#[doc(hidden)]
pub fn reseal(b: &mut [u8]) {
    if b.len() < HEADER_LEN {
        return;
    }
    put_u64(b, H_FILE_LEN, b.len() as u64);
    let section = |b: &[u8], off: usize, len: usize| -> Option<u64> {
        let o = usize::try_from(get_u64(b, off)).ok()?;
        let l = usize::try_from(get_u64(b, len)).ok()?;
        let e = o.checked_add(l)?;
        b.get(o..e).map(xxhash_rust::xxh3::xxh3_64)
    };
    if let Some(s) = section(b, H_INDEX_OFF, H_INDEX_LEN) {
        put_u64(b, H_INDEX_SUM, s);
    }
    if let Some(s) = section(b, H_META_OFF, H_META_LEN) {
        put_u64(b, H_META_SUM, s);
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&b[..HEADER_SUM_AT]);
    put_u64(b, HEADER_SUM_AT, sum);
}
