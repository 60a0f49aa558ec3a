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

use httpd_common::webroot::{Error, Lease, OpenOptions, Webroot};

use crate::accesslog::LogSet;

/// Name of the entry that serves requests for hosts without their own entry.
pub const DEFAULT_HOST: &str = "__default__";

/// A mounted webroot.
#[derive(Clone)]
pub struct Mount {
    /// Ends with `/`.
    pub prefix: Vec<u8>,
    pub root: std::sync::Arc<httpd_common::webroot::Webroot>,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}",
            String::from_utf8_lossy(&self.prefix),
            self.root.path().display()
        )
    }
}

impl PartialEq for Mount {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && std::sync::Arc::ptr_eq(&self.root, &other.root)
    }
}

impl Eq for Mount {}

/// Per-host settings in the form the serving path uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// `Name: value\r\n` lines.
    pub headers: Vec<u8>,
    /// The lines sent over HTTPS: `headers` and Strict-Transport-Security.
    pub tls_headers: Vec<u8>,
    pub upstream_prefixes: Vec<Vec<u8>>,
    pub upstream: Option<std::net::SocketAddr>,
    /// Longest prefix first.
    pub mounts: Vec<Mount>,
    /// Plain HTTP requests get a 308 to the same URL over HTTPS.
    pub https_redirect: bool,
    /// The listeners this host answers on (empty: every one).
    pub listeners: Vec<std::net::SocketAddr>,
}

impl HostSettings {
    /// The mount serving a normalised path, and the path inside it; None: the host's own.
    pub fn mount<'p>(&self, path: &'p [u8]) -> Option<(&Mount, &'p [u8])> {
        self.mounts
            .iter()
            .find(|m| path.starts_with(&m.prefix))
            .map(|m| (m, &path[m.prefix.len() - 1..]))
    }

    /// The extra header lines of a response (over TLS with Strict-Transport-Security).
    pub fn headers_for(&self, tls: bool) -> &[u8] {
        if tls {
            &self.tls_headers
        } else {
            &self.headers
        }
    }

    /// Whether the host answers on listener `l` (None: a connection of no listener, tests).
    pub fn serves(&self, l: Option<&crate::listen::ListenerInfo>) -> bool {
        self.listeners.is_empty() || l.is_some_and(|l| self.listeners.iter().any(|&a| l.is(a)))
    }
}

/// One served host.
pub struct Host {
    /// What the host is apart from its webroot (also what a forwarded exchange keeps: never
    /// the webroot, whose mapping and lease must go when it is replaced or withdrawn).
    pub meta: Arc<HostMeta>,
    /// None while its webroot file is being written in place: the old one was withdrawn and
    /// no valid new one is there yet (static requests get 503).
    pub root: Option<Arc<Webroot>>,
    /// Incremented each time this host's webroot is replaced.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

/// A host's name, log, counters and settings: what outlives a replacement of its webroot.
pub struct HostMeta {
    pub name: String,
    pub log: Option<Arc<crate::accesslog::HostLogs>>,
    /// Counters of this host name (kept across replacements).
    pub stats: Arc<crate::stats::HostStats>,
    /// Settings from the configuration file (`[hosts."name"]`).
    pub settings: Arc<HostSettings>,
}

impl std::ops::Deref for Host {
    type Target = HostMeta;

    fn deref(&self) -> &HostMeta {
        &self.meta
    }
}

impl Host {
    /// The webroot file served, for status output.
    pub fn webroot_display(&self) -> String {
        match &self.root {
            Some(r) => r.path().display().to_string(),
            None => "(withdrawn: written in place, waiting for a valid file)".into(),
        }
    }

    /// The same host with another webroot (or none).
    fn with_root(&self, root: Option<Arc<Webroot>>) -> Host {
        Host {
            meta: self.meta.clone(),
            root,
            generation: self.generation,
            loaded_at: self.loaded_at,
        }
    }
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

    /// The host for a name on listener `l`: a host that does not answer there does not
    /// exist there (that listener's `__default__` answers, if it does).
    pub fn find_on(
        &self,
        host: Option<&[u8]>,
        l: Option<&crate::listen::ListenerInfo>,
    ) -> Option<&Arc<Host>> {
        match self.find(host) {
            Some(h) if h.settings.serves(l) => Some(h),
            _ => self.default.as_ref().filter(|d| d.settings.serves(l)),
        }
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

impl FileId {
    /// An identity no real file has: the entry is loaded again at the next scan.
    const NONE: FileId = FileId {
        dev: 0,
        ino: 0,
        size: 0,
        mtime_ns: 0,
        ctime_ns: 0,
    };
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

/// Asks the kernel to read a whole webroot into the page cache (on the loading thread, off the
/// serving path; never by touching the mapping, which a writer could truncate) so the first
/// requests find it in memory. Returns the MiB asked for.
fn preload(root: &Webroot) -> u64 {
    let len = root.file().metadata().map_or(0, |m| m.len());
    if let Err(e) = crate::sys::will_need(root.file(), len) {
        tracing::warn!("preload {}: {e}", root.path().display());
    }
    len >> 20
}

/// The registry shared by the workers and the watcher.
pub struct Registry {
    dir: PathBuf,
    settings: Mutex<std::collections::BTreeMap<String, HostSettings>>,
    /// Fault every webroot into memory when it is loaded (`--preload`).
    pub preload: std::sync::atomic::AtomicBool,
    /// Open webroots for random access, no kernel readahead (`--io async-sendfile`: the
    /// cold-send threads ask for what a response needs, and readahead started by a send would run
    /// on the event loop).
    pub random_access: std::sync::atomic::AtomicBool,
    table: Mutex<Arc<HostTable>>,
    generation: AtomicU64,
    state: Mutex<ScanState>,
    logs: Option<Arc<LogSet>>,
    /// Take a read lease on every webroot, its break announced by this signal (set by the
    /// server once the signal is handled).
    lease_signal: std::sync::atomic::AtomicI32,
    /// Woken when a webroot is withdrawn, so they drop it at once.
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    /// Scan requests to the watcher loop (see [`Registry::watch`]).
    requests: Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>,
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
    /// The last scan found an entry open for writing: scan again soon.
    busy: bool,
}

impl Registry {
    pub fn new(dir: &Path, logs: Option<Arc<LogSet>>) -> Arc<Registry> {
        Arc::new(Registry {
            dir: dir.to_path_buf(),
            settings: Mutex::new(Default::default()),
            preload: std::sync::atomic::AtomicBool::new(false),
            random_access: std::sync::atomic::AtomicBool::new(false),
            table: Mutex::new(Arc::new(HostTable::default())),
            generation: AtomicU64::new(0),
            state: Mutex::new(ScanState::default()),
            logs,
            lease_signal: std::sync::atomic::AtomicI32::new(0),
            wakers: Mutex::new(Vec::new()),
            requests: Mutex::new(None),
        })
    }

    /// From now on, webroots are opened with a read lease whose break raises `signal` (which
    /// the caller handles, calling [`Registry::poke`]).
    pub fn use_leases(&self, signal: i32) {
        self.lease_signal.store(signal, Ordering::Relaxed);
    }

    /// Workers to wake when a webroot is withdrawn.
    pub fn set_wakers(&self, wakers: Vec<Arc<mio::Waker>>) {
        *lock(&self.wakers) = wakers;
    }

    /// Asks the watcher thread to scan now (a lease break, a signal). Before the watcher runs,
    /// scans on the calling thread.
    pub fn poke(&self) {
        let sent = lock(&self.requests)
            .as_ref()
            .is_some_and(|tx| tx.send(()).is_ok());
        if !sent {
            self.rescan();
        }
    }

    /// Forgets refused entries and scans; returns the number of hosts. Called on a blocking
    /// thread of the control plane (which, like every thread it starts, keeps the capability to
    /// take leases after `--user`); a scan of the watcher at the same moment waits its turn.
    pub fn reload(&self) -> usize {
        self.forget_failures();
        self.rescan()
    }

    fn wake_workers(&self) {
        for w in lock(&self.wakers).iter() {
            let _ = w.wake();
        }
    }

    fn open_options(&self) -> OpenOptions {
        let sig = self.lease_signal.load(Ordering::Relaxed);
        OpenOptions {
            lease_signal: (sig != 0).then_some(sig),
        }
    }

    /// Withdraws every webroot whose file a writer is waiting for (its lease is being broken)
    /// or has already changed (no lease): nothing more is sent from it, and the last holder's
    /// drop releases the lease so the writer goes on. Returns whether any was withdrawn.
    fn withdraw_written(&self, st: &mut ScanState) -> bool {
        let mut any = false;
        for (name, e) in st.loaded.iter_mut() {
            let Some(root) = &e.host.root else { continue };
            let broken = root.lease_broken();
            if !broken && !root.changed_on_disk() {
                continue;
            }
            root.revoke();
            tracing::warn!(
                "vhost {name}: {} is being written in place{}: withdrawn; responses in flight \
                 from it are cut, static requests get 503 until a valid webroot is there",
                root.path().display(),
                if broken { " (lease broken)" } else { "" }
            );
            e.host = Arc::new(e.host.with_root(None));
            e.id = FileId::NONE;
            any = true;
        }
        any
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
        st.busy = false;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::error!("vhosts directory {}: {e}", self.dir.display());
                return st.loaded.len();
            }
        };
        let mut seen: Vec<String> = Vec::new();
        let mut changed = self.withdraw_written(&mut st);
        if changed {
            // Let the workers drop it now, not after the directory scan.
            self.publish(&mut st);
            self.wake_workers();
        }
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
                        // Logged once.
                        st.failed.insert(name.clone(), FileId::NONE);
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
            match Webroot::open_with(&path, self.open_options()) {
                Err(Error::Busy { .. }) => {
                    // A writer has it open: try again when it is done.
                    tracing::debug!("vhost {name}: {} is open for writing", path.display());
                    st.busy = true;
                }
                Ok(root) => {
                    if let Lease::Refused(why) = root.lease() {
                        tracing::warn!(
                            "vhost {name}: no read lease on {} ({why}): a write in place is \
                             noticed within a second instead of waited for; replace webroots \
                             by rename",
                            path.display()
                        );
                    }
                    if self.random_access.load(Ordering::Relaxed)
                        && let Err(e) = root.advise_random()
                    {
                        tracing::debug!("vhost {name}: advise random access: {e}");
                    }
                    if self.preload.load(Ordering::Relaxed) {
                        let mib = preload(&root);
                        tracing::info!("vhost {name}: preloaded {mib} MiB");
                    }
                    st.next_generation += 1;
                    let log = self.logs.as_ref().and_then(|l| l.get(&name));
                    let stats = st.stats.entry(name.clone()).or_default().clone();
                    let settings = self.settings_for(&name);
                    let host = Arc::new(Host {
                        meta: Arc::new(HostMeta {
                            stats,
                            settings,
                            name: name.clone(),
                            log,
                        }),
                        root: Some(Arc::new(root)),
                        generation: st.next_generation,
                        loaded_at: SystemTime::now(),
                    });
                    tracing::info!(
                        "vhost {name}: loaded {} ({} objects)",
                        path.display(),
                        host.root.as_ref().map_or(0, |r| r.objects().len())
                    );
                    st.failed.remove(&name);
                    st.loaded.insert(name, Entry { id, host });
                    changed = true;
                }
                Err(err) => {
                    let keeps = match st.loaded.get(&name) {
                        Some(e) if e.host.root.is_some() => "; still serving the previous webroot",
                        Some(_) => {
                            "; the previous webroot was written over in place: static requests \
                             get 503 until a valid one is there"
                        }
                        None => "",
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

    fn settings_for(&self, name: &str) -> Arc<HostSettings> {
        let map = match self.settings.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        Arc::new(map.get(name).cloned().unwrap_or_default())
    }

    /// Applies new per-host settings (a configuration reload): hosts keep their webroots.
    pub fn set_settings(&self, settings: std::collections::BTreeMap<String, HostSettings>) {
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
                    let mut host = h.with_root(h.root.clone());
                    host.meta = Arc::new(HostMeta {
                        name: h.name.clone(),
                        log: h.log.clone(),
                        stats: h.stats.clone(),
                        settings,
                    });
                    e.host = Arc::new(host);
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

    /// Watches the directory (inotify); every change and every [`Registry::poke`] reaches the
    /// returned watch, which `watch_loop` runs on the control plane.
    pub fn watch(&self) -> std::io::Result<crate::dirwatch::DirWatch> {
        let mut w = crate::dirwatch::DirWatch::new()?;
        w.add(&self.dir)?;
        *lock(&self.requests) = Some(w.poker());
        Ok(w)
    }

    /// Scans on every change (inotify, a lease break) and every `period` anyway (every 50 ms
    /// while an entry is being written or a scan runs).
    pub async fn watch_loop(self: Arc<Self>, w: crate::dirwatch::DirWatch, period: Duration) {
        let me = self.clone();
        let wait = move || {
            // Busy: a scan holds the state now, or the last one saw a file still changing.
            if me.state.try_lock().map_or(true, |st| st.busy) {
                Duration::from_millis(50)
            } else {
                period
            }
        };
        // A burst of events (rename + create) settles in 20 ms.
        w.run(
            Duration::from_millis(20),
            wait,
            Arc::new(move || {
                self.rescan();
            }),
        )
        .await;
    }
}

/// Locks a mutex, taking it over from a thread that panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
