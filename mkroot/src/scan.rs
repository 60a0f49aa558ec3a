//! Walking the source tree: which files become objects, which directories get redirects, and
//! every file that cannot be used, named.

use std::cell::RefCell;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use walkdir::WalkDir;

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
}

/// The directory of custom error pages, kept even when dotfiles are skipped.
pub const ERRORS_DIR: &str = ".errors";

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

/// Walks `root`. Returns the tree, or every problem found (one line each, naming the path).
pub fn scan(root: &Path, include_dotfiles: bool) -> Result<Tree, Vec<String>> {
    let errors = RefCell::new(Vec::new());
    let canon_root = match root.canonicalize() {
        Ok(p) => p,
        Err(e) => return Err(vec![format!("{}: {e}", root.display())]),
    };
    if !canon_root.is_dir() {
        return Err(vec![format!("{}: not a directory", root.display())]);
    }
    let mut tree = Tree::default();
    let walker = WalkDir::new(&canon_root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 {
                return true;
            }
            let name = e.file_name().as_bytes();
            let hidden = name.first() == Some(&b'.')
                && !include_dotfiles
                && !(e.depth() == 1 && name == ERRORS_DIR.as_bytes());
            if hidden {
                return false;
            }
            if e.path_is_symlink() {
                match e.path().canonicalize() {
                    Ok(t) if t.starts_with(&canon_root) => {}
                    Ok(t) => {
                        errors.borrow_mut().push(format!(
                            "{}: symlink leads outside the source directory (to {})",
                            e.path().display(),
                            t.display()
                        ));
                        return false;
                    }
                    Err(err) => {
                        errors
                            .borrow_mut()
                            .push(format!("{}: broken symlink: {err}", e.path().display()));
                        return false;
                    }
                }
            }
            true
        });
    for entry in walker {
        let e = match entry {
            Ok(e) => e,
            Err(err) => {
                let p = err
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                errors.borrow_mut().push(format!("{p}: {err}"));
                continue;
            }
        };
        if e.depth() == 0 {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(&canon_root)
            .unwrap_or(e.path())
            .to_path_buf();
        let ft = e.file_type();
        if ft.is_dir() {
            tree.dirs.push(key_of(&rel));
        } else if ft.is_file() {
            match e.metadata() {
                Ok(md) => {
                    let mtime = md
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs() as i64);
                    tree.files.push(SourceFile {
                        key: key_of(&rel),
                        abs: e.path().to_path_buf(),
                        rel,
                        mtime,
                    });
                }
                Err(err) => errors
                    .borrow_mut()
                    .push(format!("{}: {err}", e.path().display())),
            }
        } else {
            errors.borrow_mut().push(format!(
                "{}: special file (fifo, socket or device) refused",
                e.path().display()
            ));
        }
    }
    let errors = errors.into_inner();
    if errors.is_empty() {
        Ok(tree)
    } else {
        Err(errors)
    }
}
