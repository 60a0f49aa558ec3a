//! Per-host access logs in Combined Log Format, buffered in memory and written by a flusher
//! thread at least once a second and at exit: never a write per request.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often the control plane writes out what is buffered.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(500);
/// A buffer above this size is written at once rather than at the next tick.
const FLUSH_AT: usize = 256 * 1024;
/// Longest logged field (request line, referer, user agent); longer ones are cut.
const MAX_FIELD: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// What a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Combined Log Format.
    Combined,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Access(Format),
    /// phhttpd's referer log: `referer -> target`.
    Referer,
    /// phhttpd's agent log: the User-Agent.
    Agent,
}

/// One log file and its buffer.
pub struct AccessLog {
    kind: Kind,
    path: PathBuf,
    buf: Mutex<Vec<u8>>,
    file: Mutex<Sink>,
}

/// Most bytes kept for a log that cannot be written (a full disk); beyond it, records are
/// dropped and counted.
const MAX_PENDING: usize = 4 << 20;

/// A log file and what could not be written to it yet.
struct Sink {
    file: File,
    /// Bytes a failed write left: written first at the next flush (they may finish a line
    /// whose start is in the file already).
    pending: Vec<u8>,
    /// The error of the last write, if it failed (said once, not at every flush).
    failing: Option<std::io::ErrorKind>,
    /// Records dropped since the log failed.
    dropped: u64,
}

impl Sink {
    fn new(file: File) -> Sink {
        Sink {
            file,
            pending: Vec::new(),
            failing: None,
            dropped: 0,
        }
    }

    /// Writes what is pending, then `data`. On an error (a full disk), what was not written is
    /// kept, up to [`MAX_PENDING`]; the failure is logged once, and the recovery once.
    fn write(&mut self, data: &[u8], path: &Path) {
        if !self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            self.write_now(&pending, path);
        } else {
            self.write_now(data, path);
        }
    }

    fn write_now(&mut self, data: &[u8], path: &Path) {
        let mut done = 0;
        while done < data.len() {
            match self.file.write(&data[done..]) {
                Ok(0) => {
                    self.failed(&data[done..], std::io::ErrorKind::WriteZero);
                    return;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.failing.is_none() {
                        tracing::error!(
                            "access log {}: {e}; records are kept in memory (up to {} MiB) and \
                             written when it can be written again",
                            path.display(),
                            MAX_PENDING >> 20
                        );
                    }
                    self.failed(&data[done..], e.kind());
                    return;
                }
            }
        }
        if self.failing.take().is_some() {
            tracing::warn!(
                "access log {}: written again; {} record(s) dropped meanwhile",
                path.display(),
                self.dropped
            );
            self.dropped = 0;
        }
    }

    fn failed(&mut self, rest: &[u8], kind: std::io::ErrorKind) {
        self.failing = Some(kind);
        if rest.len() <= MAX_PENDING {
            self.pending = rest.to_vec();
            return;
        }
        // Too much: keep the end of the line already started in the file (so it is never
        // left torn), drop whole records after it.
        let cut = rest
            .iter()
            .position(|&c| c == b'\n')
            .map_or(rest.len(), |i| i + 1);
        self.dropped += rest[cut..].iter().filter(|&&c| c == b'\n').count() as u64;
        self.pending = rest[..cut].to_vec();
    }
}

impl AccessLog {
    fn open(path: PathBuf, kind: Kind) -> std::io::Result<AccessLog> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(AccessLog {
            kind,
            path,
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            file: Mutex::new(Sink::new(file)),
        })
    }

    /// Appends one record.
    pub fn record(&self, r: &Record<'_>) {
        let mut buf = lock(&self.buf);
        match self.kind {
            Kind::Access(Format::Combined) => r.write_clf(&mut buf),
            Kind::Access(Format::Json) => r.write_json(&mut buf),
            Kind::Referer => {
                let Some(referer) = r.referer else { return };
                escaped(&mut buf, referer);
                buf.extend_from_slice(b" -> ");
                escaped(&mut buf, r.target);
                buf.push(b'\n');
            }
            Kind::Agent => {
                let Some(ua) = r.user_agent else { return };
                escaped(&mut buf, ua);
                buf.push(b'\n');
            }
        }
        if buf.len() >= FLUSH_AT {
            self.write_out(buf);
        }
    }

    /// Moves the buffer to the file. The file is locked before the buffer is released, so
    /// writes reach the file in record order and a rotation cannot slip between them.
    fn write_out(&self, mut buf: MutexGuard<'_, Vec<u8>>) {
        if buf.is_empty() {
            return;
        }
        let data = std::mem::take(&mut *buf);
        let mut file = lock(&self.file);
        drop(buf);
        file.write(&data, &self.path);
    }

    pub fn flush(&self) {
        self.write_out(lock(&self.buf));
    }

    /// Writes what is buffered, renames the file to a unique name and opens a fresh one under
    /// the configured name. The buffer stays locked throughout, so every record is in exactly
    /// one of the two files and the renamed one is complete when this returns.
    fn rotate(&self, stamp: &str) -> std::io::Result<PathBuf> {
        let mut buf = lock(&self.buf);
        let data = std::mem::take(&mut *buf);
        let mut file = lock(&self.file);
        file.write(&data, &self.path);
        if let Some(kind) = file.failing {
            return Err(std::io::Error::new(
                kind,
                format!("{}: cannot write it, not rotated", self.path.display()),
            ));
        }
        file.file.sync_data()?;
        let mut target = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}.{n}", self.path.display()));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => file.file = f,
            Err(e) => {
                // Keep logging into the renamed file rather than nowhere; say so.
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "{}: rotated to {} but cannot reopen: {e}",
                        self.path.display(),
                        target.display()
                    ),
                ));
            }
        }
        Ok(target)
    }

    /// Writes what is buffered and reopens the configured name (after an outside tool moved
    /// the file, logrotate style).
    fn reopen(&self) -> std::io::Result<()> {
        let mut buf = lock(&self.buf);
        let data = std::mem::take(&mut *buf);
        let mut file = lock(&self.file);
        file.write(&data, &self.path);
        file.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        Ok(())
    }
}

/// The logs of one host: access log, and the optional referer and agent logs.
pub struct HostLogs {
    files: Vec<Arc<AccessLog>>,
}

impl HostLogs {
    pub fn record(&self, r: &Record<'_>) {
        for f in &self.files {
            f.record(r);
        }
    }
}

/// What `--log-dir` and its companions ask for.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub format: Format,
    pub referer: bool,
    pub agent: bool,
}

/// The logs of all hosts, under `--log-dir`.
pub struct LogSet {
    dir: PathBuf,
    opts: LogOptions,
    logs: Mutex<HashMap<String, Arc<HostLogs>>>,
}

impl LogSet {
    pub fn new(dir: &Path, opts: LogOptions) -> std::io::Result<Arc<LogSet>> {
        std::fs::create_dir_all(dir)?;
        let set = Arc::new(LogSet {
            dir: dir.to_path_buf(),
            opts,
            logs: Mutex::new(HashMap::new()),
        });
        // Flushed every FLUSH_PERIOD by the control plane (`ctlplane`), and at exit.
        Ok(set)
    }

    /// The logs of `host` (`<dir>/<host>.access.log`, `.referer.log`, `.agent.log`), opened on
    /// first use.
    pub fn get(&self, host: &str) -> Option<Arc<HostLogs>> {
        let mut logs = lock(&self.logs);
        if let Some(l) = logs.get(host) {
            return Some(l.clone());
        }
        let mut wanted = vec![("access", Kind::Access(self.opts.format))];
        if self.opts.referer {
            wanted.push(("referer", Kind::Referer));
        }
        if self.opts.agent {
            wanted.push(("agent", Kind::Agent));
        }
        let mut files = Vec::new();
        for (suffix, kind) in wanted {
            let path = self.dir.join(format!("{host}.{suffix}.log"));
            match AccessLog::open(path, kind) {
                Ok(l) => files.push(Arc::new(l)),
                Err(e) => {
                    tracing::error!("{suffix} log for {host} in {}: {e}", self.dir.display());
                    return None;
                }
            }
        }
        let l = Arc::new(HostLogs { files });
        logs.insert(host.to_string(), l.clone());
        Some(l)
    }

    fn all(&self) -> Vec<Arc<AccessLog>> {
        lock(&self.logs)
            .values()
            .flat_map(|h| h.files.iter().cloned())
            .collect()
    }

    /// Rotates every open log, going on after a failure; the renamed files and the errors.
    pub fn rotate(&self) -> (Vec<PathBuf>, Vec<std::io::Error>) {
        let stamp = clf_stamp();
        let (mut done, mut errors) = (Vec::new(), Vec::new());
        for l in self.all() {
            match l.rotate(&stamp) {
                Ok(p) => done.push(p),
                Err(e) => errors.push(e),
            }
        }
        (done, errors)
    }

    /// Reopens every log under its configured name, going on after a failure.
    pub fn reopen(&self) -> (usize, Vec<std::io::Error>) {
        let (mut n, mut errors) = (0, Vec::new());
        for l in self.all() {
            match l.reopen() {
                Ok(()) => n += 1,
                Err(e) => errors.push(e),
            }
        }
        (n, errors)
    }

    /// Gives the log directory and its files to `uid:gid` (before a privilege drop, so the
    /// new user can still rotate, reopen and create logs).
    pub fn chown_all(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))?;
        for l in self.all() {
            std::os::unix::fs::chown(&l.path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    pub fn flush_all(&self) {
        for l in self.all() {
            l.flush();
        }
    }
}

/// What is logged of one request.
pub struct Record<'a> {
    pub client: IpAddr,
    /// `[10/Oct/2000:13:55:36 +0000]` without brackets.
    pub time: &'a str,
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub minor: u8,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// TLS version and cipher suite (None: plain HTTP); in the JSON format only.
    pub tls: Option<(&'static str, &'static str)>,
}

fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    let cut = v.len() > MAX_FIELD;
    for &c in &v[..v.len().min(MAX_FIELD)] {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{c:02X}");
        }
    }
    if cut {
        out.extend_from_slice(b"...");
    }
}

fn json_field(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    let cut = v.len() > MAX_FIELD;
    for &c in &v[..v.len().min(MAX_FIELD)] {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(c),
            _ => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
    }
    if cut {
        out.extend_from_slice(b"...");
    }
    out.push(b'"');
}

impl Record<'_> {
    /// One JSON object: time, client, method, target, protocol, status, bytes, referer, agent.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "{{\"time\":\"{}\",\"client\":\"{}\",\"method\":",
            self.time, self.client
        );
        json_field(out, self.method);
        out.extend_from_slice(b",\"target\":");
        json_field(out, self.target);
        let _ = write!(
            out,
            ",\"protocol\":\"HTTP/1.{}\",\"status\":{},\"bytes\":{},\"referer\":",
            self.minor, self.status, self.bytes
        );
        match self.referer {
            Some(v) => json_field(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"user_agent\":");
        match self.user_agent {
            Some(v) => json_field(out, v),
            None => out.extend_from_slice(b"null"),
        }
        match self.tls {
            Some((v, c)) => {
                let _ = write!(out, ",\"tls\":\"{v}\",\"cipher\":\"{c}\"");
            }
            None => out.extend_from_slice(b",\"tls\":null,\"cipher\":null"),
        }
        out.extend_from_slice(b"}\n");
    }

    /// `host - - [time] "request" status bytes "referer" "user-agent"`
    pub fn write_clf(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "{} - - [{}] \"", self.client, self.time);
        let mut line = Vec::with_capacity(self.method.len() + self.target.len() + 10);
        line.extend_from_slice(self.method);
        line.push(b' ');
        line.extend_from_slice(self.target);
        let _ = write!(line, " HTTP/1.{}", self.minor);
        escaped(out, &line);
        let _ = write!(out, "\" {} {} \"", self.status, self.bytes);
        escaped(out, self.referer.unwrap_or(b"-"));
        out.extend_from_slice(b"\" \"");
        escaped(out, self.user_agent.unwrap_or(b"-"));
        out.extend_from_slice(b"\"\n");
    }
}

/// A file-name timestamp for rotated logs: `20261122T004500Z`.
fn clf_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = clf_time(secs); // 22/Nov/2026:00:45:00 +0000
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = &t[0..2];
    let mon = months
        .iter()
        .position(|m| *m == &t[3..6])
        .map_or(0, |i| i + 1);
    let year = &t[7..11];
    format!(
        "{year}{mon:02}{day}T{}{}{}Z",
        &t[12..14],
        &t[15..17],
        &t[18..20]
    )
}

/// Common Log Format time for Unix seconds (UTC).
pub fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf() {
        assert_eq!(clf_time(971_185_336), "10/Oct/2000:13:42:16 +0000");
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(1_709_164_800), "29/Feb/2024:00:00:00 +0000");
        let mut out = Vec::new();
        Record {
            client: "127.0.0.1".parse().unwrap(),
            time: "t",
            method: b"GET",
            target: b"/a\"b\x01",
            minor: 1,
            status: 200,
            bytes: 5,
            referer: None,
            user_agent: Some(&[b'x'; 2000]),
            tls: None,
        }
        .write_clf(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("127.0.0.1 - - [t] \"GET /a\\x22b\\x01 HTTP/1.1\" 200 5 \"-\" \""),
            "{s}"
        );
        assert!(s.len() < 1200 && s.ends_with("...\"\n"));
    }
}
