//! The soak (`cargo xtask soak --seconds N`): every kind of client at once against one httpd,
//! every response checked byte by byte, while faults run on a schedule; then the invariants.
//!
//! Load: keep-alive static hits on four hosts (bodies compared with the source files), ranges
//! and conditionals, forwarded GETs and POSTs with Content-Length and chunked bodies up to
//! 3 MiB (the app echoes the body), pipelined requests, WebSocket echoes, HTTP/1.0 clients,
//! slow readers, slowloris connections, malformed requests, clients that reset mid-body.
//! Faults: the upstream killed and restarted; a webroot swapped every 200 ms; a corrupt webroot
//! dropped in and removed; a webroot overwritten in place; SIGHUP reloads and log rotations;
//! httpd's RLIMIT_NOFILE run to the edge by idle connections (accept must recover). Two
//! phases: `--ebpf off`, then `--ebpf auto` (on as root with the object built).
//!
//! At the end of each phase: requests by kind and outcome; zero wrong bytes or framing; every
//! request correct or a clean error (4xx, 502, 503, 504), or cut inside a fault window that
//! explains it; no panic; fds and RSS against their level before the load; access-log lines
//! equal to the requests the hosts answered. Exit status 1 if an invariant fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::{App, bin, mkroot, pattern, read_response};

/// httpd's RLIMIT_NOFILE in the soak: low enough for the fd fault to reach it.
const NOFILE: u64 = 768;
const HOSTS: [&str; 4] = ["a.test", "b.test", "swap.test", "ow.test"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One site's files, kept in memory to check bodies against.
struct Site {
    files: Vec<(String, Arc<Vec<u8>>)>,
}

fn make_site(dir: &Path, seed: u32) -> Site {
    let mut rng = Rng(u64::from(seed) * 0x9E37_79B9 + 1);
    let mut files = Vec::new();
    for i in 0..40 {
        let len = match i % 10 {
            0 => 1_000_000 + rng.below(2_000_000) as usize,
            1..=4 => 16_384 + rng.below(240_000) as usize,
            _ => 100 + rng.below(16_000) as usize,
        };
        let data = if i % 3 == 0 {
            // Compressible text: mkroot keeps variants, which must never be sent unasked.
            let words = ["static ", "hit ", "upstream ", "webroot ", "soak\n"];
            let mut t = Vec::with_capacity(len);
            while t.len() < len {
                t.extend_from_slice(words[rng.below(5) as usize].as_bytes());
            }
            t.truncate(len);
            t
        } else {
            pattern(seed * 1000 + i, len)
        };
        let name = format!("d{}/f{i}.{}", i % 4, if i % 3 == 0 { "txt" } else { "bin" });
        let p = dir.join(&name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, &data).expect("write source");
        files.push((format!("/{name}"), Arc::new(data)));
    }
    Site { files }
}

/// What happened to one request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Outcome {
    Ok,
    /// 4xx, 502, 503, 504 where the case allows it.
    Clean(u16),
    /// The connection failed or the response was cut, inside a fault window that explains it.
    CutInFault,
    /// The expected end of a slowloris or reset client.
    Expected,
    /// Wrong bytes, wrong framing, a status that should not be, or a failure with no fault.
    Wrong,
}

#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<(&'static str, Outcome), u64>>,
    wrong: Mutex<Vec<String>>,
}

impl Tally {
    fn add(&self, kind: &'static str, o: Outcome) {
        *lock(&self.counts).entry((kind, o)).or_default() += 1;
    }
    fn wrong(&self, kind: &'static str, why: String) {
        self.add(kind, Outcome::Wrong);
        let mut w = lock(&self.wrong);
        if w.len() < 20 {
            w.push(format!("{kind}: {why}"));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fault windows: a connection failure inside one (with a grace after) is explained.
#[derive(Default)]
struct Faults {
    /// Until when (ms since start) each kind of fault explains failures.
    upstream_until: AtomicU64,
    fd_until: AtomicU64,
    /// ow.test being written in place: responses in flight from it are cut.
    ow_until: AtomicU64,
    start: Mutex<Option<Instant>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Faults {
    fn now(&self) -> u64 {
        lock(&self.start).map_or(0, |s| s.elapsed().as_millis() as u64)
    }
    fn open(&self, which: &AtomicU64, ms: u64) {
        which.fetch_max(self.now() + ms, Ordering::SeqCst);
    }
    fn upstream(&self) -> bool {
        self.now() <= self.upstream_until.load(Ordering::SeqCst)
    }
    fn fd(&self) -> bool {
        self.now() <= self.fd_until.load(Ordering::SeqCst)
    }
    fn ow(&self) -> bool {
        self.now() <= self.ow_until.load(Ordering::SeqCst)
    }
    fn count(&self, what: &'static str) {
        *lock(&self.counts).entry(what).or_default() += 1;
    }
}

/// One kind of client: runs until the world stops.
type LoadFn = fn(&World, u64);

struct World {
    addr: SocketAddr,
    sites: BTreeMap<&'static str, Arc<Site>>,
    tally: Tally,
    faults: Faults,
    stop: AtomicBool,
}

impl World {
    fn pick(&self, rng: &mut Rng) -> (&'static str, String, Arc<Vec<u8>>) {
        let host = HOSTS[rng.below(HOSTS.len() as u64) as usize];
        let site = &self.sites[host];
        let (p, d) = &site.files[rng.below(site.files.len() as u64) as usize];
        (host, p.clone(), d.clone())
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_write_timeout(Some(Duration::from_secs(15)))?;
        Ok(s)
    }

    /// A static request to `host` that failed (its write, or its response) on a connection
    /// that asked ow.test for something (`conn_ow`: this request or an earlier one): a cut
    /// while ow.test is written in place is explained, because httpd resets every connection
    /// whose socket may still hold pages of the withdrawn file (sent but not yet acknowledged),
    /// whichever request it is on, and the client may be writing its next one.
    fn failed_static(&self, kind: &'static str, host: &str, conn_ow: bool, why: String) {
        if (conn_ow || host == "ow.test") && self.faults.ow() {
            self.tally.add(kind, Outcome::CutInFault);
        } else {
            self.failed(kind, false, format!("{host}: {why}"));
        }
    }

    /// A failure with no response: explained by a fault window, or wrong.
    fn failed(&self, kind: &'static str, upstream_involved: bool, why: String) {
        if self.faults.fd() || (upstream_involved && self.faults.upstream()) {
            self.tally.add(kind, Outcome::CutInFault);
        } else {
            self.tally
                .wrong(kind, format!("at {} ms: {why}", self.faults.now()));
        }
    }
}

/// A static response: 200 with exactly `want`, or 503 (a webroot being written in place).
fn judge_static(w: &World, kind: &'static str, host: &str, status: u16, body: &[u8], want: &[u8]) {
    match status {
        200 if body == want => w.tally.add(kind, Outcome::Ok),
        200 => w.tally.wrong(
            kind,
            format!("{host}: 200 with {} bytes, want {}", body.len(), want.len()),
        ),
        503 if host == "ow.test" => w.tally.add(kind, Outcome::Clean(503)),
        s => w.tally.wrong(kind, format!("{host}: status {s}")),
    }
}

fn static_keepalive(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(s) = w.connect() else {
            w.failed("static", false, "connect".into());
            continue;
        };
        let mut r = BufReader::new(s);
        let mut conn_ow = false;
        for _ in 0..50 {
            if w.stop.load(Ordering::Relaxed) {
                return;
            }
            let (host, path, data) = w.pick(&mut rng);
            conn_ow |= host == "ow.test";
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            if r.get_mut().write_all(req.as_bytes()).is_err() {
                w.failed_static("static", host, conn_ow, format!("write {path}"));
                break;
            }
            match read_response(&mut r, false) {
                Ok(resp) => judge_static(w, "static", host, resp.status, &resp.body, &data),
                Err(e) => {
                    w.failed_static("static", host, conn_ow, format!("{path}: {e}"));
                    break;
                }
            }
        }
    }
}

fn ranges_and_conditionals(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(s) = w.connect() else {
            w.failed("range", false, "connect".into());
            continue;
        };
        let mut r = BufReader::new(s);
        let mut conn_ow = false;
        for _ in 0..20 {
            let (host, path, data) = w.pick(&mut rng);
            conn_ow |= host == "ow.test";
            let a = rng.below(data.len() as u64);
            let b = a + rng.below(data.len() as u64 - a);
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={a}-{b}\r\n\r\n");
            if r.get_mut().write_all(req.as_bytes()).is_err() {
                w.failed_static("range", host, conn_ow, "write".into());
                break;
            }
            let resp = match read_response(&mut r, false) {
                Ok(x) => x,
                Err(e) => {
                    w.failed_static("range", host, conn_ow, format!("{e}"));
                    break;
                }
            };
            match resp.status {
                206 if resp.body == data[a as usize..=b as usize] => {
                    w.tally.add("range", Outcome::Ok)
                }
                503 if host == "ow.test" => w.tally.add("range", Outcome::Clean(503)),
                s => {
                    w.tally
                        .wrong("range", format!("{host}{path} {a}-{b}: status {s}"));
                    continue;
                }
            }
            let Some(etag) = resp.header("etag").map(str::to_string) else {
                continue;
            };
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nIf-None-Match: {etag}\r\n\r\n");
            if r.get_mut().write_all(req.as_bytes()).is_err() {
                w.failed_static("conditional", host, conn_ow, "write".into());
                break;
            }
            match read_response(&mut r, false) {
                Ok(x) if x.status == 304 && x.body.is_empty() => {
                    w.tally.add("conditional", Outcome::Ok)
                }
                // Another webroot version may carry another ETag: then the full body.
                Ok(x) => judge_static(w, "conditional", host, x.status, &x.body, &data),
                Err(e) => {
                    w.failed_static("conditional", host, conn_ow, format!("{e}"));
                    break;
                }
            }
        }
    }
}

/// The app's echo of a request with `body`: ends with `\nbody=` and the body.
fn echo_ok(resp_body: &[u8], body: &[u8]) -> bool {
    resp_body.len() >= body.len() + 6
        && resp_body.ends_with(body)
        && &resp_body[resp_body.len() - body.len() - 6..resp_body.len() - body.len()] == b"\nbody="
}

fn forward(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(s) = w.connect() else {
            w.failed("forward", true, "connect".into());
            continue;
        };
        let mut r = BufReader::new(s);
        for _ in 0..10 {
            let len = match rng.below(10) {
                0 => rng.below(3 << 20) as usize,
                1..=3 => rng.below(256 << 10) as usize,
                _ => rng.below(4096) as usize,
            };
            let body = pattern(rng.next() as u32, len);
            let (kind, mut req) = match rng.below(3) {
                0 => (
                    "forward-get",
                    format!("GET /echo?n={len} HTTP/1.1\r\nHost: a.test\r\n\r\n").into_bytes(),
                ),
                1 => (
                    "forward-post-cl",
                    format!("POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: {len}\r\n\r\n")
                        .into_bytes(),
                ),
                _ => (
                    "forward-post-chunked",
                    b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec(),
                ),
            };
            match kind {
                "forward-post-cl" => req.extend_from_slice(&body),
                "forward-post-chunked" => {
                    for c in body.chunks(1 + rng.below(70_000) as usize) {
                        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        req.extend_from_slice(c);
                        req.extend_from_slice(b"\r\n");
                    }
                    req.extend_from_slice(b"0\r\n\r\n");
                }
                _ => {}
            }
            let want: &[u8] = if kind == "forward-get" { b"" } else { &body };
            // Write from another thread: a big body and its echo would fill both directions.
            let mut wr = match r.get_ref().try_clone() {
                Ok(x) => x,
                Err(_) => break,
            };
            let writer = std::thread::spawn(move || wr.write_all(&req).is_ok());
            let res = read_response(&mut r, false);
            let wrote = writer.join().unwrap_or(false);
            match res {
                Ok(x) if x.status == 200 && echo_ok(&x.body, want) => {
                    w.tally.add(kind, Outcome::Ok)
                }
                Ok(x) if x.status == 200 => {
                    w.tally.wrong(kind, format!("echo of {len} bytes differs"));
                    break;
                }
                Ok(x) if matches!(x.status, 502..=504) && w.faults.upstream() => {
                    w.tally.add(kind, Outcome::Clean(x.status));
                    if x.header("connection").is_some_and(|c| c.contains("close")) {
                        break;
                    }
                }
                Ok(x) => {
                    w.tally
                        .wrong(kind, format!("status {} ({len} bytes)", x.status));
                    break;
                }
                Err(e) => {
                    w.failed(kind, true, format!("{len} bytes, wrote {wrote}: {e}"));
                    break;
                }
            }
        }
    }
}

fn pipelined(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(s) = w.connect() else {
            w.failed("pipelined", false, "connect".into());
            continue;
        };
        let mut r = BufReader::new(s);
        let picks: Vec<_> = (0..4).map(|_| w.pick(&mut rng)).collect();
        let conn_ow = picks.iter().any(|(h, _, _)| *h == "ow.test");
        let mut req = String::new();
        for (host, path, _) in &picks {
            req.push_str(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        }
        if r.get_mut().write_all(req.as_bytes()).is_err() {
            w.failed("pipelined", false, "write".into());
            continue;
        }
        for (host, path, data) in &picks {
            match read_response(&mut r, false) {
                Ok(x) => judge_static(w, "pipelined", host, x.status, &x.body, data),
                Err(e) => {
                    w.failed_static("pipelined", host, conn_ow, format!("{path}: {e}"));
                    break;
                }
            }
        }
    }
}

fn websocket(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(s) = w.connect() else {
            w.failed("websocket", true, "connect".into());
            continue;
        };
        let mut r = BufReader::new(s);
        let req =
            "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        if r.get_mut().write_all(req.as_bytes()).is_err() {
            w.failed("websocket", true, "write".into());
            continue;
        }
        match read_response(&mut r, true) {
            Ok(x) if x.status == 101 => {}
            Ok(x) if matches!(x.status, 502..=504) && w.faults.upstream() => {
                w.tally.add("websocket", Outcome::Clean(x.status));
                continue;
            }
            Ok(x) => {
                w.tally.wrong("websocket", format!("status {}", x.status));
                continue;
            }
            Err(e) => {
                w.failed("websocket", true, format!("{e}"));
                continue;
            }
        }
        let data = pattern(rng.next() as u32, 1 + rng.below(256 << 10) as usize);
        let mut wr = match r.get_ref().try_clone() {
            Ok(x) => x,
            Err(_) => continue,
        };
        let send = data.clone();
        let writer = std::thread::spawn(move || {
            let ok = wr.write_all(&send).is_ok();
            let _ = wr.shutdown(std::net::Shutdown::Write);
            ok
        });
        let mut back = Vec::new();
        let res = r.read_to_end(&mut back);
        let _ = writer.join();
        match res {
            Ok(_) if back == data => w.tally.add("websocket", Outcome::Ok),
            Ok(_) => w.failed(
                "websocket",
                true,
                format!("echoed {} of {} bytes", back.len(), data.len()),
            ),
            Err(e) => w.failed("websocket", true, format!("{e}")),
        }
    }
}

fn http10(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let (host, path, data) = w.pick(&mut rng);
        let Ok(mut s) = w.connect() else {
            w.failed("http/1.0", false, "connect".into());
            continue;
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            w.failed("http/1.0", false, "write".into());
            continue;
        }
        let mut r = BufReader::new(s);
        match read_response(&mut r, false) {
            Ok(x) => {
                // Nothing after the response: the server closes an HTTP/1.0 connection.
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest);
                if rest.is_empty() {
                    judge_static(w, "http/1.0", host, x.status, &x.body, &data);
                } else {
                    w.tally.wrong(
                        "http/1.0",
                        format!("{} bytes after the response", rest.len()),
                    );
                }
            }
            Err(e) => w.failed_static("http/1.0", host, false, format!("{e}")),
        }
    }
}

fn slow_reader(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    let big: Vec<_> = w.sites["a.test"]
        .files
        .iter()
        .filter(|(_, d)| d.len() > 1_000_000)
        .cloned()
        .collect();
    while !w.stop.load(Ordering::Relaxed) {
        let (path, data) = &big[rng.below(big.len() as u64) as usize];
        let Ok(mut s) = w.connect() else {
            w.failed("slow-reader", false, "connect".into());
            continue;
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            w.failed("slow-reader", false, "write".into());
            continue;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        match read_response(&mut &got[..], false) {
            Ok(x) => judge_static(w, "slow-reader", "a.test", x.status, &x.body, data),
            Err(e) => w.failed("slow-reader", false, format!("{e}")),
        }
    }
}

/// Connections that never finish their head: the server must close them (header timeout).
fn slowloris(w: &World) {
    while !w.stop.load(Ordering::Relaxed) {
        let mut conns: Vec<TcpStream> = (0..20).filter_map(|_| w.connect().ok()).collect();
        for c in &mut conns {
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ");
        }
        let t = Instant::now();
        while !conns.is_empty() && t.elapsed() < Duration::from_secs(8) {
            if w.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
            conns.retain_mut(|c| {
                if c.write_all(b"a").is_err() {
                    w.tally.add("slowloris", Outcome::Expected);
                    return false;
                }
                let _ = c.set_nonblocking(true);
                let mut b = [0u8; 512];
                let closed = match c.read(&mut b) {
                    Ok(_) => true,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                let _ = c.set_nonblocking(false);
                if closed {
                    w.tally.add("slowloris", Outcome::Expected);
                }
                !closed
            });
        }
        for _ in &conns {
            w.tally
                .wrong("slowloris", "not closed by the header timeout".into());
        }
    }
}

const MALFORMED: [&[u8]; 8] = [
    b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\n",
];

fn malformed(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(mut s) = w.connect() else {
            w.failed("malformed", false, "connect".into());
            continue;
        };
        let bad = MALFORMED[rng.below(MALFORMED.len() as u64) as usize];
        let _ = s.write_all(bad);
        let mut r = BufReader::new(s);
        match read_response(&mut r, false) {
            Ok(x) if (400..=505).contains(&x.status) && x.status != 502 => {
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest);
                if rest.is_empty() {
                    w.tally.add("malformed", Outcome::Clean(x.status));
                } else {
                    w.tally.wrong("malformed", "connection not closed".into());
                }
            }
            Ok(x) => w
                .tally
                .wrong("malformed", format!("status {} for {bad:?}", x.status)),
            Err(e) => w.failed("malformed", false, format!("{e}")),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A POST that announces 1 MiB, sends part of it, and resets.
fn reset_mid_body(w: &World, seed: u64) {
    let mut rng = Rng(seed);
    while !w.stop.load(Ordering::Relaxed) {
        let Ok(mut s) = w.connect() else {
            w.failed("reset-mid-body", true, "connect".into());
            continue;
        };
        let head = "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1048576\r\n\r\n";
        let part = pattern(rng.next() as u32, rng.below(500_000) as usize);
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&part);
        std::thread::sleep(Duration::from_millis(rng.below(50)));
        reset(&s);
        drop(s);
        w.tally.add("reset-mid-body", Outcome::Expected);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SO_LINGER 0: the close sends a reset.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a live linger and its exact size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// --- the server and its faults ------------------------------------------------------------------

struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

fn start_httpd(
    vhosts: &Path,
    logs: &Path,
    control: &Path,
    upstream: SocketAddr,
    ebpf: &str,
) -> Server {
    start_httpd_with(
        vhosts,
        logs,
        control,
        upstream,
        ebpf,
        NOFILE,
        &["--header-timeout", "3s"],
    )
}

fn start_httpd_with(
    vhosts: &Path,
    logs: &Path,
    control: &Path,
    upstream: SocketAddr,
    ebpf: &str,
    nofile: u64,
    extra: &[&str],
) -> Server {
    let mut cmd = Command::new(bin("httpd"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--ebpf", ebpf])
        .args(["--upstream", &upstream.to_string()])
        .args(["--upstream-timeout", "10s"])
        .args(extra)
        .arg("--log-dir")
        .arg(logs)
        .arg("--control")
        .arg(control)
        .arg(vhosts)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit only, between fork and exec (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start httpd");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on ") {
                let a = line[i + 13..].split_whitespace().next().unwrap_or("");
                let _ = tx.send(a.to_string());
            }
            lock(&log2).push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("httpd did not start")
        .parse()
        .expect("listen address");
    Server { child, log, addr }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Replaces the entry `name` with a symlink to `target`, atomically.
fn point(vhosts: &Path, name: &str, target: &Path) {
    let tmp = vhosts.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, vhosts.join(name)).expect("rename");
}

struct Paths {
    vhosts: PathBuf,
    swap: [PathBuf; 2],
    ow: PathBuf,
    ow_fresh: PathBuf,
    control: PathBuf,
}

fn fault_loop(w: &World, p: &Paths, httpd_pid: u32, app: &Mutex<Option<App>>) {
    let mut tick = 0u64;
    let mut fd_hold: Vec<TcpStream> = Vec::new();
    let fresh = std::fs::read(&p.ow_fresh).expect("ow webroot");
    while !w.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        tick += 1;
        if tick.is_multiple_of(2) {
            point(&p.vhosts, "swap.test", &p.swap[(tick / 2 % 2) as usize]);
            w.faults.count("webroot swapped");
        }
        if tick % 40 == 10 {
            std::fs::write(p.vhosts.join("bad.test"), pattern(tick as u32, 70_000))
                .expect("corrupt webroot");
            w.faults.count("corrupt webroot dropped in");
        }
        if tick % 40 == 20 {
            let _ = std::fs::remove_file(p.vhosts.join("bad.test"));
        }
        if tick % 60 == 30 {
            // In place: the same inode, written from the start.
            w.faults.open(&w.faults.ow_until, 10_000);
            let t = Instant::now();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p.ow)
                .expect("open ow");
            f.write_all(&fresh).expect("overwrite");
            drop(f);
            w.faults
                .ow_until
                .store(w.faults.now() + 1000, Ordering::SeqCst);
            let waited = t.elapsed();
            if waited > Duration::from_secs(5) {
                w.tally.wrong(
                    "faults",
                    format!("the in-place writer waited {waited:?} for httpd's lease"),
                );
            }
            w.faults.count("webroot overwritten in place");
        }
        if tick % 100 == 50 {
            w.faults.open(&w.faults.upstream_until, 3000);
            let mut a = lock(app);
            if let Some(old) = a.take() {
                let addr = old.kill();
                std::thread::sleep(Duration::from_millis(500));
                *a = Some(App::start(Some(addr)));
            }
            w.faults.open(&w.faults.upstream_until, 2000);
            w.faults.count("upstream killed and restarted");
        }
        if tick % 50 == 25 {
            // SAFETY: kill(2) on the pid of the httpd this program started.
            unsafe {
                libc::kill(httpd_pid as i32, libc::SIGHUP);
            }
            w.faults.count("SIGHUP");
        }
        if tick % 70 == 35 {
            let ok = Command::new(bin("httpd"))
                .args(["ctl", "--control"])
                .arg(&p.control)
                .arg("rotate")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                w.faults.count("log rotation");
            } else {
                w.tally.wrong("faults", "ctl rotate failed".into());
            }
        }
        if tick % 150 == 100 {
            // Idle connections until httpd's descriptors run out, held 2 s.
            w.faults.open(&w.faults.fd_until, 6000);
            while fd_hold.len() < NOFILE as usize + 64 {
                match TcpStream::connect_timeout(&w.addr, Duration::from_millis(200)) {
                    Ok(s) => fd_hold.push(s),
                    Err(_) => break,
                }
            }
            w.faults.count("fd limit reached");
        }
        if tick % 150 == 120 {
            fd_hold.clear();
            w.faults.open(&w.faults.fd_until, 2000);
        }
    }
}

struct PhaseResult {
    lines: Vec<String>,
    ok: bool,
}

fn phase(
    seconds: u64,
    ebpf: &str,
    sites: &BTreeMap<&'static str, Arc<Site>>,
    p: &Paths,
    root: &Path,
) -> PhaseResult {
    let logs = root.join(format!("logs-{ebpf}"));
    let app = Mutex::new(Some(App::start(None)));
    let upstream = lock(&app).as_ref().expect("app").addr;
    let server = start_httpd(&p.vhosts, &logs, &p.control, upstream, ebpf);
    let pid = server.child.id();
    let w = World {
        addr: server.addr,
        sites: sites.clone(),
        tally: Tally::default(),
        faults: Faults::default(),
        stop: AtomicBool::new(false),
    };
    // Warm-up: every file once and a few forwarded requests, then the baseline.
    for (host, site) in sites {
        for (path, data) in &site.files {
            let r = tests::request(
                w.addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            );
            assert!(r.status == 200 && r.body == **data, "warm-up {host}{path}");
        }
    }
    for _ in 0..8 {
        tests::request(
            w.addr,
            "GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let (fd0, rss0) = (fds(pid), proc_status(pid, "VmRSS:"));
    let ebpf_line = lock(&server.log)
        .iter()
        .find(|l| l.contains("eBPF") || l.contains("ebpf"))
        .cloned()
        .unwrap_or_default();
    *lock(&w.faults.start) = Some(Instant::now());
    let t0 = Instant::now();
    // SOAK_KINDS=static,forward,...: only these load kinds (to chase a failure).
    let only = std::env::var("SOAK_KINDS").ok();
    let on = |k: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == k));
    std::thread::scope(|s| {
        let w = &w;
        if on("static") {
            for i in 0..4 {
                s.spawn(move || static_keepalive(w, 11 + i));
            }
        }
        if on("forward") {
            for i in 0..2 {
                s.spawn(move || forward(w, 101 + i));
            }
        }
        let kinds: [(&str, LoadFn); 8] = [
            ("range", ranges_and_conditionals),
            ("pipelined", pipelined),
            ("websocket", websocket),
            ("http10", http10),
            ("slow-reader", slow_reader),
            ("slowloris", |w, _| slowloris(w)),
            ("malformed", malformed),
            ("reset", reset_mid_body),
        ];
        for (i, (k, f)) in kinds.into_iter().enumerate() {
            if on(k) {
                s.spawn(move || f(w, 7 + i as u64));
            }
        }
        let app = &app;
        s.spawn(move || fault_loop(w, p, pid, app));
        s.spawn(move || {
            while t0.elapsed() < Duration::from_secs(seconds) {
                std::thread::sleep(Duration::from_millis(100));
            }
            w.stop.store(true, Ordering::Relaxed);
        });
    });
    let ran = t0.elapsed().as_secs_f64();
    // Back to idle: fds and RSS against the baseline (pooled upstream connections may take a
    // few seconds to be closed).
    let mut fd1 = fds(pid);
    let t = Instant::now();
    while fd1 > fd0 + 4 && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        fd1 = fds(pid);
    }
    let rss1 = proc_status(pid, "VmRSS:");
    let status = Command::new(bin("httpd"))
        .args(["ctl", "--json", "--control"])
        .arg(&p.control)
        .arg("status")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let host_requests: u64 = ["a.test", "b.test", "swap.test", "ow.test"]
        .iter()
        .map(|h| host_requests(&status, h))
        .sum();
    // SAFETY: kill(2) on the pid of the httpd this program started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let mut child = server.child;
    let exit = child.wait().expect("wait httpd");
    drop(app);
    let log_lines: u64 = std::fs::read_dir(&logs)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(".access.log"))
                .map(|e| {
                    std::fs::read(e.path())
                        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
                })
                .sum()
        })
        .unwrap_or(0);

    let counts = lock(&w.tally.counts).clone();
    let total: u64 = counts.values().sum();
    let wrong: u64 = counts
        .iter()
        .filter(|((_, o), _)| *o == Outcome::Wrong)
        .map(|(_, n)| n)
        .sum();
    let panicked = lock(&server.log)
        .iter()
        .any(|l| l.contains("panicked") || l.contains("abort"));
    let mut lines = vec![
        format!("### Phase `--ebpf {ebpf}`: {ran:.0} s"),
        String::new(),
        format!("eBPF: {}", ebpf_line.trim()),
        String::new(),
        "| kind | ok | clean error | cut inside a fault window | expected end | wrong |".into(),
        "|---|---:|---:|---:|---:|---:|".into(),
    ];
    let mut kinds: Vec<&str> = counts.keys().map(|(k, _)| *k).collect();
    kinds.dedup();
    for k in kinds {
        let c = |f: &dyn Fn(&Outcome) -> bool| -> u64 {
            counts
                .iter()
                .filter(|((kk, o), _)| *kk == k && f(o))
                .map(|(_, n)| n)
                .sum()
        };
        lines.push(format!(
            "| {k} | {} | {} | {} | {} | {} |",
            c(&|o| *o == Outcome::Ok),
            c(&|o| matches!(o, Outcome::Clean(_))),
            c(&|o| *o == Outcome::CutInFault),
            c(&|o| *o == Outcome::Expected),
            c(&|o| *o == Outcome::Wrong)
        ));
    }
    let faults = lock(&w.faults.counts)
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fd_ok = fd1 <= fd0 + 4;
    let rss_ok = rss1 <= rss0 + 64 * 1024;
    let log_ok = log_lines == host_requests && host_requests > 0;
    lines.extend([
        String::new(),
        format!("Requests and connections: {total} in {ran:.0} s; wrong: {wrong}."),
        format!("Faults: {faults}."),
        format!(
            "Open fds: {fd0} before the load, {fd1} after ({})",
            if fd_ok { "ok" } else { "LEAK" }
        ),
        format!(
            "RSS: {} KiB before, {} KiB after ({})",
            rss0,
            rss1,
            if rss_ok { "ok" } else { "GREW" }
        ),
        format!(
            "Access-log lines {log_lines}, requests the hosts answered {host_requests} ({})",
            if log_ok { "equal" } else { "DIFFER" }
        ),
        format!(
            "httpd: {}, exit {:?}",
            if panicked { "PANICKED" } else { "no panic" },
            exit.code()
        ),
    ]);
    let wrongs = lock(&w.tally.wrong).clone();
    for x in &wrongs {
        lines.push(format!("wrong: {x}"));
    }
    let _ = std::fs::remove_file(p.vhosts.join("bad.test"));
    let ok = wrong == 0 && fd_ok && rss_ok && log_ok && !panicked && exit.success();
    if !ok {
        for l in lock(&server.log).iter().rev().take(30).rev() {
            lines.push(format!("[httpd] {l}"));
        }
    }
    PhaseResult { lines, ok }
}

/// Raises this process's RLIMIT_NOFILE to `want` (root may raise the hard limit); returns
/// what it got.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let up = libc::rlimit {
            rlim_cur: want.max(lim.rlim_cur),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
            return up.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// `open_connections` of `ctl status --json`.
fn open_connections(control: &Path) -> u64 {
    let out = Command::new(bin("httpd"))
        .args(["ctl", "--json", "--control"])
        .arg(control)
        .arg("status")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split("\"open_connections\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0)
}

/// One request on a fresh connection: how long until the answer (None: no correct answer).
fn prompt(addr: SocketAddr, body: &[u8]) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /d1/f1.bin HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let r = read_response(&mut BufReader::new(s), false).ok()?;
    (r.status == 200 && r.body == body).then(|| t.elapsed())
}

/// Limits people rely on: N idle keep-alive connections, then N slowloris connections, other
/// clients still answered; memory per idle connection; `--max-connections` refusing cleanly.
fn limits(sites: &BTreeMap<&'static str, Arc<Site>>, p: &Paths, root: &Path) -> PhaseResult {
    // httpd keeps two descriptors per connection (the client's and an upstream's) and some
    // for itself: the connections it can hold are (RLIMIT_NOFILE - 128) / 2.
    const WANT: usize = 10_000;
    let got = raise_nofile(4 * WANT as u64 + 1_000);
    let n = WANT.min((got.saturating_sub(1_000) / 4) as usize);
    let max_conns = 2 * n + 100;
    let app = App::start(None);
    let server = start_httpd_with(
        &p.vhosts,
        &root.join("logs-limits"),
        &p.control,
        app.addr,
        "off",
        got,
        &[
            "--header-timeout",
            "120s",
            "--max-connections",
            &max_conns.to_string(),
        ],
    );
    let pid = server.child.id();
    let addr = server.addr;
    let body = sites["a.test"]
        .files
        .iter()
        .find(|(p, _)| p == "/d1/f1.bin")
        .map(|(_, d)| d.clone())
        .expect("d1/f1.bin");
    let mut ok = true;
    let mut lines = vec![
        format!(
            "### Limits: {n} idle keep-alive connections, then {n} slowloris, `--max-connections {max_conns}` (RLIMIT_NOFILE {got}{})",
            if n < WANT {
                ", the most this machine allows without CAP_SYS_RESOURCE"
            } else {
                ""
            }
        ),
        String::new(),
    ];
    let base = prompt(addr, &body);
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = proc_status(pid, "VmRSS:");
    // Idle keep-alive: one small request each, then nothing.
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(b"GET /d0/f9.bin HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let mut r = BufReader::new(s);
        if read_response(&mut r, false).is_ok_and(|x| x.status == 200) {
            idle.push(r);
        } else {
            lines.push(format!("idle connection {i}: no answer"));
            ok = false;
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(1000));
    let rss1 = proc_status(pid, "VmRSS:");
    let open_idle = open_connections(&p.control);
    let during_idle = prompt(addr, &body);
    let per_idle = (rss1.saturating_sub(rss0) * 1024) / idle.len().max(1) as u64;
    // Slowloris: a head that never ends.
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ");
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss2 = proc_status(pid, "VmRSS:");
    let open_slow = open_connections(&p.control);
    let during_slow = prompt(addr, &body);
    let per_slow = (rss2.saturating_sub(rss1) * 1024) / slow.len().max(1) as u64;
    // Above --max-connections: refused at accept (closed), never left hanging.
    let open = idle.len() + slow.len();
    let mut extra = Vec::new();
    for _ in 0..(max_conns + 200).saturating_sub(open) {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(b"GET /d0/f9.bin HTTP/1.1\r\nHost: a.test\r\n\r\n");
                extra.push(s);
            }
            Err(_) => break,
        }
    }
    let (mut answered, mut refused, mut hung) = (0, 0, 0);
    for s in &mut extra {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(1) => answered += 1,
            Ok(_) => refused += 1,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                hung += 1
            }
            Err(_) => refused += 1,
        }
    }
    drop(extra);
    drop(slow);
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    let after = prompt(addr, &body);
    let ms = |d: Option<Duration>| {
        d.map_or("no answer".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    let each_ok = during_idle.is_some() && during_slow.is_some() && after.is_some();
    let refuse_ok = hung == 0 && answered <= max_conns.saturating_sub(open) + 8 && refused > 0;
    ok &= each_ok && refuse_ok;
    lines.extend([
        format!(
            "A fresh client's request (connect to last byte): {} alone, {} with {} idle, {} with {} idle and {} slowloris, {} after they closed.",
            ms(base),
            ms(during_idle),
            n,
            ms(during_slow),
            n,
            n,
            ms(after)
        ),
        format!("httpd's open connections: {open_idle} with the idle ones, {open_slow} with the slowloris too."),
        format!(
            "httpd's RSS: {rss0} KiB, {rss1} KiB with the idle connections ({per_idle} bytes each), {rss2} KiB with the slowloris too ({per_slow} bytes each)."
        ),
        format!(
            "Beyond --max-connections: {} more connections: {refused} closed at once, {answered} answered, {hung} left hanging ({}).",
            answered + refused + hung,
            if refuse_ok { "ok" } else { "WRONG" }
        ),
    ]);
    if !ok {
        for l in lock(&server.log).iter().rev().take(20).rev() {
            lines.push(format!("[httpd] {l}"));
        }
    }
    // SAFETY: kill(2) on the pid of the httpd this program started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let mut child = server.child;
    let _ = child.wait();
    drop(app);
    PhaseResult { lines, ok }
}

/// The per-host `requests` of `ctl status --json`.
fn host_requests(json: &str, host: &str) -> u64 {
    let key = format!("\"name\":\"{host}\"");
    json.find(&key)
        .and_then(|i| {
            let rest = &json[i..];
            let j = rest.find("\"requests\":")? + 11;
            let digits: String = rest[j..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(120);
    if std::env::var_os("HTTPD_BIN_DIR").is_none() {
        eprintln!(
            "soak: set HTTPD_BIN_DIR to the directory of httpd, mkroot and app (cargo xtask soak does)"
        );
        std::process::exit(2);
    }
    // The fd fault holds more connections than httpd may open: this process needs room.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let report = arg("--report").map(PathBuf::from);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let mut sites = BTreeMap::new();
    let src = |n: &str| root.join(format!("src-{n}"));
    let wr = |n: &str| root.join(format!("{n}.webroot"));
    for (i, host) in ["a.test", "b.test", "swap.test", "ow.test"]
        .iter()
        .enumerate()
    {
        let site = make_site(&src(host), i as u32 + 1);
        mkroot(&src(host), &wr(host), &[]);
        sites.insert(*host, Arc::new(site));
    }
    let swap2 = root.join("swap2.webroot");
    mkroot(&src("swap.test"), &swap2, &[]);
    let ow_fresh = root.join("ow-fresh.webroot");
    mkroot(&src("ow.test"), &ow_fresh, &[]);
    let vhosts = root.join("vhosts");
    std::fs::create_dir_all(&vhosts).expect("vhosts");
    for host in ["a.test", "b.test"] {
        point(&vhosts, host, &wr(host));
    }
    point(&vhosts, "swap.test", &wr("swap.test"));
    // ow.test is a plain file (written in place), not a symlink.
    std::fs::copy(wr("ow.test"), vhosts.join("ow.test")).expect("ow.test");
    let p = Paths {
        swap: [wr("swap.test"), swap2],
        ow: vhosts.join("ow.test"),
        ow_fresh,
        control: root.join("control.sock"),
        vhosts,
    };
    let mut out = vec![format!(
        "Soak: `cargo xtask soak --seconds {seconds}`, two phases of {} s; httpd --workers 2, RLIMIT_NOFILE {NOFILE}, --header-timeout 3s; 4 hosts of 40 files (100 B to 3 MiB).",
        seconds / 2
    )];
    let mut ok = true;
    for ebpf in ["off", "auto"] {
        let r = phase(seconds / 2, ebpf, &sites, &p, root);
        ok &= r.ok;
        out.push(String::new());
        out.extend(r.lines);
    }
    let r = limits(&sites, &p, root);
    ok &= r.ok;
    out.push(String::new());
    out.extend(r.lines);
    let text = out.join("\n") + "\n";
    print!("{text}");
    if let Some(path) = report {
        std::fs::write(path, &text).expect("report");
    }
    if !ok {
        eprintln!("soak: an invariant failed");
        std::process::exit(1);
    }
}
