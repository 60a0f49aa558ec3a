//! The build pipeline: scan, analyse every file in parallel (hash, type, variants), write the
//! webroot to a temporary file, fsync, rename into place.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use globset::{Glob, GlobMatcher};
use httpd_common::webroot::{Body, Encoding, InputObject, InputRep, WriteOptions, write_webroot};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use sha2::Digest;

use crate::{compress, mime, scan};

/// One `--cache-control GLOB=VALUE` rule.
#[derive(Debug, Clone)]
pub struct CacheRule {
    pub glob: GlobMatcher,
    pub value: String,
}

impl std::str::FromStr for CacheRule {
    type Err = String;
    fn from_str(s: &str) -> Result<CacheRule, String> {
        let (g, v) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected GLOB=VALUE, e.g. '*.css=max-age=86400'"))?;
        if v.is_empty() || v.bytes().any(|c| c.is_ascii_control()) {
            return Err(format!("{s:?}: empty value or control characters"));
        }
        let glob = Glob::new(g)
            .map_err(|e| format!("{g:?}: {e}"))?
            .compile_matcher();
        Ok(CacheRule {
            glob,
            value: v.to_string(),
        })
    }
}

pub struct Options {
    pub src: PathBuf,
    pub out: PathBuf,
    pub include_dotfiles: bool,
    pub outside_links: scan::OutsideLinks,
    pub mime_types: HashMap<String, String>,
    pub cache_rules: Vec<CacheRule>,
    pub digest: bool,
    pub compress: bool,
}

#[derive(Debug)]
pub struct Summary {
    pub objects: u64,
    pub files: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub variants: u64,
    /// Symlinks leading outside the source directory that were followed.
    pub outside_links: u64,
    /// Symlinks skipped (each named in a warning): loops and dangling links.
    pub loops: u64,
    pub dangling: u64,
    pub seconds: f64,
}

fn analyse(f: &scan::SourceFile, opts: &Options) -> Result<InputObject> {
    let data =
        std::fs::read(&f.abs).with_context(|| format!("{}: cannot read", f.abs.display()))?;
    let mime = mime::detect(&f.rel, &data, &opts.mime_types)?;
    let sha =
        |b: &[u8]| -> Option<[u8; 32]> { opts.digest.then(|| sha2::Sha256::digest(b).into()) };
    let mut reps = vec![InputRep {
        encoding: Encoding::Identity,
        body: Body::File(f.abs.clone()),
        len: data.len() as u64,
        hash: *blake3::hash(&data).as_bytes(),
        sha256: sha(&data),
    }];
    if opts.compress && !mime::is_precompressed(&mime) {
        for (encoding, v) in compress::variants(&data)? {
            reps.push(InputRep {
                encoding,
                len: v.len() as u64,
                hash: *blake3::hash(&v).as_bytes(),
                sha256: sha(&v),
                body: Body::Bytes(v),
            });
        }
    }
    let cache_control = opts
        .cache_rules
        .iter()
        .find(|r| r.glob.is_match(&f.rel))
        .map(|r| r.value.clone());
    Ok(InputObject::File {
        path: f.key.clone(),
        mime,
        mtime: f.mtime,
        cache_control,
        reps,
    })
}

fn progress(total: u64, msg: &'static str) -> ProgressBar {
    // Draws only when stderr is a terminal.
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:9} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(msg);
    bar
}

/// Compiles `opts.src` into `opts.out`. OUT is replaced atomically or left as it was.
pub fn compile(opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    let tree = match scan::scan(&opts.src, opts.include_dotfiles, opts.outside_links) {
        Ok(t) => t,
        Err(errors) => bail!(
            "{} problem(s) in {}:\n  {}",
            errors.len(),
            opts.src.display(),
            errors.join("\n  ")
        ),
    };
    for w in &tree.warnings {
        eprintln!("mkroot: warning: {w}");
    }
    let bytes_in: u64 = tree
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.abs).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress(bytes_in, "analysing");
    let done = AtomicU64::new(0);
    let results: Vec<Result<InputObject>> = tree
        .files
        .par_iter()
        .map(|f| {
            let r = analyse(f, opts);
            if let Ok(InputObject::File { reps, .. }) = &r {
                bar.set_position(done.fetch_add(reps[0].len, Ordering::Relaxed) + reps[0].len);
            }
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut objects = Vec::with_capacity(results.len() + tree.dirs.len() * 2);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(o) => objects.push(o),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} file(s) could not be used:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    let keys: std::collections::HashSet<Vec<u8>> =
        tree.files.iter().map(|f| f.key.clone()).collect();
    let mut add_index = |dir: &[u8]| {
        let index = [dir, b"/index.html"].concat();
        if keys.contains(&index) {
            objects.push(InputObject::Alias {
                path: [dir, b"/"].concat(),
                target: index,
            });
        }
    };
    add_index(b"");
    for d in &tree.dirs {
        add_index(d);
    }
    for d in &tree.dirs {
        objects.push(InputObject::Redirect { path: d.clone() });
    }

    let out_dir = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = opts
        .out
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&out_dir)
        .with_context(|| format!("{}: cannot create a temporary file", out_dir.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let bar = progress(bytes_in, "writing");
    let report = |n: u64| bar.set_position(n);
    let stats = write_webroot(
        &mut w,
        &opts.out,
        objects,
        &WriteOptions {
            progress: Some(&report),
        },
    )?;
    drop(w);
    bar.finish_and_clear();
    finish(tmp, &opts.out, &out_dir)?;
    Ok(Summary {
        objects: stats.objects,
        files: stats.files,
        bytes_in,
        bytes_out: stats.file_len,
        variants: stats.variants,
        outside_links: tree.outside_links,
        loops: tree.loops,
        dangling: tree.dangling,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// fsync the file, make it world-readable like any web content, rename it over OUT, fsync the
/// directory so the rename itself is durable.
fn finish(tmp: tempfile::NamedTempFile, out: &Path, out_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = tmp.as_file();
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.sync_all()
        .with_context(|| format!("{}: fsync", tmp.path().display()))?;
    tmp.persist(out)
        .with_context(|| format!("{}: cannot rename into place", out.display()))?;
    std::fs::File::open(out_dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: fsync directory", out_dir.display()))?;
    Ok(())
}
