//! The eBPF fast path end to end (root): forwarded traffic really goes through sk_msg, other
//! connections on the machine are never touched, tunnels spliced in the kernel lose no byte,
//! and nothing stays attached after httpd exits; the programs' rare events reach httpd's log
//! at debug level.
//! Under CI=true these tests fail instead of skipping when they cannot run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use tests::{
    App, Httpd, Raw, ci, is_root, mkroot, open_tunnel, request, scaled, tunnel, tunnel_sizes,
    write_tree,
};

/// One attached httpd at a time (the programs attach to the cgroup in exclusive mode).
static SERIAL: Mutex<()> = Mutex::new(());

fn runnable() -> bool {
    if is_root() {
        return true;
    }
    assert!(!ci(), "CI=true but the eBPF tests cannot run: not root");
    eprintln!("skipped: not root");
    false
}

fn site() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(&src, &[("index.html", b"static")]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    mkroot(&src, &vhosts.join("__default__"), &[]);
    (dir, vhosts)
}

/// Counters from httpd's last log line about them.
fn counters(log: &[String]) -> std::collections::HashMap<String, u64> {
    let line = log
        .iter()
        .rev()
        .find(|l| l.contains("eBPF fast path counters:"))
        .unwrap_or_else(|| panic!("no counters line in {log:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn start_on(vhosts: &std::path::Path, app: &App, extra: &[&str]) -> Option<Httpd> {
    let up = app.addr.to_string();
    let mut args = vec!["--ebpf", "on", "--upstream", &up];
    args.extend_from_slice(extra);
    let h = Httpd::start(vhosts, &args);
    if h.log().iter().any(|l| l.contains("sk_msg fast path")) {
        return Some(h);
    }
    assert!(
        !ci(),
        "CI=true but the fast path did not load: {:?}",
        h.log()
    );
    None
}

/// What every test here starts with: the serial lock, a site, the app, httpd with the fast path.
struct Fixture {
    h: Httpd,
    app: App,
    _dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Fixture {
    /// None when the test cannot run here (and may skip: not under CI=true).
    fn start() -> Option<Fixture> {
        Fixture::start_with(&[])
    }

    /// The same with extra httpd arguments.
    fn start_with(extra: &[&str]) -> Option<Fixture> {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if !runnable() {
            return None;
        }
        let (dir, vhosts) = site();
        let app = App::start(None);
        let h = start_on(&vhosts, &app, extra)?;
        Some(Fixture {
            h,
            app,
            _dir: dir,
            _serial: serial,
        })
    }
}

#[test]
fn forwarded_traffic_goes_through_sk_msg() {
    // Bound whole: the app, the site and the serial lock live to the end of the test.
    let Some(f) = Fixture::start() else {
        return;
    };
    let h = f.h;
    let mut c = Raw::connect(h.addr);
    let mut body_bytes = 0;
    for i in 0..200 {
        let r = c.exchange(&format!(
            "POST /echo?i={i} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        ));
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).ends_with("body=hello"));
        body_bytes += r.body.len();
        assert_eq!(
            c.exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n").body,
            b"static"
        );
    }
    let r = request(h.addr, "GET /big?bytes=3000000 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.body.len(), 3_000_000);
    let r = request(h.addr, "GET /chunked?n=50 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.body.ends_with(b"chunk-49;"));
    drop(c);
    let (code, log) = h.stop_and_log();
    assert_eq!(code, Some(0));
    let c = counters(&log);
    // Both ends of each upstream connection were inserted, and the exchanges went through
    // sk_msg: at least every response body byte, most of the 3 MB download included.
    assert!(
        c["inserted"] >= 2 && c["inserted"].is_multiple_of(2),
        "{c:?}"
    );
    assert!(c["redirected"] >= 400, "{c:?}");
    assert!(
        c["redirected_bytes"] as usize > body_bytes + 3_000_000,
        "{c:?}"
    );
    assert_eq!(c["insert_failed"], 0, "{c:?}");
    assert_eq!(c["spliced"], 0, "tunnel splice is off by default: {c:?}");
}

/// `/ws?send=N` read only after `pause`.
fn slow_reader(addr: std::net::SocketAddr, n: usize, pause: Duration) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(
        format!(
            "GET /ws?send={n} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(pause);
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    assert!(all.starts_with(b"HTTP/1.1 101"));
    let body = &all[head_end..];
    assert_eq!(body.len(), n, "every byte after the pause");
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, b)| *b == ((i as u64 % 65536) % 253) as u8)
    );
}

#[test]
fn spliced_tunnels_lose_no_byte() {
    let ctl_dir = tempfile::tempdir().unwrap();
    let control = ctl_dir.path().join("ctl");
    let control_arg = control.to_string_lossy().into_owned();
    let Some(f) = Fixture::start_with(&["--ebpf-splice", "on", "--control", &control_arg]) else {
        return;
    };
    let h = f.h;
    assert!(
        h.log().iter().any(|l| l.contains("tunnel splice on")),
        "{:?}",
        h.log()
    );
    let mut tunneled = 0;
    for size in tunnel_sizes() {
        // Echo closed by the client (every byte both ways), then a download closed by the app.
        tunnel(h.addr, "/ws", size, true);
        tunnel(h.addr, &format!("/ws?send={size}"), size, false);
        tunneled += 3 * size;
        // Plain exchanges still take the sk_msg fast path beside the tunnels.
        let r = request(
            h.addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert!(String::from_utf8_lossy(&r.body).ends_with("body=hi"));
    }
    // A reader that pauses: the app's bytes and FIN wait in the kernel's queues; the splice
    // must hold the client's FIN back until the last byte is queued, however long that takes.
    slow_reader(
        h.addr,
        scaled(4 << 20, 256 << 10),
        Duration::from_millis(1500),
    );
    tunneled += scaled(4 << 20, 256 << 10);
    // Many small tunnels at once, closing from both sides.
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let addr = h.addr;
            std::thread::spawn(move || {
                for k in 0..8 {
                    let n = 1 + (i * 977 + k * 131) % 70_000;
                    if (i + k) % 2 == 0 {
                        tunnel(addr, "/ws", n, true);
                    } else {
                        tunnel(addr, &format!("/ws?send={n}"), n, false);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("tunnel thread");
    }
    // 137 tunnels. Those where the app sent everything and closed before httpd's buffers were
    // empty (most small downloads) are finished in user space; the echoes are handed over,
    // now and then only upstream-to-client (the client's FIN arrived during the handover).
    let status = std::process::Command::new(tests::bin("httpd"))
        .args(["ctl", "--control", &control_arg, "status"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let line = status
        .lines()
        .find(|l| l.starts_with("tunnels:"))
        .unwrap_or_else(|| panic!("no tunnels line: {status}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    eprintln!("{line}");
    assert_eq!(n[0], 137, "{line}");
    assert!(n[1] + n[2] >= 40, "{line}");
    let (code, log) = h.stop_and_log();
    assert_eq!(code, Some(0));
    let c = counters(&log);
    // The bytes went through the verdict: all but what arrived with the 101 (the app's first
    // bytes, read with its response head, go through httpd).
    assert!(
        c["spliced_bytes"] as usize >= tunneled * 9 / 10,
        "{tunneled} bytes tunneled: {c:?}"
    );
    assert!(c["redirected"] > 0, "{c:?}");
}

#[test]
fn other_connections_are_never_touched() {
    // Bound whole: the app, the site and the serial lock live to the end of the test.
    let Some(f) = Fixture::start() else {
        return;
    };
    let (h, app) = (f.h, &f.app);
    // Another client of the same app server, and a connection on another port.
    for _ in 0..20 {
        assert_eq!(
            request(app.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
            200
        );
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut b, _) = l.accept().unwrap();
    a.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf).unwrap();
    // Static traffic through httpd needs no upstream connection either.
    assert_eq!(
        request(h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"static"
    );
    let (code, log) = h.stop_and_log();
    assert_eq!(code, Some(0));
    let c = counters(&log);
    assert_eq!(c["inserted"], 0, "{c:?}");
    assert_eq!(c["redirected"], 0, "{c:?}");
}

/// httpd's sock_ops programs attached to the cgroup, as bpftool lists them.
fn attached() -> usize {
    let o = std::process::Command::new("bpftool")
        .args(["cgroup", "show", "/sys/fs/cgroup/unified"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    String::from_utf8_lossy(&o.stdout)
        .matches("httpd_sockops")
        .count()
}

#[test]
fn nothing_stays_attached_after_exit() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !runnable() {
        return;
    }
    let (_d, vhosts) = site();
    let app = App::start(None);
    let before = attached();
    // A normal exit, then SIGKILL: bpftool lists what is attached to the cgroup.
    let Some(h) = start_on(&vhosts, &app, &[]) else {
        return;
    };
    assert_eq!(
        attached(),
        before + 1,
        "the live httpd's program is attached"
    );
    assert_eq!(h.stop(), Some(0));
    assert_eq!(
        attached(),
        before,
        "a program stayed attached after a normal exit"
    );
    let Some(h) = start_on(&vhosts, &app, &["--ebpf-splice", "on"]) else {
        return;
    };
    assert_eq!(attached(), before + 1);
    h.signal(libc::SIGKILL);
    let pid = h.pid();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    // Wait until the process is gone (a zombie holds no fds).
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        && std::time::Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(h);
    // Link release after the last fd closes can lag a moment.
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while attached() != before && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        attached(),
        before,
        "a program stayed attached after SIGKILL"
    );
}

#[test]
fn spliced_tunnel_whose_reader_stops_is_closed() {
    let Some(f) = Fixture::start_with(&["--ebpf-splice", "on", "--inactivity-timeout", "1s"])
    else {
        return;
    };
    let (mut c, head) = open_tunnel(f.h.addr, "/ws", Duration::from_secs(20));
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Spliced now. Send up to 8 GiB to the echo and read nothing. Redirected segments are
    // charged to no socket (no backpressure), so unchecked the kernel would queue the whole
    // echo: httpd closes the tunnel once over 64 MiB were held in the kernel for a second.
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..8192 {
            if w.write_all(&chunk).is_err() {
                return false;
            }
        }
        true
    });
    std::thread::sleep(Duration::from_secs(4));
    let mut got = Vec::new();
    let end = c.read_to_end(&mut got);
    assert!(
        end.is_err() || got.len() < 8 << 30,
        "a stalled tunnel was kept open: {} bytes echoed",
        got.len()
    );
    assert!(
        !writer.join().unwrap(),
        "the writer got through a closed tunnel"
    );
    assert!(
        f.h.log().iter().any(|l| l.contains("held in the kernel")),
        "{:?}",
        f.h.log()
    );
}

/// httpd at `--log-level debug`. `Httpd::start` sets RUST_LOG=info, which wins over
/// `--log-level`: this one runs without RUST_LOG. Killed by PID on drop.
struct DebugHttpd {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: std::sync::Arc<Mutex<Vec<String>>>,
}

impl DebugHttpd {
    /// None when httpd did not start (its log lines are then in the panic or skip message).
    fn start(vhosts: &std::path::Path, args: &[&str]) -> Result<DebugHttpd, Vec<String>> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(tests::bin("httpd"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--log-level",
                "debug",
            ])
            .args(args)
            .arg(vhosts)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start httpd");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("listening on ") {
                    let rest = &line[i + "listening on ".len()..];
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                eprintln!("[httpd] {line}");
                log2.lock().expect("log").push(line);
            }
        });
        let mut h = DebugHttpd {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => {
                h.addr = a.parse().expect("listen address");
                Ok(h)
            }
            // Exited (eBPF could not load with --ebpf on) or hung: the caller decides.
            Err(_) => {
                let _ = h.child.kill();
                let _ = h.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(h.log())
            }
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, wait for exit: the exit code and every line logged.
    fn stop_and_log(mut self) -> (Option<i32>, Vec<String>) {
        // SAFETY: kill(2) on the PID of our own child, not yet waited for.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = std::time::Instant::now() + Duration::from_secs(15);
        let mut code = None;
        while std::time::Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                code = st.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread sees EOF right after the exit.
        std::thread::sleep(Duration::from_millis(100));
        (code, self.log())
    }
}

impl Drop for DebugHttpd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn rare_events_reach_the_debug_log() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !runnable() {
        return;
    }
    let (_dir, vhosts) = site();
    // The test is the upstream: it holds the upstream end of httpd's fast-path connection.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap().to_string();
    // The splice on too: at debug level all three programs load with their log calls live
    // (at other levels the verifier drops them as dead code).
    let args = [
        "--ebpf",
        "on",
        "--ebpf-splice",
        "on",
        "--upstream",
        &up_addr,
        "--upstream-timeout",
        "1s",
    ];
    let h = match DebugHttpd::start(&vhosts, &args) {
        Ok(h) if h.log().iter().any(|l| l.contains("tunnel splice on")) => h,
        Ok(h) => {
            assert!(
                !ci(),
                "CI=true but the fast path did not load: {:?}",
                h.log()
            );
            return;
        }
        Err(log) => {
            assert!(!ci(), "CI=true but httpd did not start: {log:?}");
            eprintln!("skipped: httpd with --ebpf on did not start");
            return;
        }
    };
    // A request the upstream does not answer in time: httpd answers 504 and closes its end of
    // the upstream connection, which leaves the SOCKHASH with it.
    let client = std::thread::spawn({
        let addr = h.addr;
        move || request(addr, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n").status
    });
    let (mut s, from) = up.accept().unwrap();
    assert_eq!(
        from.ip(),
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        "fast-path source"
    );
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "request head: {:?}", String::from_utf8_lossy(&req));
        req.extend_from_slice(&buf[..n]);
    }
    assert_eq!(client.join().unwrap(), 504);
    // httpd's end is closed (its FIN arrived): the late answer finds no peer in the map and
    // sk_msg lets it take the normal path.
    while s.read(&mut buf).unwrap() > 0 {}
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        .unwrap();
    let needle = format!("sk_msg: no peer {from} in SOCKS");
    assert!(
        h.wait_log(&needle, Duration::from_secs(5)),
        "no {needle:?} in {:?}",
        h.log()
    );
    let line = h
        .log()
        .into_iter()
        .find(|l| l.contains(&needle))
        .unwrap_or_default();
    assert!(
        line.contains("DEBUG") && line.contains("httpd_ebpf"),
        "level and target: {line}"
    );
    drop(s);
    let (code, log) = h.stop_and_log();
    assert_eq!(code, Some(0));
    let c = counters(&log);
    assert!(c["passed"] >= 1, "{c:?}");
    assert_eq!(c["insert_failed"], 0, "{c:?}");
    // The success path logs nothing: the request itself was redirected, silently.
    assert!(c["redirected"] >= 1, "{c:?}");
    let ebpf_lines = log.iter().filter(|l| l.contains("httpd_ebpf")).count();
    assert!(
        ebpf_lines as u64 <= c["passed"] + c["insert_failed"],
        "{ebpf_lines} eBPF log lines for {c:?}"
    );
}

/// Many 16 MiB echoes through spliced tunnels, one at a time (`SPLICE_STRESS_N`, default 300;
/// `SPLICE_STRESS_SIZE`). A kernel defect (6.18 here) now and then delivers a segment twice: a
/// retransmitted segment that partly overlaps bytes already received is handed to the verdict
/// whole (ARCHITECTURE.md, "The tunnel splice"); loopback reorders now and then, so it shows
/// (0 in 9,300 echoes here as httpd hands over; 1 in 300-1,100 with the handover 300 us later).
/// What httpd promises is that it never passes for a clean echo: every echo comes back exact,
/// or ends in a reset that an error line in httpd's log names, one line per reset.
#[test]
fn spliced_echoes_are_exact_or_reset() {
    let Some(f) = Fixture::start_with(&["--ebpf-splice", "on"]) else {
        return;
    };
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, size) = (
        env("SPLICE_STRESS_N", 300),
        env("SPLICE_STRESS_SIZE", 16 << 20),
    );
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
    let mut resets = 0;
    for i in 0..n {
        let (mut c, head) = open_tunnel(f.h.addr, "/ws", Duration::from_secs(30));
        assert!(head.starts_with(b"HTTP/1.1 101"), "echo {i}");
        let writer = {
            let mut w = c.try_clone().unwrap();
            let data = data.clone();
            // A reset ends the writer's sending early: that is the reset being seen.
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
                let _ = w.shutdown(std::net::Shutdown::Write);
            })
        };
        let mut echoed = Vec::new();
        match c.read_to_end(&mut echoed) {
            Ok(_) => assert!(
                echoed == data,
                "echo {i} of {n} closed cleanly with {} bytes for {size}",
                echoed.len()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => resets += 1,
            Err(e) => panic!("echo {i} of {n}: {e}"),
        }
        writer.join().unwrap();
    }
    let Fixture { h, .. } = f;
    let (code, log) = h.stop_and_log();
    assert_eq!(code, Some(0));
    let named = log.iter().filter(|l| l.contains("went out twice")).count();
    eprintln!("{n} echoes of {size} bytes: {resets} reset for doubled bytes");
    assert_eq!(named, resets, "resets and error lines: {log:?}");
}
