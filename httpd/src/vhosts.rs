//! The virtual-host registry: the entries of VHOSTS_DIR, each a webroot (or a symlink to one),
//! watched with inotify and rescanned periodically, swapped atomically.
//!
//! Workers hold an `Arc<HostTable>` and check one atomic generation per request; a request keeps
//! the `Arc<Webroot>` it started with, so a swap never mixes two webroots in one response.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use httpd_common::webroot::Webroot;
use notify::Watcher;

use crate::accesslog::LogSet;

/// Name of the entry that serves requests for hosts without their own entry.
pub const DEFAULT_HOST: &str = "__default__";

/// One served host.
pub struct Host {
    pub name: String,
    pub root: Arc<Webroot>,
    /// Incremented each time this host's webroot is replaced.
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub log: Option<Arc<crate::accesslog::HostLogs>>,
    /// Counters of this host name (kept across replacements).
    pub stats: Arc<crate::stats::HostStats>,
    /// Settings from the configuration file (`[hosts."name"]`).
    pub settings: Arc<crate::config::HostSettings>,
}

/// A snapshot of all hosts.
#[derive(Default)]
pub struct HostTable {
    by_name: HashMap<String, Arc<Host>>,
    default: Option<Arc<Host>>,
}

impl HostTable {
    /// The host for a Host header value (port already stripped), case-insensitively, falling
    /// back to `__default__`.
    pub fn find(&self, host: Option<&[u8]>) -> Option<&Arc<Host>> {
        if let Some(h) = host {
            let h = h.strip_suffix(b".").unwrap_or(h);
            let mut buf = [0u8; 256];
            if let Some(dst) = buf.get_mut(..h.len()) {
                dst.copy_from_slice(h);
                dst.make_ascii_lowercase();
                if let Ok(name) = std::str::from_utf8(dst)
                    && let Some(found) = self.by_name.get(name)
                {
                    return Some(found);
                }
            }
        }
        self.default.as_ref()
    }

    /// Every host, `__default__` included.
    pub fn hosts(&self) -> impl Iterator<Item = &Arc<Host>> {
        self.by_name.values().chain(self.default.iter())
    }
}

/// Identity of the file behind an entry: a change means a new webroot to load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    /// Changes with chmod/chown too, so a refused entry made readable is tried again.
    ctime_ns: i128,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?; // follows symlinks
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

struct Entry {
    id: FileId,
    host: Arc<Host>,
}

/// Touches every page of a webroot (on the loading thread, off the serving path) so the first
/// requests find it in memory. Returns the MiB touched.
fn preload(root: &Webroot) -> u64 {
    let bytes = root.bytes();
    let mut sum = 0u8;
    for page in bytes.chunks(4096) {
        sum = sum.wrapping_add(page[0]);
    }
    std::hint::black_box(sum);
    bytes.len() as u64 >> 20
}

/// The registry shared by the workers and the watcher.
pub struct Registry {
    dir: PathBuf,
    settings: Mutex<std::collections::BTreeMap<String, crate::config::HostSettings>>,
    /// Fault every webroot into memory when it is loaded (`--preload`).
    pub preload: std::sync::atomic::AtomicBool,
    table: Mutex<Arc<HostTable>>,
    generation: AtomicU64,
    state: Mutex<ScanState>,
    logs: Option<Arc<LogSet>>,
}

#[derive(Default)]
struct ScanState {
    loaded: HashMap<String, Entry>,
    /// Entries that failed to load, with the identity that failed (logged once each).
    failed: HashMap<String, FileId>,
    next_generation: u64,
    stats: HashMap<String, Arc<crate::stats::HostStats>>,
    /// Host names already reported as duplicated (logged once).
    duplicates: std::collections::HashSet<String>,
}

impl Registry {
    pub fn new(dir: &Path, logs: Option<Arc<LogSet>>) -> Arc<Registry> {
        Arc::new(Registry {
            dir: dir.to_path_buf(),
            settings: Mutex::new(Default::default()),
            preload: std::sync::atomic::AtomicBool::new(false),
            table: Mutex::new(Arc::new(HostTable::default())),
            generation: AtomicU64::new(0),
            state: Mutex::new(ScanState::default()),
            logs,
        })
    }

    /// Current generation; changes whenever the table does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn table(&self) -> Arc<HostTable> {
        match self.table.lock() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads the directory and applies every change. Returns the number of hosts served.
    pub fn rescan(&self) -> usize {
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::error!("vhosts directory {}: {e}", self.dir.display());
                return st.loaded.len();
            }
        };
        let mut seen: Vec<String> = Vec::new();
        let mut changed = false;
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_ascii_lowercase) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if seen.contains(&name) {
                // Two entries whose names differ only in case: the first one read wins.
                if st.duplicates.insert(name.clone()) {
                    tracing::error!(
                        "vhost {}: another entry already names host {name}; ignored",
                        e.path().display()
                    );
                }
                continue;
            }
            let path = e.path();
            let id = match file_id(&path) {
                Ok(id) => id,
                Err(err) => {
                    if !st.failed.contains_key(&name) && !st.loaded.contains_key(&name) {
                        tracing::error!("vhost {}: {err}", path.display());
                        // Logged once: a sentinel identity no real file has.
                        let none = FileId {
                            dev: 0,
                            ino: 0,
                            size: 0,
                            mtime_ns: 0,
                            ctime_ns: 0,
                        };
                        st.failed.insert(name.clone(), none);
                    }
                    // A dangling symlink mid-swap: keep what is loaded.
                    seen.push(name);
                    continue;
                }
            };
            seen.push(name.clone());
            if st.loaded.get(&name).is_some_and(|l| l.id == id) || st.failed.get(&name) == Some(&id)
            {
                continue;
            }
            match Webroot::open(&path) {
                Ok(root) => {
                    if self.preload.load(Ordering::Relaxed) {
                        let mib = preload(&root);
                        tracing::info!("vhost {name}: preloaded {mib} MiB");
                    }
                    st.next_generation += 1;
                    let log = self.logs.as_ref().and_then(|l| l.get(&name));
                    let stats = st.stats.entry(name.clone()).or_default().clone();
                    let settings = self.settings_for(&name);
                    let host = Arc::new(Host {
                        stats,
                        settings,
                        name: name.clone(),
                        root: Arc::new(root),
                        generation: st.next_generation,
                        loaded_at: SystemTime::now(),
                        log,
                    });
                    tracing::info!(
                        "vhost {name}: loaded {} ({} objects)",
                        path.display(),
                        host.root.objects().len()
                    );
                    st.failed.remove(&name);
                    st.loaded.insert(name, Entry { id, host });
                    changed = true;
                }
                Err(err) => {
                    let keeps = if st.loaded.contains_key(&name) {
                        "; still serving the previous webroot"
                    } else {
                        ""
                    };
                    tracing::error!("vhost {name}: refused: {err}{keeps}");
                    st.failed.insert(name, id);
                }
            }
        }
        let before = st.loaded.len();
        st.loaded.retain(|name, _| seen.contains(name));
        st.failed.retain(|name, _| seen.contains(name));
        if st.loaded.len() != before {
            tracing::info!("vhosts: {} host(s) removed", before - st.loaded.len());
            changed = true;
        }
        if changed {
            self.publish(&mut st);
        }
        st.loaded.len()
    }

    /// Forgets refused entries, so the next scan tries them again.
    pub fn forget_failures(&self) {
        match self.state.lock() {
            Ok(mut s) => s.failed.clear(),
            Err(p) => p.into_inner().failed.clear(),
        }
    }

    fn settings_for(&self, name: &str) -> Arc<crate::config::HostSettings> {
        let map = match self.settings.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        Arc::new(map.get(name).cloned().unwrap_or_default())
    }

    /// Applies new per-host settings (a configuration reload): hosts keep their webroots.
    pub fn set_settings(
        &self,
        settings: std::collections::BTreeMap<String, crate::config::HostSettings>,
    ) {
        match self.settings.lock() {
            Ok(mut m) => *m = settings,
            Err(p) => *p.into_inner() = settings,
        }
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        self.publish(&mut st);
    }

    /// Publishes the loaded hosts as a new table, with their current settings.
    fn publish(&self, st: &mut ScanState) {
        {
            for (name, e) in st.loaded.iter_mut() {
                let settings = self.settings_for(name);
                if *e.host.settings != *settings {
                    let h = &e.host;
                    e.host = Arc::new(Host {
                        name: h.name.clone(),
                        root: h.root.clone(),
                        generation: h.generation,
                        loaded_at: h.loaded_at,
                        log: h.log.clone(),
                        stats: h.stats.clone(),
                        settings,
                    });
                }
            }
            let mut t = HostTable::default();
            for (name, e) in &st.loaded {
                if name == DEFAULT_HOST {
                    t.default = Some(e.host.clone());
                } else {
                    t.by_name.insert(name.clone(), e.host.clone());
                }
            }
            match self.table.lock() {
                Ok(mut g) => *g = Arc::new(t),
                Err(p) => *p.into_inner() = Arc::new(t),
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Watches the directory (inotify) and rescans on every change and every `period` anyway,
    /// on a thread of its own, until the process exits.
    pub fn watch(self: &Arc<Self>, period: Duration) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Our own scans open and read the directory: access events are not changes.
            if !matches!(&res, Ok(e) if e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(std::io::Error::other)?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("vhosts".into())
            .spawn(move || {
                let _watcher = watcher; // lives as long as the thread
                loop {
                    match rx.recv_timeout(period) {
                        Ok(()) => {
                            // Let a burst of events (rename + create) settle.
                            std::thread::sleep(Duration::from_millis(20));
                            while rx.try_recv().is_ok() {}
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    me.rescan();
                }
            })?;
        Ok(())
    }
}
