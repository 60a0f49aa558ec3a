//! Helpers for the end-to-end tests: find the release binaries, build webroots with mkroot,
//! start httpd on 127.0.0.1 (ended by PID on drop), talk to it with curl or raw sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod tls;
pub use tls::{Stream, TestCa, tls_mode};

/// Path of a workspace binary. `cargo xtask test` builds them (release) before the tests run.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HTTPD_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo xtask test` (or `cargo build --release --workspace` first)",
        p.display()
    );
    p
}

/// Runs mkroot SRC OUT with extra args; panics with its stderr on failure.
pub fn mkroot(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = Command::new(bin("mkroot"))
        .args(extra)
        .arg(src)
        .arg(out)
        .output()
        .expect("run mkroot");
    assert!(
        o.status.success(),
        "mkroot failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `len` bytes of xorshift noise from `seed`: incompressible (mkroot keeps no variant), and two
/// seeds give different bytes, so a test can tell which version of a file it got.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Writes `files` (relative path, content) under `dir`.
/// A vhosts directory under `dir` with `__default__` and `two.test`, both serving
/// `index.html` ("home") and `a.txt` ("aaa").
pub fn two_hosts(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    write_tree(&src, &[("index.html", b"home"), ("a.txt", b"aaa")]);
    let v = dir.join("vhosts");
    std::fs::create_dir(&v).expect("vhosts dir");
    mkroot(&src, &v.join("__default__"), &[]);
    std::fs::copy(v.join("__default__"), v.join("two.test")).expect("copy webroot");
    v
}

pub fn write_tree(dir: &Path, files: &[(&str, &[u8])]) {
    for (p, c) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, c).expect("write");
    }
}

/// A running httpd, killed by PID when dropped.
pub struct Httpd {
    child: Child,
    /// Where the suites talk to it: the HTTPS listener in the HTTPS mode, else the first plain
    /// one.
    pub addr: SocketAddr,
    /// The first plain listener.
    pub plain: SocketAddr,
    /// Every listener, in the order of its log lines, with whether it is TLS.
    pub listeners: Vec<(SocketAddr, bool)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Httpd {
    /// Starts httpd on 127.0.0.1 (a free port) over `vhosts` with extra arguments.
    pub fn start(vhosts: &Path, extra: &[&str]) -> Httpd {
        Httpd::start_env(vhosts, extra, &[])
    }

    /// [`Httpd::start`] with extra environment variables.
    pub fn start_env(vhosts: &Path, extra: &[&str], env: &[(&str, &str)]) -> Httpd {
        Httpd::start_bin("httpd", vhosts, extra, env)
    }

    /// [`Httpd::start_env`] with another binary of the target directory (`httpd-failpoints`).
    pub fn start_bin(name: &str, vhosts: &Path, extra: &[&str], env: &[(&str, &str)]) -> Httpd {
        let mut cmd = Command::new(bin(name));
        cmd.envs(env.iter().copied());
        cmd.args(["--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--ebpf") {
            // HTTPD_TEST_EBPF=on runs the functional suites again with the fast path.
            let mode = std::env::var("HTTPD_TEST_EBPF").unwrap_or_else(|_| "off".into());
            cmd.args(["--ebpf", &mode]);
            // HTTPD_TEST_SPLICE=on: and with tunnels spliced in the kernel.
            if let Ok(splice) = std::env::var("HTTPD_TEST_SPLICE")
                && !extra.contains(&"--ebpf-splice")
            {
                cmd.args(["--ebpf-splice", &splice]);
            }
        }
        if !extra.contains(&"--workers") {
            cmd.args(["--workers", "2"]);
        }
        // HTTPD_TEST_TLS=1: the suites again over HTTPS (a TLS listener, the suite CA's
        // certificates).
        let tls_suite = tls_mode() && !extra.contains(&"--listen-tls");
        if tls_suite {
            cmd.args(["--listen-tls", "127.0.0.1:0", "--tls-certs"]);
            cmd.arg(&tls::suite_ca().dir);
        }
        cmd.args(extra);
        // An empty path: the vhosts directory comes from --config.
        if !vhosts.as_os_str().is_empty() {
            cmd.arg(vhosts);
        }
        // HTTPD_TEST_LOG=debug: httpd's own diagnostics in the test output.
        let level = std::env::var("HTTPD_TEST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("NO_COLOR", "1")
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The partial-I/O run: every socket read and write of httpd cut to a few bytes.
        let mark = tempfile::NamedTempFile::new().expect("mark file");
        if let Some(shim) = std::env::var_os("HTTPD_TEST_PRELOAD") {
            cmd.env("LD_PRELOAD", shim)
                .env("PARTIAL_IO_MARK", mark.path());
        }
        let mut child = cmd.spawn().expect("start httpd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on ") {
                    let rest = &line[i + "listening on ".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((addr, rest.contains("(TLS)")));
                }
                eprintln!("[httpd] {line}");
                log2.lock().expect("log").push(line);
            }
        });
        let mut listeners: Vec<(SocketAddr, bool)> = Vec::new();
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((a, tls)) => listeners.push((a.parse().expect("listen address"), tls)),
            Err(_) => {
                let _ = child.kill();
                panic!("httpd did not start: {:?}", log.lock().expect("log"));
            }
        }
        // The other listeners are logged right after the first.
        while let Ok((a, tls)) = rx.recv_timeout(Duration::from_millis(200)) {
            listeners.push((a.parse().expect("listen address"), tls));
        }
        let plain = listeners.iter().find(|l| !l.1).unwrap_or(&listeners[0]).0;
        let addr = match listeners.iter().find(|l| l.1) {
            Some(l) if tls_suite => l.0,
            _ => plain,
        };
        if partial_io() {
            let pids = std::fs::read_to_string(mark.path()).unwrap_or_default();
            if !pids.lines().any(|l| l.trim() == child.id().to_string()) {
                // Not left running: nothing else would end it.
                let _ = child.kill();
                let _ = child.wait();
                panic!("the partial-I/O shim is not loaded in httpd");
            }
        }
        Httpd {
            child,
            addr,
            plain,
            listeners,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The URL of `path` where the suites talk to it (https in the HTTPS mode).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.addr == self.plain {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// The metrics listener (`--metrics`), from its log line.
    pub fn metrics_addr(&self) -> SocketAddr {
        assert!(
            self.wait_log("metrics on http://", Duration::from_secs(5)),
            "no metrics listener"
        );
        let line = self
            .log()
            .into_iter()
            .find(|l| l.contains("metrics on http://"))
            .expect("metrics line");
        let url = line
            .split("metrics on http://")
            .nth(1)
            .expect("metrics url");
        url.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("metrics address")
    }

    /// The first TLS listener.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.1).map(|l| l.0)
    }

    /// Lines httpd wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, wait for exit; the exit status code and everything httpd logged.
    pub fn stop_and_log(self) -> (Option<i32>, Vec<String>) {
        let log = self.log.clone();
        let code = self.stop();
        // The reader thread sees EOF right after the exit.
        std::thread::sleep(Duration::from_millis(100));
        let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
        (code, lines)
    }

    /// SIGTERM and wait for exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// curl with the given arguments; returns its output (status not checked).
pub fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "20"]);
    if tls_mode() {
        cmd.arg("--cacert").arg(tls::suite_ca().ca_file());
    }
    cmd.args(args).output().expect("run curl")
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `r`. `head_only`: the request was HEAD (no body whatever the
/// headers say).
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| std::io::Error::other(format!("bad header {h:?}")))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 304 || status == 204 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        // De-chunk; trailers are appended to the headers.
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let hex = size.trim_end().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(hex, 16).map_err(std::io::Error::other)?;
            if n == 0 {
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t)?;
                    let t = t.trim_end_matches(['\r', '\n']);
                    if t.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = t.split_once(':') {
                        resp.headers.push((k.to_string(), v.trim().to_string()));
                    }
                }
                return Ok(resp);
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk[..n]);
        }
    }
    if let Some(cl) = resp.header("content-length") {
        let n: usize = cl.parse().map_err(std::io::Error::other)?;
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// A raw client connection.
pub struct Raw {
    pub reader: BufReader<Stream>,
}

impl Raw {
    /// A connection to `addr` (TLS in the HTTPS mode).
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = Stream::connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(10)));
        Raw {
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let s = self.reader.get_mut();
        s.write_all(bytes).expect("send");
        s.flush().expect("send");
    }

    pub fn response(&mut self, head_only: bool) -> Response {
        read_response(&mut self.reader, head_only).expect("read response")
    }

    /// Whether the server closed the connection (EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
            || matches!(self.reader.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }

    /// Sends one request and reads its response.
    pub fn exchange(&mut self, req: &str) -> Response {
        self.send(req.as_bytes());
        self.response(req.starts_with("HEAD "))
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, req: &str) -> Response {
    Raw::connect(addr).exchange(req)
}

/// The four I/O models, for tests that run under each.
pub const IO_MODELS: [&str; 4] = ["async-sendfile", "sendfile", "read", "mmap"];

/// The test app server (`src/bin/app.rs`), killed by PID on drop.
pub struct App {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts the app on a free port, or on `addr` (to restart it where it was).
    pub fn start(addr: Option<SocketAddr>) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("requests.log");
        let listen = addr.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let mut child = Command::new(bin("app"))
            .args(["--listen", &listen, "--log"])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start app");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("app address");
        let addr = line
            .trim()
            .trim_start_matches("listening on ")
            .parse()
            .expect("app addr");
        App {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Request lines the app received so far.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn kill(mut self) -> SocketAddr {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.addr
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of a process in KiB (VmHWM).
pub fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether this run cuts httpd's socket I/O to a few bytes per call (HTTPD_TEST_PRELOAD).
pub fn partial_io() -> bool {
    std::env::var_os("HTTPD_TEST_PRELOAD").is_some()
}

/// A transfer size, smaller in the partial-I/O run (where each call moves a few bytes).
pub fn scaled(full: usize, partial: usize) -> usize {
    if partial_io() { partial } else { full }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Under CI=true, tests that need root and the eBPF object must run, not skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Tunnel sizes the tunnel tests run: 1 KiB to 256 MiB (smaller under the partial-I/O shim).
pub fn tunnel_sizes() -> [usize; 4] {
    [
        1024,
        scaled(1 << 20, 64 << 10),
        scaled(16 << 20, 256 << 10),
        scaled(256 << 20, 512 << 10),
    ]
}

/// A WebSocket-style tunnel through httpd to the test app's `/ws`: `client_closes`, the client
/// sends `payload` bytes, shuts its write side and must get every byte echoed before the
/// close; otherwise (`/ws?send=N`) the app sends N bytes and closes first. Every byte checked.
pub fn tunnel(addr: SocketAddr, path: &str, payload: usize, client_closes: bool) {
    if tls_mode() {
        return tunnel_tls(addr, path, payload, client_closes);
    }
    let (c, head) = open_tunnel(addr, path, Duration::from_secs(30));
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let mut r = &c;
    let data: Vec<u8> = (0..payload).map(|i| (i * 7 % 256) as u8).collect();
    if client_closes {
        let writer = {
            let mut w = c.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                w.write_all(&data).unwrap();
                w.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let mut echoed = Vec::new();
        r.read_to_end(&mut echoed).unwrap();
        writer.join().unwrap();
        assert_eq!(
            echoed.len(),
            data.len(),
            "every byte echoed before the close"
        );
        assert!(echoed == data);
    } else {
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), payload, "every byte before the upstream's close");
        assert!(got == app_sent(payload));
    }
}

/// [`tunnel`] over TLS, in one thread (a TLS stream has one state for both directions): the
/// payload is written a piece at a time between short reads of the echo.
fn tunnel_tls(addr: SocketAddr, path: &str, payload: usize, client_closes: bool) {
    let mut c = Stream::connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(30)));
    let head = upgrade(&mut c, path);
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    if client_closes {
        let data: Vec<u8> = (0..payload).map(|i| (i * 7 % 256) as u8).collect();
        let mut sent = 0;
        c.set_read_timeout(Some(Duration::from_millis(2)));
        while sent < data.len() {
            let n = (data.len() - sent).min(16 * 1024);
            c.write_all(&data[sent..sent + n]).unwrap();
            c.flush().unwrap();
            sent += n;
            match c.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("tunnel read: {e}"),
            }
        }
        c.shutdown_write();
        c.set_read_timeout(Some(Duration::from_secs(30)));
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), data.len(), "every byte echoed before the close");
        assert!(got == data);
    } else {
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), payload, "every byte before the upstream's close");
        assert!(got == app_sent(payload));
    }
}

/// What the test app's `/ws?send=N` sends.
fn app_sent(n: usize) -> Vec<u8> {
    (0..n as u64).map(|i| ((i % 65536) % 253) as u8).collect()
}

/// Sends the upgrade request for `path` and reads the response head byte by byte, so that
/// nothing after it is consumed.
fn upgrade(c: &mut (impl Read + Write), path: &str) -> Vec<u8> {
    c.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    c.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    head
}

/// Asks the test app for an upgrade to `path` (`/ws`: an echo, `/ws?send=N`: N bytes then
/// close): the connection (reads time out after `timeout`) and the response head, read byte
/// by byte so that nothing after it is consumed.
pub fn open_tunnel(addr: SocketAddr, path: &str, timeout: Duration) -> (TcpStream, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(timeout)).unwrap();
    let head = upgrade(&mut c, path);
    (c, head)
}

/// Disk reads of the processes added to it throttled with a cgroup (v1 blkio, mounted here;
/// cgroup v2 `io.max` where its io controller is enabled), for the device holding a file.
/// Removed on drop (its processes go back to the root group first).
pub struct Throttle {
    dir: PathBuf,
    root: PathBuf,
}

impl Throttle {
    /// Reads of the disk under `file` limited to `bps` bytes and `iops` requests per second.
    /// Err says why it cannot be done here (not root, no blkio controller, no block device).
    pub fn new(file: &Path, bps: u64, iops: u64) -> Result<Throttle, String> {
        use std::os::unix::fs::MetadataExt;
        if !is_root() {
            return Err("not root".into());
        }
        let dev = std::fs::metadata(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .dev();
        let (maj, min) = (libc::major(dev), libc::minor(dev));
        // Throttling applies to whole disks: a partition's limit goes on its disk.
        let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
        if !sys.exists() {
            return Err(format!(
                "{} is not on a block device ({maj}:{min})",
                file.display()
            ));
        }
        let disk = if sys.join("partition").exists() {
            std::fs::read_to_string(sys.join("../dev"))
                .map_err(|e| format!("parent of {maj}:{min}: {e}"))?
                .trim()
                .to_string()
        } else {
            format!("{maj}:{min}")
        };
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "httpd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let v1 = PathBuf::from("/sys/fs/cgroup/blkio");
        let v2 = PathBuf::from("/sys/fs/cgroup/unified");
        let (root, limits): (PathBuf, Vec<(&str, String)>) =
            if v1.join("blkio.throttle.read_bps_device").exists() {
                (
                    v1,
                    vec![
                        ("blkio.throttle.read_bps_device", format!("{disk} {bps}")),
                        ("blkio.throttle.read_iops_device", format!("{disk} {iops}")),
                    ],
                )
            } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "io"))
            {
                (
                    v2,
                    vec![("io.max", format!("{disk} rbps={bps} riops={iops}"))],
                )
            } else {
                return Err("neither cgroup v1 blkio nor the cgroup v2 io controller".into());
            };
        let dir = root.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let t = Throttle { dir, root };
        for (f, v) in limits {
            std::fs::write(t.dir.join(f), v).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(t)
    }

    /// Moves a process (all its threads) into the throttled group.
    pub fn add(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("throttle pid {pid}: {e}"));
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs.lines() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), p);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Drops a file's pages from the page cache (it must not be dirty: `sync` after writing),
/// and checks with an RWF_NOWAIT read that its middle page is gone (pages a process has
/// mapped, such as those httpd sent from its mapping, stay).
pub fn drop_cache(file: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    // SAFETY: fdatasync and posix_fadvise on an open fd with integer arguments.
    unsafe {
        libc::fdatasync(f.as_raw_fd());
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    let mut b = [0u8; 1];
    let iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a live local buffer, an open fd.
    let mid = (f.metadata().map_or(0, |m| m.len()) / 2) as libc::off_t;
    let r = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, mid, libc::RWF_NOWAIT) };
    assert!(
        r < 0,
        "{}: still in the page cache after DONTNEED",
        file.display()
    );
}

/// `httpd ctl status --json` through the control socket `control`.
pub fn ctl_json(control: &Path) -> String {
    let out = Command::new(bin("httpd"))
        .args(["ctl", "status", "--json", "--control"])
        .arg(control)
        .output()
        .expect("httpd ctl");
    assert!(out.status.success(), "ctl status: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The integer after `"key":` in `json`, after the first `"within":` when given.
pub fn json_int(json: &str, within: Option<&str>, key: &str) -> i64 {
    let from = within
        .and_then(|w| json.find(&format!("\"{w}\":")))
        .unwrap_or(0);
    let pat = format!("\"{key}\":");
    let at = json[from..]
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + from
        + pat.len();
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} in {json}"))
}
