//! Per-host access logs in Combined Log Format, buffered in memory and written by a flusher
//! thread at least once a second and at exit: never a write per request.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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

/// One log file and its buffer.
pub struct AccessLog {
    path: PathBuf,
    buf: Mutex<Vec<u8>>,
    file: Mutex<File>,
}

impl AccessLog {
    fn open(path: PathBuf) -> std::io::Result<AccessLog> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(AccessLog {
            path,
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            file: Mutex::new(file),
        })
    }

    /// Appends one record.
    pub fn record(&self, r: &Record<'_>) {
        let mut buf = lock(&self.buf);
        r.write_clf(&mut buf);
        if buf.len() >= FLUSH_AT {
            let data = std::mem::take(&mut *buf);
            drop(buf);
            self.write(&data);
        }
    }

    fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Err(e) = lock(&self.file).write_all(data) {
            tracing::error!("access log {}: {e}", self.path.display());
        }
    }

    pub fn flush(&self) {
        let data = std::mem::take(&mut *lock(&self.buf));
        self.write(&data);
    }

    /// Writes what is buffered, renames the file to a unique name and opens a fresh one under
    /// the configured name. The buffer stays locked throughout, so every record is in exactly
    /// one of the two files and the renamed one is complete when this returns.
    fn rotate(&self, stamp: &str) -> std::io::Result<PathBuf> {
        let mut buf = lock(&self.buf);
        let data = std::mem::take(&mut *buf);
        let mut file = lock(&self.file);
        file.write_all(&data)?;
        file.sync_data()?;
        let mut target = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}.{n}", self.path.display()));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        *file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        Ok(target)
    }

    /// Writes what is buffered and reopens the configured name (after an outside tool moved
    /// the file, logrotate style).
    fn reopen(&self) -> std::io::Result<()> {
        let mut buf = lock(&self.buf);
        let data = std::mem::take(&mut *buf);
        let mut file = lock(&self.file);
        file.write_all(&data)?;
        *file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        Ok(())
    }
}

/// The access logs of all hosts, under `--log-dir`.
pub struct LogSet {
    dir: PathBuf,
    logs: Mutex<HashMap<String, Arc<AccessLog>>>,
}

impl LogSet {
    pub fn new(dir: &Path) -> std::io::Result<Arc<LogSet>> {
        std::fs::create_dir_all(dir)?;
        let set = Arc::new(LogSet {
            dir: dir.to_path_buf(),
            logs: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&set);
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                while let Some(set) = weak.upgrade() {
                    set.flush_all();
                    drop(set);
                    std::thread::sleep(Duration::from_millis(500));
                }
            })?;
        Ok(set)
    }

    /// The log of `host` (`<dir>/<host>.access.log`), opened on first use.
    pub fn get(&self, host: &str) -> Option<Arc<AccessLog>> {
        let mut logs = lock(&self.logs);
        if let Some(l) = logs.get(host) {
            return Some(l.clone());
        }
        let path = self.dir.join(format!("{host}.access.log"));
        match AccessLog::open(path) {
            Ok(l) => {
                let l = Arc::new(l);
                logs.insert(host.to_string(), l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::error!("access log for {host} in {}: {e}", self.dir.display());
                None
            }
        }
    }

    /// Rotates every open log; returns the renamed files.
    pub fn rotate(&self) -> std::io::Result<Vec<PathBuf>> {
        let stamp = clf_stamp();
        let logs: Vec<Arc<AccessLog>> = lock(&self.logs).values().cloned().collect();
        logs.iter().map(|l| l.rotate(&stamp)).collect()
    }

    /// Reopens every log under its configured name.
    pub fn reopen(&self) -> std::io::Result<usize> {
        let logs: Vec<Arc<AccessLog>> = lock(&self.logs).values().cloned().collect();
        for l in &logs {
            l.reopen()?;
        }
        Ok(logs.len())
    }

    pub fn flush_all(&self) {
        let logs: Vec<Arc<AccessLog>> = lock(&self.logs).values().cloned().collect();
        for l in logs {
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

impl Record<'_> {
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
