use std::path::PathBuf;

/// Why a webroot could not be opened, written or verified.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: open for writing by another process (or being replaced): try again later")]
    Busy { path: PathBuf },
    #[error("{path}: not a webroot file (bad magic)")]
    BadMagic { path: PathBuf },
    #[error(
        "{path}: unsupported webroot format version {found} (this build reads version {expected})"
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: truncated or extended: header says {expected} bytes, file has {found}")]
    Length {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: {section} checksum mismatch (file corrupted)")]
    Checksum {
        path: PathBuf,
        section: &'static str,
    },
    #[error("{path}: malformed {section}: {what}")]
    Malformed {
        path: PathBuf,
        section: &'static str,
        what: String,
    },
    #[error("invalid input object {path:?}: {what}")]
    Input { path: String, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;
