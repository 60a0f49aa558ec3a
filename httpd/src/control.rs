//! The control socket (`--control PATH`, mode 0600) and the `httpd ctl` client: status (text or
//! JSON), rotate, reopen, reload. One command per connection, one line in, the answer out.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

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
}

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
            _ => {
                format!("error: unknown command {line:?} (status [json], rotate, reopen, reload)\n")
            }
        }
    }

    /// Listens on `path` (mode 0600) on a thread of its own.
    pub fn serve(self: &Arc<Self>, path: &Path) -> std::io::Result<()> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let l = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for s in l.incoming() {
                    let s = match s {
                        Ok(s) => s,
                        Err(_) => {
                            // Out of descriptors and the like: back off, do not spin.
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            continue;
                        }
                    };
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    let mut line = String::new();
                    let mut r = BufReader::new(s.take(4096));
                    if r.read_line(&mut line).is_err() {
                        continue;
                    }
                    let answer = me.command(line.trim());
                    let mut s = r.into_inner().into_inner();
                    let _ = s.write_all(answer.as_bytes());
                }
            })?;
        Ok(())
    }
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
