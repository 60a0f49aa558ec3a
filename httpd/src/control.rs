//! The control socket (`--control PATH`, mode 0600) and the `httpd ctl` client: status (text or
//! JSON), rotate, reopen, reload, top. One command per connection, one line in, the answer out
//! (`top`: a frame every second until the client goes). Served on the control plane's runtime
//! (`ctlplane`): clients at once, each with a deadline; the commands themselves (file system
//! work) on its blocking threads.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::accesslog::LogSet;
use crate::ebpf::Programs;
use crate::stats::{COUNTERS, Snapshot, Unit};
use crate::worker::Shared;

/// What the control socket, the metrics endpoint and the signals act on.
pub struct Control {
    pub shared: Arc<Shared>,
    pub logs: Option<Arc<LogSet>>,
    pub ebpf: Mutex<Option<Programs>>,
    /// Why eBPF is off, or how it is attached.
    pub ebpf_state: String,
    pub workers: usize,
    /// The configuration file, re-read by reload.
    pub config: Option<std::path::PathBuf>,
    pub reloading: Mutex<()>,
    /// The TLS certificates (a TLS listener is open).
    pub certs: Option<Arc<crate::tls::certs::CertStore>>,
    /// Starting, ready or draining (`/readyz`).
    pub state: AtomicU8,
}

/// `Control::state`.
const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Longest a control client may take to send its command, or to take its answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn join(errors: &[std::io::Error]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Control {
    /// Listeners open, workers running, hosts loaded: `/readyz` answers 200.
    pub fn set_ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The stop began: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why `/readyz` answers 503, if it does.
    pub fn not_ready(&self) -> Option<&'static str> {
        match self.state.load(Ordering::Acquire) {
            READY => None,
            DRAINING => Some("draining"),
            _ => Some("starting"),
        }
    }

    /// Re-reads what can change without dropping connections: the per-host settings of the
    /// configuration file and the vhosts directory. A bad file is refused with the reason and
    /// the running configuration stays.
    pub fn reload(&self) -> String {
        // One reload at a time (SIGHUP and ctl may overlap): the last file read wins.
        let _one = self.reloading.lock();
        let mut note = String::new();
        if let Some(path) = &self.config {
            let loaded =
                crate::config::load(path).and_then(|f| Ok((crate::config::host_settings(&f)?, f)));
            match loaded {
                Ok((settings, f)) => {
                    self.shared.registry.set_settings(settings);
                    if let Some(c) = &self.certs {
                        c.set_configured(crate::config::host_certs(&f));
                    }
                    note = format!(", host settings from {}", path.display());
                }
                Err(e) => {
                    return format!("error: reload refused, running configuration kept: {e:#}\n");
                }
            }
        }
        // Entries refused before (a permission since fixed, say) are tried again.
        let n = self.shared.registry.reload();
        if let Some(c) = &self.certs {
            let _ = write!(note, ", {} TLS certificate(s)", c.reload());
        }
        format!("reloaded: {n} virtual host(s){note}\n")
    }

    pub fn reopen(&self) -> String {
        match &self.logs {
            Some(l) => match l.reopen() {
                (n, e) if e.is_empty() => format!("reopened {n} log(s)\n"),
                (n, e) => format!("error: reopened {n} log(s); failed: {}\n", join(&e)),
            },
            None => "no logs (--log-dir not set)\n".into(),
        }
    }

    pub fn rotate(&self) -> String {
        match &self.logs {
            Some(l) => {
                let (files, errors) = l.rotate();
                let done: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
                if errors.is_empty() {
                    done
                } else {
                    format!("error: rotate failed: {}\n{done}", join(&errors))
                }
            }
            None => "no logs (--log-dir not set)\n".into(),
        }
    }

    fn ebpf_counters(&self) -> Option<crate::ebpf::Counters> {
        let g = self.ebpf.lock().ok()?;
        let p = g.as_ref()?;
        p.fastpath?;
        p.counters().ok()
    }

    pub fn status(&self, json: bool) -> String {
        let s = self.shared.stats.snapshot();
        let open = self.shared.open.load(Ordering::Relaxed);
        let table = self.shared.registry.table();
        let mut hosts: Vec<_> = table.hosts().collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        let ebpf = self.ebpf_counters();
        let loaded = |h: &crate::vhosts::Host| {
            h.loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let mut out = String::new();
        let io = io_name(self.shared.limits.io);
        if json {
            let _ = write!(
                out,
                "{{\"version\":{},\"uptime_secs\":{},\"workers\":{},\"open_connections\":{open}",
                json_str(env!("CARGO_PKG_VERSION")),
                s.uptime_secs,
                self.workers,
            );
            counters_json(&s, &io, &mut out);
            out.push_str(",\"hosts\":[");
            for (i, h) in hosts.iter().enumerate() {
                let (req, hits, bytes) = h.stats.snapshot();
                let _ = write!(
                    out,
                    "{}{{\"name\":{},\"webroot\":{},\"generation\":{},\"loaded_at\":{},\"requests\":{req},\"hits\":{hits},\"bytes\":{bytes}}}",
                    if i > 0 { "," } else { "" },
                    json_str(&h.name),
                    json_str(&h.webroot_display()),
                    h.generation,
                    loaded(h),
                );
            }
            let _ = write!(out, "],\"ebpf\":{{\"state\":{}", json_str(&self.ebpf_state));
            if let Some(c) = ebpf {
                let _ = write!(
                    out,
                    ",\"inserted\":{},\"insert_failed\":{},\"redirected\":{},\"redirected_bytes\":{},\"passed\":{},\"spliced\":{},\"spliced_bytes\":{},\"splice_passed\":{}",
                    c.inserted,
                    c.insert_failed,
                    c.redirected,
                    c.redirected_bytes,
                    c.passed,
                    c.spliced,
                    c.spliced_bytes,
                    c.splice_passed
                );
            }
            out.push_str("}}\n");
        } else {
            let _ = writeln!(
                out,
                "httpd {}  up {}s  workers {}  open connections {open}",
                env!("CARGO_PKG_VERSION"),
                s.uptime_secs,
                self.workers
            );
            counters_text(&s, &io, &mut out);
            let _ = writeln!(out, "ebpf: {}", self.ebpf_state);
            if let Some(c) = ebpf {
                let _ = writeln!(out, "ebpf counters: {c}");
            }
            let _ = writeln!(
                out,
                "{:<28} {:>4} {:>10} {:>10} {:>14}  WEBROOT",
                "HOST", "GEN", "REQUESTS", "HITS", "BYTES"
            );
            for h in hosts {
                let (req, hits, bytes) = h.stats.snapshot();
                let _ = writeln!(
                    out,
                    "{:<28} {:>4} {req:>10} {hits:>10} {bytes:>14}  {}",
                    h.name,
                    h.generation,
                    h.webroot_display()
                );
            }
        }
        out
    }

    /// Answers one command line.
    pub fn command(&self, line: &str) -> String {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("status"), Some("json")) => self.status(true),
            (Some("status"), None) => self.status(false),
            (Some("rotate"), None) => self.rotate(),
            (Some("reopen"), None) => self.reopen(),
            (Some("reload"), None) => self.reload(),
            (Some("failpoint"), Some(name)) => failpoint(name, words.collect::<Vec<_>>().join(" ")),
            _ => format!(
                "error: unknown command {line:?} (status [json], rotate, reopen, reload, top)\n"
            ),
        }
    }
}

#[cfg(feature = "failpoints")]
fn failpoint(name: &str, actions: String) -> String {
    crate::failpoints::set(name, &actions)
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_: &str, _: String) -> String {
    "error: failpoints are not compiled in (a test build: --features failpoints)\n".into()
}

/// The control socket at `path` (mode 0600), bound now (before privileges are dropped).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves the control socket on the control plane's runtime until it ends.
pub async fn serve(l: UnixListener, control: Arc<Control>) {
    let l = match l
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(l))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control socket: {e}");
            return;
        }
    };
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::spawn(client_session(s, control.clone()));
            }
            Err(_) => {
                // Out of descriptors and the like: back off, do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One control client: its command line (within `CLIENT_TIMEOUT`), then the answer.
async fn client_session(s: tokio::net::UnixStream, control: Arc<Control>) {
    let (r, mut w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r.take(4096));
    let mut line = String::new();
    if !matches!(
        tokio::time::timeout(CLIENT_TIMEOUT, r.read_line(&mut line)).await,
        Ok(Ok(_))
    ) {
        return;
    }
    let line = line.trim().to_string();
    if line == "top" {
        crate::top::stream(&mut w, &control).await;
        return;
    }
    let c = control.clone();
    let answer = match tokio::task::spawn_blocking(move || c.command(&line)).await {
        Ok(a) => a,
        Err(e) => format!("error: {e}\n"),
    };
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, w.write_all(answer.as_bytes())).await;
    let _ = w.shutdown().await;
}

/// `httpd ctl`: sends one command, prints the answer. Errors when the answer is an error.
pub fn client(path: &Path, command: &str) -> anyhow::Result<()> {
    let mut s =
        UnixStream::connect(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    print!("{out}");
    if out.starts_with("error:") {
        anyhow::bail!("{}", out.trim());
    }
    Ok(())
}

/// The counters as lines of the status text (`line: words N  words N`), from the one table.
fn counters_text(s: &Snapshot, io: &str, out: &mut String) {
    let mut line = None;
    for c in COUNTERS {
        if line == Some(c.line) {
            out.push_str("  ");
        } else {
            if line.is_some() {
                out.push('\n');
            }
            line = Some(c.line);
            if c.line == "io" {
                let _ = write!(out, "io {io}: ");
            } else {
                let _ = write!(out, "{}: ", c.line);
            }
        }
        let v = (c.value)(s);
        let _ = match c.unit {
            Unit::Count => write!(out, "{} {v}", c.text),
            Unit::Micros => write!(out, "{} {} ms", c.text, v / 1000),
        };
    }
    out.push('\n');
}

/// The counters as JSON members (`,"group":{"key":N,...}`; top-level ones as `,"key":N`),
/// from the one table; the I/O model goes before its cold reads.
fn counters_json(s: &Snapshot, io: &str, out: &mut String) {
    let mut group: Option<&str> = None;
    for c in COUNTERS {
        let v = (c.value)(s);
        if group == Some(c.group) && !c.group.is_empty() {
            let _ = write!(out, ",\"{}\":{v}", c.key);
            continue;
        }
        if group.is_some_and(|g| !g.is_empty()) {
            out.push('}');
        }
        group = Some(c.group);
        if c.group == "cold_reads" {
            let _ = write!(out, ",\"io\":{}", json_str(io));
        }
        if c.group.is_empty() {
            let _ = write!(out, ",\"{}\":{v}", c.key);
        } else {
            let _ = write!(out, ",\"{}\":{{\"{}\":{v}", c.group, c.key);
        }
    }
    if group.is_some_and(|g| !g.is_empty()) {
        out.push('}');
    }
}

/// The `--io` name of a model.
fn io_name(io: crate::out::IoModel) -> String {
    use clap::ValueEnum;
    io.to_possible_value()
        .map_or_else(|| format!("{io:?}"), |v| v.get_name().to_string())
}
