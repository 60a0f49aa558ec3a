//! Directories watched with inotify, rescanned on every change and on a timer: the vhosts
//! directory and the certificates' directories. The loop runs on the control plane; the scans on
//! its blocking threads (they open files).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// An inotify watch whose changes (and pokes, through [`DirWatch::poker`]) wake [`DirWatch::run`].
pub struct DirWatch {
    watcher: notify::RecommendedWatcher,
    tx: UnboundedSender<()>,
    rx: UnboundedReceiver<()>,
}

impl DirWatch {
    pub fn new() -> std::io::Result<DirWatch> {
        let (tx, rx) = unbounded_channel();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Our own scans open and read the directories: access events are not changes.
            if !matches!(&res, Ok(e) if e.kind.is_access()) {
                let _ = events.send(());
            }
        })
        .map_err(std::io::Error::other)?;
        Ok(DirWatch { watcher, tx, rx })
    }

    /// Watches `dir` (not its subdirectories).
    pub fn add(&mut self, dir: &Path) -> std::io::Result<()> {
        self.watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)
    }

    /// Asks for a scan from anywhere (a lease break, a signal).
    pub fn poker(&self) -> UnboundedSender<()> {
        self.tx.clone()
    }

    /// Scans after every change (once a burst of events has `settle`d) and after `wait()`
    /// without one, until the runtime ends.
    pub async fn run(
        mut self,
        settle: Duration,
        wait: impl Fn() -> Duration,
        scan: Arc<dyn Fn() + Send + Sync>,
    ) {
        loop {
            match tokio::time::timeout(wait(), self.rx.recv()).await {
                Ok(Some(())) => {
                    tokio::time::sleep(settle).await;
                    while self.rx.try_recv().is_ok() {}
                }
                Ok(None) => return,
                Err(_) => {}
            }
            let scan = scan.clone();
            let _ = tokio::task::spawn_blocking(move || scan()).await;
        }
    }
}
