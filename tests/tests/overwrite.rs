//! Webroots written over in place while httpd serves them (issue 10): `cp` over the file,
//! `truncate -s 0`, `truncate -s` to half, and a same-length rewrite with other bytes, each
//! during downloads from that host and from another one. httpd must stay alive, must never
//! send a body under another version's headers, and the other host must not notice.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use httpd_common::webroot::Webroot;
use tests::{Httpd, mkroot, pattern, write_tree};

const BIG: usize = 3 << 20;
const SMALL: usize = 20_000;

/// One version of a site: the bytes of each path, by ETag.
#[derive(Clone)]
struct Version {
    file: PathBuf,
    /// path -> (etag, body)
    objects: HashMap<&'static str, (String, Vec<u8>)>,
}

/// Builds a site whose two files have these sizes and bytes from `seed`, all with one mtime
/// (so two versions with equal sizes compile to files of equal length).
fn version(dir: &Path, name: &str, seed: u8, big: usize, small: usize) -> Version {
    let src = dir.join(format!("src-{name}"));
    let files = [
        ("big.bin", pattern(u32::from(seed), big)),
        ("small.txt", pattern(u32::from(seed) + 100, small)),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    write_tree(&src, &refs);
    for (p, _) in &files {
        let f = std::fs::File::options()
            .write(true)
            .open(src.join(p))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .unwrap();
    }
    let file = dir.join(format!("{name}.webroot"));
    mkroot(&src, &file, &["--no-compress"]);
    let w = Webroot::open(&file).unwrap();
    let mut objects = HashMap::new();
    for (p, body) in files {
        let path: &'static str = if p == "big.bin" {
            "/big.bin"
        } else {
            "/small.txt"
        };
        let etag = w
            .lookup(path.as_bytes())
            .unwrap()
            .identity()
            .unwrap()
            .etag
            .to_string();
        objects.insert(path, (etag, body));
    }
    Version { file, objects }
}

/// What one download ended as.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Outcome {
    /// 200, every byte of the version its ETag names.
    Correct,
    /// 503 while the host's webroot was withdrawn.
    Unavailable,
    /// The connection closed before the whole body arrived (a response cut cleanly).
    Cut,
}

/// One GET with Connection: close, checked against every known version.
fn download(
    addr: SocketAddr,
    host: &str,
    path: &str,
    versions: &[Version],
    slow: bool,
) -> Result<Outcome, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // A reset after a cut response.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("read: {e}")),
        }
        if slow {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
        // Cut inside the head: with `--io read` the status line and Date go in one write and
        // the header block (stored in the webroot) in the next, so a writer let in between
        // cuts the response there. Still a clean cut: no head terminator, nothing to mistake.
        return if all.is_empty() || all.starts_with(b"HTTP/1.1 ") {
            Ok(Outcome::Cut)
        } else {
            Err(format!("no head in {} bytes", all.len()))
        };
    };
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let body = &all[end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    match status {
        503 => return Ok(Outcome::Unavailable),
        200 => {}
        other => return Err(format!("status {other} for {host}{path}: {head}")),
    }
    let etag = field("etag").ok_or("200 without ETag")?;
    let len: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or("200 without Content-Length")?;
    let Some((_, want)) = versions
        .iter()
        .filter_map(|v| v.objects.get(path))
        .find(|(e, _)| *e == etag)
    else {
        return Err(format!("{host}{path}: unknown ETag {etag}"));
    };
    if len != want.len() {
        return Err(format!(
            "{host}{path}: Content-Length {len} under ETag {etag} of a {}-byte body",
            want.len()
        ));
    }
    if body.len() > len {
        return Err(format!(
            "{host}{path}: {} bytes after the body",
            body.len() - len
        ));
    }
    if body != &want[..body.len()] {
        let at = body.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "{host}{path}: byte {at} differs from the body its ETag {etag} names"
        ));
    }
    Ok(if body.len() == len {
        Outcome::Correct
    } else {
        Outcome::Cut
    })
}

/// Downloads in a loop from several threads until stopped; counts outcomes per host, keeps
/// every error.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    counts: Arc<Mutex<HashMap<(String, Outcome), u64>>>,
    errors: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicU64>,
}

impl Load {
    fn start(addr: SocketAddr, hosts: &[(&str, Vec<Version>)]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for (host, versions) in hosts {
            for (i, path) in ["/big.bin", "/small.txt", "/big.bin"].iter().enumerate() {
                let (stop, counts, errors, done) =
                    (stop.clone(), counts.clone(), errors.clone(), done.clone());
                let (host, versions, path) = (host.to_string(), versions.clone(), *path);
                threads.push(std::thread::spawn(move || {
                    // The third thread reads slowly: its downloads are in flight for long.
                    let slow = i == 2;
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 100_000 {
                        n += 1;
                        match download(addr, &host, path, &versions, slow) {
                            Ok(o) => {
                                *counts.lock().unwrap().entry((host.clone(), o)).or_default() += 1
                            }
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        Load {
            stop,
            threads,
            counts,
            errors,
            done,
        }
    }

    /// Lets at least `n` more downloads complete.
    fn run_for(&self, n: u64) {
        let start = self.done.load(Ordering::Relaxed);
        let end = Instant::now() + Duration::from_secs(30);
        while self.done.load(Ordering::Relaxed) < start + n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> (HashMap<(String, Outcome), u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let counts = self.counts.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (counts, errors)
    }
}

fn alive(h: &Httpd) -> bool {
    // SAFETY: kill(2) with signal 0 on our own child's PID only checks it exists.
    unsafe { libc::kill(h.pid(), 0) == 0 }
}

/// Status and ETag of `HEAD /small.txt` (read leniently: without a lease a head may hold
/// another version's bytes).
fn head_of(addr: SocketAddr, host: &str) -> (u16, Option<String>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, None);
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = write!(
        s,
        "HEAD /small.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let head = String::from_utf8_lossy(&all).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let etag = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("etag").then(|| v.trim().to_string())
    });
    (status, etag)
}

/// Lines of httpd's log saying an entry of `host` was refused.
fn refusals(h: &Httpd, host: &str) -> usize {
    h.log()
        .iter()
        .filter(|l| l.contains("refused") && l.contains(host))
        .count()
}

/// Waits until `host` answers with this version's ETag, or, for `None` (an invalid file in
/// place), until a new refusal is logged and the host answers 503.
fn serves(h: &Httpd, host: &str, v: Option<&Version>, refused_before: usize) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, etag) = head_of(h.addr, host);
        let ok = match v {
            None => status == 503 && refusals(h, host) > refused_before,
            Some(v) => status == 200 && etag.as_deref() == Some(&v.objects["/small.txt"].0),
        };
        if ok {
            return;
        }
        assert!(
            Instant::now() < end,
            "{host} does not serve {:?} within 20 s (last: {status} {etag:?})",
            v.map(|v| v.file.display().to_string()),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) {
    let t = Instant::now();
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
    eprintln!("{cmd:?} took {:?}", t.elapsed());
}

/// `truncate -s SIZE FILE`. coreutils' truncate opens with O_NONBLOCK, which a read lease
/// answers with EWOULDBLOCK at once (while the break it starts goes on): like an operator, try
/// again until httpd has let go.
fn truncate(size: &str, file: &Path) {
    for attempt in 0..50 {
        let o = Command::new("truncate")
            .args(["-s", size])
            .arg(file)
            .output()
            .unwrap();
        if o.status.success() {
            eprintln!("truncate -s {size}: done at attempt {}", attempt + 1);
            return;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("temporarily unavailable"),
            "truncate failed otherwise: {err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("truncate -s {size} never went through: the lease is not released");
}

/// Writes `from`'s bytes over `to` in place: same inode, no truncation.
fn rewrite_in_place(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let mut f = std::fs::File::options().write(true).open(to).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_data().unwrap();
}

fn overwrite_scenario(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let a = version(dir.path(), "a", 1, BIG, SMALL);
    let b = version(dir.path(), "b", 2, BIG / 2 + 123, SMALL * 2);
    let c = version(dir.path(), "c", 3, BIG, SMALL);
    let other = version(dir.path(), "other", 4, BIG, SMALL);
    assert_eq!(
        std::fs::metadata(&a.file).unwrap().len(),
        std::fs::metadata(&c.file).unwrap().len(),
        "versions a and c must have the same length for the same-length rewrite"
    );
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    // The written host is a plain file in the vhosts directory, as in the report.
    let entry = vhosts.join("over.test");
    std::fs::copy(&a.file, &entry).unwrap();
    std::os::unix::fs::symlink(&other.file, vhosts.join("other.test")).unwrap();

    let mut args = extra.to_vec();
    args.extend(["--log-level", "info"]);
    let h = Httpd::start(&vhosts, &args);
    serves(&h, "over.test", Some(&a), 0);
    let all = vec![a.clone(), b.clone(), c.clone()];
    let load = Load::start(
        h.addr,
        &[
            ("over.test", all.clone()),
            ("other.test", vec![other.clone()]),
        ],
    );
    load.run_for(30);

    type Step<'a> = (&'a str, Box<dyn Fn() + 'a>, Option<&'a Version>);
    let steps: Vec<Step<'_>> = vec![
        (
            "cp over",
            Box::new(|| run(Command::new("cp").arg(&b.file).arg(&entry))),
            Some(&b),
        ),
        (
            "cp back",
            Box::new(|| run(Command::new("cp").arg(&a.file).arg(&entry))),
            Some(&a),
        ),
        ("truncate -s 0", Box::new(|| truncate("0", &entry)), None),
        (
            "cp after truncate",
            Box::new(|| run(Command::new("cp").arg(&a.file).arg(&entry))),
            Some(&a),
        ),
        (
            "truncate to half",
            Box::new(|| {
                let half = (std::fs::metadata(&entry).unwrap().len() / 2).to_string();
                truncate(&half, &entry)
            }),
            None,
        ),
        (
            "cp after half",
            Box::new(|| run(Command::new("cp").arg(&a.file).arg(&entry))),
            Some(&a),
        ),
        (
            "same-length rewrite",
            Box::new(|| rewrite_in_place(&c.file, &entry)),
            Some(&c),
        ),
    ];
    for (name, write, then) in &steps {
        eprintln!("step: {name}");
        let refused = refusals(&h, "over.test");
        write();
        assert!(alive(&h), "httpd died after {name}: {:?}", h.log());
        serves(&h, "over.test", *then, refused);
        load.run_for(20);
        assert!(alive(&h), "httpd died after {name}: {:?}", h.log());
    }
    let (counts, errors) = load.finish();
    eprintln!("outcomes: {counts:?}");
    assert!(
        errors.is_empty(),
        "{} bad responses: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    let count = |host: &str, o| counts.get(&(host.to_string(), o)).copied().unwrap_or(0);
    assert!(count("over.test", Outcome::Correct) > 0);
    assert!(count("other.test", Outcome::Correct) > 0);
    assert_eq!(
        count("other.test", Outcome::Cut),
        0,
        "the other host noticed"
    );
    assert_eq!(
        count("other.test", Outcome::Unavailable),
        0,
        "the other host noticed"
    );
    let log = h.log();
    assert!(
        log.iter()
            .any(|l| l.contains("refused") && l.contains("over.test")),
        "an invalid file in place is refused with a log line: {log:?}"
    );
    assert_eq!(h.stop(), Some(0), "httpd exits cleanly after the writes");
}

#[test]
fn overwrite_in_place_async_sendfile() {
    overwrite_scenario(&["--io", "async-sendfile"]);
}

#[test]
fn overwrite_in_place_sendfile() {
    overwrite_scenario(&["--io", "sendfile"]);
}

#[test]
fn overwrite_in_place_mmap() {
    overwrite_scenario(&["--io", "mmap"]);
}

#[test]
fn overwrite_in_place_read() {
    overwrite_scenario(&["--io", "read"]);
}

/// Without leases (a file httpd may not lease): writes are noticed after the fact, so bytes of
/// two versions may meet in one response of the written host, but httpd never faults (bodies
/// reach the socket through syscalls only) and the other host never notices.
#[test]
fn overwrite_without_leases_never_faults() {
    let dir = tempfile::tempdir().unwrap();
    let a = version(dir.path(), "a", 1, BIG, SMALL);
    let b = version(dir.path(), "b", 2, BIG / 2 + 123, SMALL * 2);
    let other = version(dir.path(), "other", 4, BIG, SMALL);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    let entry = vhosts.join("over.test");
    std::fs::copy(&a.file, &entry).unwrap();
    std::os::unix::fs::symlink(&other.file, vhosts.join("other.test")).unwrap();
    let h = Httpd::start_env(&vhosts, &["--io", "mmap"], &[("HTTPD_NO_LEASES", "1")]);
    serves(&h, "over.test", Some(&a), 0);
    assert!(
        !h.log().iter().any(|l| l.contains("no read lease")),
        "leases are off, not refused"
    );
    let load = Load::start(
        h.addr,
        &[
            ("over.test", vec![a.clone(), b.clone()]),
            ("other.test", vec![other.clone()]),
        ],
    );
    load.run_for(30);
    for _ in 0..3 {
        truncate("0", &entry);
        load.run_for(10);
        assert!(alive(&h), "httpd died: {:?}", h.log());
        run(Command::new("cp").arg(&b.file).arg(&entry));
        load.run_for(10);
        assert!(alive(&h), "httpd died: {:?}", h.log());
        serves(&h, "over.test", Some(&b), 0);
        run(Command::new("cp").arg(&a.file).arg(&entry));
        serves(&h, "over.test", Some(&a), 0);
        load.run_for(10);
    }
    let (counts, errors) = load.finish();
    eprintln!(
        "outcomes without leases: {counts:?}; over.test mismatches: {}",
        errors.len()
    );
    let other_errors: Vec<&String> = errors.iter().filter(|e| e.contains("other.test")).collect();
    assert!(
        other_errors.is_empty(),
        "the other host noticed: {other_errors:?}"
    );
    let count = |host: &str, o| counts.get(&(host.to_string(), o)).copied().unwrap_or(0);
    assert_eq!(
        count("other.test", Outcome::Cut),
        0,
        "the other host noticed"
    );
    assert!(count("other.test", Outcome::Correct) > 0);
    assert_eq!(h.stop(), Some(0), "httpd exits cleanly after the writes");
}

/// Connections that received a body with sendfile and then closed (the client first, so the
/// server's socket goes away at once) must not hold the webroot's lease: a writer's open
/// goes through once they are gone, not after the kernel's lease-break-time (45 s). Found by
/// the soak: a closed connection's queues were read off the listening socket, whose backlog
/// looked like bytes not yet delivered.
#[test]
fn closed_connections_do_not_hold_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let a = version(dir.path(), "a", 1, BIG, SMALL);
    let b = version(dir.path(), "b", 2, BIG, SMALL);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    let entry = vhosts.join("w.test");
    std::fs::copy(&a.file, &entry).unwrap();
    let h = Httpd::start(&vhosts, &[]);
    serves(&h, "w.test", Some(&a), 0);
    for _ in 0..10 {
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /big.bin HTTP/1.1\r\nHost: w.test\r\n\r\n").unwrap();
        let mut r = std::io::BufReader::new(s);
        let resp = tests::read_response(&mut r, false).unwrap();
        assert_eq!(resp.body, a.objects["/big.bin"].1);
        // Dropped: the client closes first.
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    rewrite_in_place(&b.file, &entry);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "the writer waited {waited:?}: closed connections held the lease"
    );
    serves(&h, "w.test", Some(&b), 0);
    assert!(alive(&h));
}

/// A forwarded exchange waiting on the upstream and a tunnel open on a host must not hold its
/// webroot's lease either: they keep the host's name, log and counters, never its webroot, so
/// a writer's open goes through at once, not after the kernel's lease-break-time (45 s); the
/// tunnel goes on.
#[test]
fn forwarded_exchanges_and_tunnels_do_not_hold_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let a = version(dir.path(), "a", 1, BIG, SMALL);
    let b = version(dir.path(), "b", 2, BIG, SMALL);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    let entry = vhosts.join("w.test");
    std::fs::copy(&a.file, &entry).unwrap();
    let app = tests::App::start(None);
    let upstream = app.addr.to_string();
    let h = Httpd::start(&vhosts, &["--upstream", &upstream]);
    serves(&h, "w.test", Some(&a), 0);
    let ask = |req: &str| {
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s
    };
    // A tunnel (its 101 read), and an exchange the upstream answers in 3 s.
    let mut tunnel = ask(
        "GET /ws HTTP/1.1\r\nHost: w.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tunnel.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let slow = ask("GET /slow?ms=3000 HTTP/1.1\r\nHost: w.test\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    rewrite_in_place(&b.file, &entry);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "the writer waited {waited:?}: an open exchange or tunnel held the lease"
    );
    serves(&h, "w.test", Some(&b), 0);
    // Both go on: the tunnel echoes, the exchange is answered.
    tunnel.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    tunnel.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");
    let resp = tests::read_response(&mut std::io::BufReader::new(slow), false).unwrap();
    assert_eq!(resp.status, 200);
    assert!(alive(&h));
}
