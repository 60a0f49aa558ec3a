//! Walking the source tree: which files become objects, which directories get redirects, and
//! every file that cannot be used, named.
//!
//! Symlinks are followed and compiled under the link's path, as if the target were there (a
//! link to a directory is walked as a directory). A link that leads outside the source
//! directory is followed the same way and counted, or refused with [`OutsideLinks::Refuse`].
//! A dangling link and a link that would loop have nothing to serve: they are skipped, each
//! with one warning line naming it.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A regular file to compile.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Index key: `/` + path relative to the root, `/`-separated, raw bytes.
    pub key: Vec<u8>,
    pub abs: PathBuf,
    pub rel: PathBuf,
    pub mtime: i64,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: Vec<SourceFile>,
    /// Keys of directories below the root, without trailing slash.
    pub dirs: Vec<Vec<u8>>,
    /// Symlinks leading outside the source directory that were followed.
    pub outside_links: u64,
    /// Symlinks (or directories) skipped because walking them would loop.
    pub loops: u64,
    /// Dangling symlinks skipped.
    pub dangling: u64,
    /// One line per skipped entry, naming it.
    pub warnings: Vec<String>,
}

/// What to do with a symlink whose target lies outside the source directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideLinks {
    /// Compile the target under the link's path (what nginx, Caddy and others serve).
    Follow,
    /// Report the link as a problem: no webroot is written (trees from untrusted authors).
    Refuse,
}

/// The directory of custom error pages, kept even when dotfiles are skipped.
pub const ERRORS_DIR: &str = ".errors";

/// ELOOP on Linux: a cycle of symlinks (`io::ErrorKind::FilesystemLoop` is not stable yet).
const ELOOP: i32 = 40;

/// A directory's identity on this machine.
type DirId = (u64, u64);

fn dir_id(md: &Metadata) -> DirId {
    (md.dev(), md.ino())
}

fn key_of(rel: &Path) -> Vec<u8> {
    let mut key = Vec::new();
    for c in rel.components() {
        if let Component::Normal(s) = c {
            key.push(b'/');
            key.extend_from_slice(s.as_bytes());
        }
    }
    key
}

/// (dev, inode) of the directory at canonical path `canon` and of every directory above it.
fn lineage(canon: &Path) -> Vec<DirId> {
    canon
        .ancestors()
        .filter_map(|a| std::fs::metadata(a).ok())
        .map(|md| dir_id(&md))
        .collect()
}

/// The names in `dir`, sorted (bytewise) so that the walk is reproducible.
fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn mtime_of(md: &Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// A symlink, resolved.
struct Link {
    /// Canonical path of the target.
    target: PathBuf,
    outside: bool,
}

struct Walker<'a> {
    /// Canonical source directory.
    root: &'a Path,
    include_dotfiles: bool,
    outside: OutsideLinks,
    tree: Tree,
    problems: Vec<String>,
    /// Directories that entering again would loop: every directory on the current walk path,
    /// and the real ancestors of the root and of every directory a symlink on the path led
    /// into (walking an ancestor comes back to its descendant).
    path: Vec<DirId>,
}

impl Walker<'_> {
    fn problem(&mut self, path: &Path, what: impl std::fmt::Display) {
        self.problems.push(format!("{}: {what}", path.display()));
    }

    /// Reports a problem and uses nothing.
    fn refuse<T>(&mut self, path: &Path, what: impl std::fmt::Display) -> Option<T> {
        self.problem(path, what);
        None
    }

    fn hidden(&self, rel: &Path) -> bool {
        let Some(name) = rel.file_name().map(OsStrExt::as_bytes) else {
            return false;
        };
        name.first() == Some(&b'.')
            && !self.include_dotfiles
            && !(rel.components().count() == 1 && name == ERRORS_DIR.as_bytes())
    }

    fn dir(&mut self, abs: &Path, rel: &Path) {
        match sorted_names(abs) {
            Ok(names) => {
                for name in names {
                    self.entry(abs.join(&name), rel.join(&name));
                }
            }
            Err(e) => self.problem(abs, e),
        }
    }

    fn entry(&mut self, abs: PathBuf, rel: PathBuf) {
        if self.hidden(&rel) {
            return;
        }
        let Some((md, link)) = self.resolve(&abs) else {
            return;
        };
        let used = if md.is_dir() {
            self.enter(&abs, &rel, &md, link.as_ref())
        } else if md.is_file() {
            self.tree.files.push(SourceFile {
                key: key_of(&rel),
                abs,
                rel,
                mtime: mtime_of(&md),
            });
            true
        } else {
            self.problem(&abs, "special file (fifo, socket or device) refused");
            false
        };
        if used && link.is_some_and(|l| l.outside) {
            self.tree.outside_links += 1;
        }
    }

    /// The metadata `abs` stands for (its target's when it is a symlink) and the link, or
    /// None when the entry is skipped or refused (already reported).
    fn resolve(&mut self, abs: &Path) -> Option<(Metadata, Option<Link>)> {
        let lmd = match std::fs::symlink_metadata(abs) {
            Ok(m) => m,
            Err(e) => return self.refuse(abs, e),
        };
        if !lmd.file_type().is_symlink() {
            return Some((lmd, None));
        }
        let target = match abs.canonicalize() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.skip_dangling(abs);
                return None;
            }
            Err(e) if e.raw_os_error() == Some(ELOOP) => {
                self.skip_loop(abs, "cycle of symlinks");
                return None;
            }
            Err(e) => return self.refuse(abs, format!("symlink: {e}")),
        };
        let outside = !target.starts_with(self.root);
        if outside && self.outside == OutsideLinks::Refuse {
            let what = format!(
                "symlink leads outside the source directory (to {})",
                target.display()
            );
            return self.refuse(abs, what);
        }
        match std::fs::metadata(abs) {
            Ok(md) => Some((md, Some(Link { target, outside }))),
            Err(e) => self.refuse(abs, e),
        }
    }

    /// Walks the directory `abs` unless it would loop; whether it was walked.
    fn enter(&mut self, abs: &Path, rel: &Path, md: &Metadata, link: Option<&Link>) -> bool {
        if self.path.contains(&dir_id(md)) {
            let what = match link {
                Some(l) => format!("symlink leads back to {}", l.target.display()),
                None => "directory already on the walk path".to_string(),
            };
            self.skip_loop(abs, &what);
            return false;
        }
        let depth = self.path.len();
        match link {
            Some(l) => self.path.extend(lineage(&l.target)),
            None => self.path.push(dir_id(md)),
        }
        self.tree.dirs.push(key_of(rel));
        self.dir(abs, rel);
        self.path.truncate(depth);
        true
    }

    fn skip_loop(&mut self, abs: &Path, what: &str) {
        self.tree.loops += 1;
        self.tree
            .warnings
            .push(format!("{}: {what} (a loop), skipped", abs.display()));
    }

    fn skip_dangling(&mut self, abs: &Path) {
        let to = std::fs::read_link(abs)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        self.tree.dangling += 1;
        self.tree.warnings.push(format!(
            "{}: dangling symlink (to {to}), skipped",
            abs.display()
        ));
    }
}

/// Walks `root`. Returns the tree, or every problem found (one line each, naming the path).
pub fn scan(
    root: &Path,
    include_dotfiles: bool,
    outside: OutsideLinks,
) -> Result<Tree, Vec<String>> {
    let canon_root = root
        .canonicalize()
        .map_err(|e| vec![format!("{}: {e}", root.display())])?;
    if !canon_root.is_dir() {
        return Err(vec![format!("{}: not a directory", root.display())]);
    }
    let mut w = Walker {
        root: &canon_root,
        include_dotfiles,
        outside,
        tree: Tree::default(),
        problems: Vec::new(),
        path: lineage(&canon_root),
    };
    w.dir(&canon_root, Path::new(""));
    if w.problems.is_empty() {
        Ok(w.tree)
    } else {
        Err(w.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn keys(t: &Tree) -> Vec<String> {
        t.files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.key).into_owned())
            .collect()
    }

    #[test]
    fn cycles_of_links_are_skipped_once_each() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("a"))?;
        std::fs::create_dir_all(src.join("b"))?;
        std::fs::write(src.join("a/f"), b"a")?;
        std::fs::write(src.join("b/g"), b"b")?;
        symlink("../b", src.join("a/to_b"))?;
        symlink("../a", src.join("b/to_a"))?;
        symlink("x2", src.join("x1"))?;
        symlink("x1", src.join("x2"))?;
        symlink("..", src.join("up"))?;
        let t =
            scan(&src, false, OutsideLinks::Follow).map_err(|e| io::Error::other(e.join("; ")))?;
        assert_eq!(keys(&t), ["/a/f", "/a/to_b/g", "/b/g", "/b/to_a/f"]);
        // a/to_b/to_a, b/to_a/to_b, x1, x2 (ELOOP) and up (the parent of the source).
        assert_eq!(t.loops, 5, "{:?}", t.warnings);
        assert_eq!(t.outside_links, 0);
        assert!(
            t.warnings.iter().any(|w| w.contains("/src/up:")),
            "{:?}",
            t.warnings
        );
        Ok(())
    }

    #[test]
    fn outside_links_followed_or_refused() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let src = d.path().join("src");
        let ext = d.path().join("ext");
        std::fs::create_dir_all(&src)?;
        std::fs::create_dir_all(ext.join("sub"))?;
        std::fs::write(ext.join("sub/h"), b"h")?;
        symlink("..", ext.join("sub/up"))?;
        symlink(&ext, src.join("ext"))?;
        symlink("nowhere", src.join("gone"))?;
        let t =
            scan(&src, false, OutsideLinks::Follow).map_err(|e| io::Error::other(e.join("; ")))?;
        assert_eq!(keys(&t), ["/ext/sub/h"]);
        assert_eq!((t.outside_links, t.loops, t.dangling), (1, 1, 1));
        let Err(problems) = scan(&src, false, OutsideLinks::Refuse) else {
            panic!("outside link accepted");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("/src/ext: symlink leads outside"));
        Ok(())
    }
}
