//! Certificates by host name (SNI): PEM chain + key pairs from a directory (`HOST.crt` +
//! `HOST.key`, `__default__` for clients without SNI or with an unknown name) and from the
//! configuration file (`[hosts."name"] tls_cert/tls_key`). Watched like the vhosts directory
//! (inotify plus a rescan every second): a changed pair is loaded and swapped in; a bad or
//! mismatched pair is refused with one log line naming its files, and the pair loaded before
//! keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The name of the pair for every other host.
pub const DEFAULT: &str = "__default__";

/// Why a pair was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: not a PEM certificate chain: {1}")]
    BadCertificate(PathBuf, String),
    #[error("{0}: no usable PEM private key in it: {1}")]
    BadKey(PathBuf, String),
    #[error("{0} and {1} do not belong together: {2}")]
    Mismatch(PathBuf, PathBuf, String),
}

/// Where a host's pair comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Identity of a file's content: a change means load again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn file_id(p: &Path) -> Option<FileId> {
    let m = std::fs::metadata(p).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Loads one pair: the chain (leaf first) and a key that matches its leaf.
pub fn load_pair(
    files: &PairFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CertError> {
    let cert_pem =
        std::fs::read(&files.cert).map_err(|e| CertError::Read(files.cert.clone(), e))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| CertError::Read(files.key.clone(), e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate(files.cert.clone(), e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| CertError::BadKey(files.key.clone(), e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                CertError::Mismatch(files.cert.clone(), files.key.clone(), e.to_string())
            }
            rustls::Error::General(_) => CertError::BadKey(files.key.clone(), e.to_string()),
            other => CertError::BadCertificate(files.cert.clone(), other.to_string()),
        })
        .map(Arc::new)
}

/// The pairs serving now, by lower-cased host name.
#[derive(Default)]
struct Loaded {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// One host's pair as last seen on disk.
struct Seen {
    ids: (Option<FileId>, Option<FileId>),
    /// What serves for this name (the last pair that loaded).
    key: Option<Arc<CertifiedKey>>,
}

/// The certificate store: resolves SNI to a pair; reloaded from its sources by [`CertStore::rescan`].
pub struct CertStore {
    dir: Option<PathBuf>,
    /// Pairs named in the configuration file, by lower-cased host name (they win over the
    /// directory's).
    configured: Mutex<BTreeMap<String, PairFiles>>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    seen: Mutex<HashMap<String, Seen>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("dir", &self.dir).finish()
    }
}

impl CertStore {
    pub fn new(
        dir: Option<PathBuf>,
        configured: BTreeMap<String, PairFiles>,
        provider: Arc<CryptoProvider>,
    ) -> CertStore {
        CertStore {
            dir,
            configured: Mutex::new(configured),
            provider,
            current: RwLock::new(Arc::new(Loaded::default())),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Every pair the sources name now: the directory's `NAME.crt` with `NAME.key`, then the
    /// configuration file's.
    fn sources(&self) -> BTreeMap<String, PairFiles> {
        let mut out = BTreeMap::new();
        if let Some(dir) = &self.dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(host) = name.strip_suffix(".crt") else {
                    continue;
                };
                if host.is_empty() || host.starts_with('.') {
                    continue;
                }
                out.insert(
                    host.to_ascii_lowercase(),
                    PairFiles {
                        cert: dir.join(name),
                        key: dir.join(format!("{host}.key")),
                    },
                );
            }
        }
        for (name, files) in lock(&self.configured).iter() {
            out.insert(name.clone(), files.clone());
        }
        out
    }

    /// The configuration file's pairs changed (a reload): the next scans use these.
    pub fn set_configured(&self, configured: BTreeMap<String, PairFiles>) {
        *lock(&self.configured) = configured;
    }

    /// Loads every pair again, changed or not (a reload: a pair refused before may load now).
    /// Returns how many pairs serve.
    pub fn reload(&self) -> usize {
        for s in lock(&self.seen).values_mut() {
            s.ids = (None, None);
        }
        self.rescan()
    }

    /// Loads what changed since the last scan and publishes the result. Returns how many pairs
    /// serve.
    pub fn rescan(&self) -> usize {
        let sources = self.sources();
        let mut seen = lock(&self.seen);
        let before = seen.len();
        seen.retain(|name, _| sources.contains_key(name));
        let removed = seen.len() != before;
        let mut changed = false;
        for (name, files) in &sources {
            let ids = (file_id(&files.cert), file_id(&files.key));
            let fresh = !seen.contains_key(name);
            let entry = seen.entry(name.clone()).or_insert(Seen {
                ids: (None, None),
                key: None,
            });
            if !fresh && entry.ids == ids {
                continue;
            }
            entry.ids = ids;
            match load_pair(files, &self.provider) {
                Ok(k) => {
                    tracing::info!(
                        "TLS certificate for {name}: {} + {}",
                        files.cert.display(),
                        files.key.display()
                    );
                    entry.key = Some(k);
                    changed = true;
                }
                Err(e) => match &entry.key {
                    Some(_) => tracing::warn!(
                        "TLS certificate for {name} refused, the previous one keeps serving: {e}"
                    ),
                    None => tracing::warn!("TLS certificate for {name} refused: {e}"),
                },
            }
        }
        let mut loaded = Loaded::default();
        for (name, s) in seen.iter() {
            if let Some(k) = &s.key {
                if name == DEFAULT {
                    loaded.default = Some(k.clone());
                } else {
                    loaded.by_name.insert(name.clone(), k.clone());
                }
            }
        }
        let n = loaded.by_name.len() + usize::from(loaded.default.is_some());
        if changed || removed {
            match self.current.write() {
                Ok(mut g) => *g = Arc::new(loaded),
                Err(p) => *p.into_inner() = Arc::new(loaded),
            }
        }
        n
    }

    /// The pair for a name, else the default one.
    pub fn find(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let cur = match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(n) = name {
            let lower = n.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = cur.by_name.get(&lower) {
                return Some(k.clone());
            }
        }
        cur.default.clone()
    }

    /// Host names with a pair of their own.
    pub fn names(&self) -> Vec<String> {
        let cur = match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut v: Vec<String> = cur.by_name.keys().cloned().collect();
        if cur.default.is_some() {
            v.push(DEFAULT.into());
        }
        v.sort();
        v
    }

    /// Watches the directory and the configured files' directories (inotify); `watch_loop`
    /// rescans on every change and every period anyway, on the control plane.
    pub fn watch(&self) -> std::io::Result<crate::dirwatch::DirWatch> {
        let mut w = crate::dirwatch::DirWatch::new()?;
        let mut dirs: Vec<PathBuf> = self.dir.iter().cloned().collect();
        for f in lock(&self.configured).values() {
            for p in [&f.cert, &f.key] {
                if let Some(d) = p.parent() {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        for d in &dirs {
            // A directory that cannot be watched is still rescanned every period.
            if let Err(e) = w.add(d) {
                tracing::warn!("watching {}: {e}", d.display());
            }
        }
        Ok(w)
    }

    /// Rescans on every change (after 50 ms for a burst, two files written and renamed, to
    /// settle) and every `period`.
    pub async fn watch_loop(self: Arc<Self>, w: crate::dirwatch::DirWatch, period: Duration) {
        w.run(
            Duration::from_millis(50),
            move || period,
            Arc::new(move || {
                self.rescan();
            }),
        )
        .await;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
