//! Operating httpd: the control socket and `httpd ctl`, log rotation and reopening under a
//! client loop with no lost line, signals, drain on SIGTERM, metrics, privilege drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tests::{App, Httpd, Raw, bin, is_root, mkroot, request, write_tree};

fn vhosts(dir: &Path) -> PathBuf {
    tests::two_hosts(dir)
}

fn ctl(control: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(bin("httpd"))
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Lines in every file of `dir` whose name starts with `prefix`.
fn lines(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum()
}

/// A client loop on its own thread; returns (stop flag, requests sent, failures, handle).
fn client_loop(
    h: &Httpd,
    path: &'static str,
    want: &'static [u8],
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    std::thread::JoinHandle<u64>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (s2, n2, addr) = (stop.clone(), sent.clone(), h.addr);
    let t = std::thread::spawn(move || {
        let mut failures = 0;
        let mut c = Raw::connect(addr);
        while !s2.load(Ordering::Relaxed) {
            let r = c.exchange(&format!("GET {path} HTTP/1.1\r\nHost: two.test\r\n\r\n"));
            if r.status != 200 || r.body != want {
                failures += 1;
            }
            n2.fetch_add(1, Ordering::Relaxed);
        }
        failures
    });
    (stop, sent, t)
}

#[test]
fn ctl_status_rotate_reopen_lose_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let logs = dir.path().join("logs");
    let control = dir.path().join("ctl.sock");
    let h = Httpd::start(
        &v,
        &[
            "--log-dir",
            logs.to_str().unwrap(),
            "--control",
            control.to_str().unwrap(),
        ],
    );
    assert!(h.wait_log("control socket", Duration::from_secs(5)));
    let mode = std::fs::metadata(&control)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.unwrap(), 0o600);
    let (stop, sent, t) = client_loop(&h, "/a.txt", b"aaa");
    std::thread::sleep(Duration::from_millis(200));
    // rotate: prints the renamed files, which are complete once it returns.
    let (ok, out) = ctl(&control, &["rotate"]);
    assert!(ok, "{out}");
    let rotated: Vec<&str> = out.lines().collect();
    assert!(
        rotated.iter().any(|f| f.contains("two.test.access.log.")),
        "{out}"
    );
    for f in &rotated {
        let text =
            std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f:?}: {e} (ctl said {out:?})"));
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "complete lines only in {f}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    // reopen after an outside tool moved the file (logrotate style), by ctl and by SIGUSR1.
    std::fs::rename(
        logs.join("two.test.access.log"),
        logs.join("two.test.access.log.moved1"),
    )
    .unwrap();
    let (ok, out) = ctl(&control, &["reopen"]);
    assert!(ok && out.contains("reopened"), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::rename(
        logs.join("two.test.access.log"),
        logs.join("two.test.access.log.moved2"),
    )
    .unwrap();
    h.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        logs.join("two.test.access.log").exists(),
        "SIGUSR1 reopened the log"
    );
    // status, text and JSON, while the loop runs.
    let (ok, out) = ctl(&control, &["status"]);
    assert!(
        ok && out.contains("two.test") && out.contains("static hit"),
        "{out}"
    );
    // The flag before the command, and after it as users type it.
    for args in [&["--json", "status"][..], &["status", "--json"]] {
        let (ok, json) = ctl(&control, args);
        assert!(
            ok && json.starts_with('{') && json.contains("\"name\":\"two.test\""),
            "{args:?}: {json}"
        );
    }
    // --control after the command too.
    let o = Command::new(bin("httpd"))
        .args(["ctl", "status", "--json", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && json.starts_with('{'), "{json}");
    let (ok, _) = ctl(&control, &["reload"]);
    assert!(ok);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(t.join().unwrap(), 0, "no failed request");
    let total = sent.load(Ordering::Relaxed) as usize;
    let (code, _) = h.stop_and_log();
    assert_eq!(code, Some(0));
    assert_eq!(
        lines(&logs, "two.test.access.log"),
        total,
        "every request logged exactly once"
    );
    assert!(!control.exists(), "control socket removed at exit");
}

#[test]
fn metrics_match_requests_sent() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let h = Httpd::start(&v, &["--metrics", "127.0.0.1:0"]);
    let url = format!("http://{}/metrics", h.metrics_addr());
    for _ in 0..7 {
        assert_eq!(
            request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n").status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            request(h.addr, "GET /missing HTTP/1.1\r\nHost: two.test\r\n\r\n").status,
            404
        );
    }
    let o = Command::new("curl").args(["-s", &url]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("httpd_requests_total{outcome=\"static_hit\"} 7\n"),
        "{text}"
    );
    assert!(
        text.contains("httpd_errors_total{class=\"4xx\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("httpd_host_requests_total{host=\"two.test\"} 10\n"),
        "{text}"
    );
    assert!(
        text.contains("httpd_host_hits_total{host=\"two.test\"} 7\n"),
        "{text}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let app = App::start(None);
    let up = app.addr.to_string();
    let h = Httpd::start(&v, &["--upstream", &up]);
    let addr = h.addr;
    let slow =
        std::thread::spawn(move || request(addr, "GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(300));
    let (code, log) = h.stop_and_log();
    let r = slow.join().unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"slow"[..]),
        "in-flight request finished"
    );
    assert_eq!(code, Some(0), "{log:?}");
}

#[test]
fn privileges_dropped_to_user() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    // The webroots must stay readable by the new user.
    for p in [dir.path().to_path_buf(), v.clone()] {
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let h = Httpd::start(&v, &["--user", "nobody"]);
    assert!(
        h.wait_log("running as nobody", Duration::from_secs(5)),
        "{:?}",
        h.log()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .to_string()
    };
    assert!(
        field("Uid:")
            .split_whitespace()
            .skip(1)
            .all(|u| u == "65534"),
        "{}",
        field("Uid:")
    );
    assert!(
        field("Gid:")
            .split_whitespace()
            .skip(1)
            .all(|g| g == "65534"),
        "{}",
        field("Gid:")
    );
    // The main thread keeps CAP_LEASE alone (for the vhosts thread it starts, which leases
    // webroots owned by another user); the workers keep nothing.
    const CAP_LEASE: &str = "0000000010000000";
    assert!(
        field("CapEff:").ends_with(CAP_LEASE),
        "{}",
        field("CapEff:")
    );
    assert!(
        field("CapPrm:").ends_with(CAP_LEASE),
        "{}",
        field("CapPrm:")
    );
    let mut workers = 0;
    for t in std::fs::read_dir(format!("/proc/{}/task", h.pid())).unwrap() {
        let t = t.unwrap().path();
        let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let st = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let caps = |k: &str| {
            st.lines()
                .find(|l| l.starts_with(k))
                .unwrap_or("")
                .to_string()
        };
        if name.starts_with("worker") {
            workers += 1;
            assert!(
                caps("CapEff:").ends_with("0000000000000000"),
                "{name}: {}",
                caps("CapEff:")
            );
            assert!(
                caps("CapPrm:").ends_with("0000000000000000"),
                "{name}: {}",
                caps("CapPrm:")
            );
        }
        if name.starts_with("vhosts") {
            assert!(
                caps("CapEff:").ends_with(CAP_LEASE),
                "{name}: {}",
                caps("CapEff:")
            );
        }
    }
    assert!(workers > 0);
    // A root-owned webroot loaded after the drop is leased: written over in place, it is
    // withdrawn before the writer goes on.
    let new = dir.path().join("new.webroot");
    std::fs::copy(v.join("two.test"), &new).unwrap();
    std::fs::rename(&new, v.join("two.test")).unwrap();
    let loads = || {
        h.log()
            .iter()
            .filter(|l| l.contains("vhost two.test: loaded"))
            .count()
    };
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while loads() < 2 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(loads(), 2, "the renamed entry was loaded after the drop");
    std::fs::copy(v.join("__default__"), v.join("two.test")).unwrap();
    assert!(
        h.wait_log(
            "two.test is being written in place (lease broken)",
            Duration::from_secs(5)
        ),
        "{:?}",
        h.log()
    );
    assert!(
        !h.log().iter().any(|l| l.contains("no read lease")),
        "{:?}",
        h.log()
    );
    assert_eq!(
        request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"aaa"
    );
}

#[test]
fn ctl_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _) = ctl(&dir.path().join("nothing.sock"), &["status"]);
    assert!(!ok, "no control socket: ctl fails");
    let o = Command::new(bin("httpd"))
        .args(["ctl", "status", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--control"), "{err}");
}

#[test]
fn json_referer_and_agent_logs() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let logs = dir.path().join("logs");
    let h = Httpd::start(
        &v,
        &[
            "--log-dir",
            logs.to_str().unwrap(),
            "--log-format",
            "json",
            "--log-referer",
            "--log-agent",
        ],
    );
    let long = "x".repeat(5000);
    request(
        h.addr,
        &format!(
            "GET /a.txt?q={long} HTTP/1.1\r\nHost: two.test\r\nReferer: http://r/\"x\r\nUser-Agent: ua/1\r\n\r\n"
        ),
    );
    let (code, _) = h.stop_and_log();
    assert_eq!(code, Some(0));
    let access = std::fs::read_to_string(logs.join("two.test.access.log")).unwrap();
    assert!(access.starts_with("{\"time\":\""), "{access}");
    assert!(
        access.contains(
            "\"status\":200,\"bytes\":3,\"referer\":\"http://r/\\\"x\",\"user_agent\":\"ua/1\",\"tls\":null,\"cipher\":null}"
        ),
        "{access}"
    );
    assert!(access.len() < 1500, "long fields are cut");
    let referer = std::fs::read_to_string(logs.join("two.test.referer.log")).unwrap();
    assert!(
        referer.starts_with("http://r/\\x22x -> /a.txt?q=xxx"),
        "{referer}"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("two.test.agent.log")).unwrap(),
        "ua/1\n"
    );
}

fn check_config(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("httpd.toml");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(bin("httpd"))
        .arg("check-config")
        .arg(&p)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_config_validates_and_prints() {
    let (ok, out, _) = check_config(
        "upstream = \"127.0.0.1:9\"\nupstream_timeout = \"3s\"\nio = \"mmap\"\nebpf_splice = \"on\"\n[hosts.\"a.test\"]\nheaders = { \"X-A\" = \"1\" }\nupstream_prefixes = [\"/api/\"]\n",
    );
    assert!(ok);
    assert!(
        out.contains("upstream = \"127.0.0.1:9\"") && out.contains("upstream_timeout = \"3s\""),
        "{out}"
    );
    assert!(
        out.contains("io = \"mmap\"")
            && out.contains("ebpf_splice = \"on\"")
            && out.contains("[hosts.\"a.test\"]"),
        "{out}"
    );
    let (ok, _, err) = check_config("workers = 2\nwokers = 3\n");
    assert!(!ok);
    assert!(err.contains("line 2") && err.contains("wokers"), "{err}");
    let (ok, _, err) = check_config("ebpf_splice = \"maybe\"\n");
    assert!(!ok && err.contains("ebpf_splice"), "{err}");
    let (ok, _, err) = check_config("upstream_timeout = \"soon\"\n");
    assert!(!ok && err.contains("upstream_timeout"), "{err}");
    let (ok, _, err) = check_config("[hosts.\"a\"]\nheaders = { \"Content-Length\" = \"1\" }\n");
    assert!(!ok && err.contains("managed by httpd"), "{err}");
}

#[test]
fn config_host_settings_flags_win_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let app = App::start(None);
    let cfg = dir.path().join("httpd.toml");
    let control = dir.path().join("ctl.sock");
    let docs_src = dir.path().join("docs-src");
    write_tree(&docs_src, &[("guide.html", b"<p>guide</p>")]);
    let docs = dir.path().join("docs.webroot");
    mkroot(&docs_src, &docs, &[]);
    let write = |headers: &str| {
        std::fs::write(
            &cfg,
            format!(
                "vhosts_dir = {:?}\nupstream_timeout = \"1ms\"\ncontrol = {:?}\n[hosts.\"two.test\"]\nupstream = \"{}\"\nupstream_prefixes = [\"/a.txt\"]\nheaders = {{ {headers} }}\nmounts = {{ \"/docs/\" = {:?} }}\n",
                v.display().to_string(),
                control.display().to_string(),
                app.addr,
                docs.display().to_string(),
            ),
        )
        .unwrap()
    };
    write("\"X-Frame-Options\" = \"DENY\"");
    // The flag wins over the file's 1ms upstream timeout (else every forward would be a 504).
    let h = Httpd::start(
        Path::new(""),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--upstream-timeout",
            "10s",
        ],
    );
    assert!(h.wait_log("control socket", Duration::from_secs(5)));
    // /a.txt is a static file, but the prefix sends it to this host's own upstream.
    let r = request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&r.body).contains("target=/a.txt"),
        "forwarded: {r:?}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    let r = request(h.addr, "GET / HTTP/1.1\r\nHost: two.test\r\n\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("x-frame-options")),
        (&b"home"[..], Some("DENY"))
    );
    // The mount point serves /docs/ from the other webroot.
    let r = request(
        h.addr,
        "GET /docs/guide.html HTTP/1.1\r\nHost: two.test\r\n\r\n",
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<p>guide</p>"[..]));
    // Other hosts: no upstream of their own, none global: a miss is a 404, no extra header.
    let r = request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("x-frame-options")),
        (&b"aaa"[..], None)
    );
    // Reload with a changed header, under a client loop: no failed request.
    let (stop, _sent, t) = client_loop(&h, "/", b"home");
    write("\"X-Frame-Options\" = \"SAMEORIGIN\"");
    let (ok, out) = ctl(&control, &["reload"]);
    assert!(ok && out.contains("host settings"), "{out}");
    let r = request(h.addr, "GET / HTTP/1.1\r\nHost: two.test\r\n\r\n");
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    // A bad file is refused and the running configuration stays; SIGHUP does the same.
    std::fs::write(&cfg, "this is = not toml [").unwrap();
    let (ok, out) = ctl(&control, &["reload"]);
    assert!(!ok && out.contains("refused"), "{out}");
    h.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let r = request(h.addr, "GET / HTTP/1.1\r\nHost: two.test\r\n\r\n");
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(t.join().unwrap(), 0, "no failed request across reloads");
    assert!(
        h.log()
            .iter()
            .any(|l| l.contains("SIGHUP") && l.contains("refused")),
        "{:?}",
        h.log()
    );
}

#[test]
fn systemd_socket_activation_and_ready_notification() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let notify = dir.path().join("notify.sock");
    // A stand-in for systemd: binds the port and the notify socket, execs httpd with the
    // listening socket as fd 3, LISTEN_PID = its own PID (kept across exec).
    let script = r#"
import os, socket, sys
notify_path, httpd, vhosts = sys.argv[1], sys.argv[2], sys.argv[3]
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); n.bind(notify_path)
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(64)
print(l.getsockname()[1], flush=True)
pid = os.fork()
if pid == 0:
    os.dup2(l.fileno(), 3)
    env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", NOTIFY_SOCKET=notify_path)
    os.execve(httpd, [httpd, "--ebpf", "off", "--workers", "2", vhosts], env)
l.close()
n.settimeout(10)
print(n.recv(100).decode(), flush=True)
print(pid, flush=True)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(&notify)
        .arg(bin("httpd"))
        .arg(&v)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY=1", "sd_notify");
    line.clear();
    out.read_line(&mut line).unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    let r = request(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    // SAFETY: kill(2) on the httpd we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = child.wait();
    assert_eq!(r.body, b"aaa", "served on the inherited socket");
}

#[test]
fn preload_faults_webroots_in_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let h = Httpd::start(&v, &["--preload"]);
    assert!(
        h.wait_log("preloaded", Duration::from_secs(5)),
        "{:?}",
        h.log()
    );
    assert_eq!(
        request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"aaa"
    );
}

#[test]
fn exchanges_cut_short_are_still_logged() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let logs = dir.path().join("logs");
    let app = App::start(None);
    let up = app.addr.to_string();
    let h = Httpd::start(
        &v,
        &[
            "--upstream",
            &up,
            "--log-dir",
            logs.to_str().unwrap(),
            "--drain-timeout",
            "300ms",
        ],
    );
    let addr = h.addr;
    let slow = std::thread::spawn(move || {
        let mut c = Raw::connect(addr);
        c.send(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: two.test\r\n\r\n");
        c.closed()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = h.stop_and_log();
    assert_eq!(code, Some(0));
    assert!(
        slow.join().unwrap(),
        "the drain deadline closed the connection"
    );
    let text = std::fs::read_to_string(logs.join("two.test.access.log")).unwrap();
    assert!(
        text.contains("\"GET /slow?ms=3000 HTTP/1.1\" 499 0"),
        "{text}"
    );
}
