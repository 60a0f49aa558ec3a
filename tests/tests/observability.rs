//! The control plane: the metrics exposition checked by promtool (Prometheus text), by a
//! strict OpenMetrics parser and by a real Prometheus scraping it, scrapers served while others stall, 404/405, /livez and /readyz
//! through a SIGTERM, the systemd watchdog against a wedged worker, histogram counts against
//! request counts after a load, `httpd ctl top`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{App, Httpd, bin, ci, request};

fn vhosts(dir: &Path) -> PathBuf {
    tests::two_hosts(dir)
}

/// httpd with a metrics listener in front of the test app, with `extra` arguments: its
/// directory, the app, httpd and the metrics address.
fn before_app(extra: &[&str]) -> (tempfile::TempDir, App, Httpd, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let app = App::start(None);
    let up = app.addr.to_string();
    let mut args = vec!["--metrics", "127.0.0.1:0", "--upstream", &up];
    args.extend_from_slice(extra);
    let h = Httpd::start(&v, &args);
    let m = h.metrics_addr();
    (dir, app, h, m)
}

/// One request on a fresh connection to the metrics listener: (status, head, body).
fn get(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: m\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|r| r.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn promtool(text: &str) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs the prometheus package)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success() && said.trim().is_empty(), said)
}

/// The OpenMetrics text through the prometheus_client Python library's OpenMetrics parser,
/// which refuses what the format does not allow (no `# EOF`, a counter sample without
/// `_total`, a unit its name does not end with, buckets out of order, +Inf not the count).
fn openmetrics_parse(text: &str) -> (bool, String) {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
n = 0
for f in text_string_to_metric_families(sys.stdin.read()):
    n += len(f.samples)
print(n)
"#;
    // Debian's python, with Debian's python3-prometheus-client (`cargo xtask setup`).
    let mut c = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Some of every kind of request: static hits, a 304, a 404, forwarded ones, a 502.
fn mixed_requests(h: &Httpd) {
    for _ in 0..5 {
        assert_eq!(
            request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n").status,
            200
        );
    }
    let etag = request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n")
        .header("etag")
        .unwrap()
        .to_string();
    let r = request(
        h.addr,
        &format!("GET /a.txt HTTP/1.1\r\nHost: two.test\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    assert_eq!(r.status, 304);
    for _ in 0..3 {
        assert_eq!(
            request(h.addr, "GET /app/x HTTP/1.1\r\nHost: two.test\r\n\r\n").status,
            200
        );
    }
    assert_eq!(
        request(
            h.addr,
            "POST /fail HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .status,
        502
    );
}

#[test]
fn metrics_pass_promtool_and_openmetrics_parser() {
    let (_dir, app, h, m) = before_app(&[]);
    mixed_requests(&h);

    let (status, head, text) = get(m, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (ok, said) = promtool(&text);
    assert!(
        ok,
        "promtool check metrics (Prometheus text):\n{said}\n{text}"
    );
    assert!(!text.contains("# EOF"));
    assert_eq!(
        sample(&text, "httpd_requests_total{outcome=\"static_hit\"}"),
        6.0
    );
    assert_eq!(
        sample(&text, "httpd_requests_total{outcome=\"not_modified\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "httpd_request_duration_seconds_count{outcome=\"error\"}"
        ),
        1.0,
        "the 502"
    );
    assert_eq!(
        sample(&text, "httpd_upstream_first_byte_seconds_count"),
        3.0,
        "the three the upstream answered"
    );

    let om = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, head, text) = get(m, "GET", "/metrics", Some(om));
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (ok, said) = openmetrics_parse(&text);
    assert!(ok, "OpenMetrics parser:\n{said}\n{text}");
    assert!(
        said.trim().parse::<u32>().unwrap() > 50,
        "samples parsed: {said}"
    );
    // The same families, so the same samples as the text format.
    assert_eq!(
        sample(
            &text,
            "httpd_request_duration_seconds_count{outcome=\"static\"}"
        ),
        7.0
    );
    drop(app);
}

#[test]
fn metrics_listener_paths_methods_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let h = Httpd::start(&v, &["--metrics", "127.0.0.1:0"]);
    let m = h.metrics_addr();
    assert_eq!(get(m, "GET", "/metrics?x=1", None).0, 200);
    let (status, _, body) = get(m, "HEAD", "/metrics", None);
    assert_eq!((status, body.as_str()), (200, ""));
    for path in ["/", "/metric", "/metrics/", "/favicon.ico", "/livez/x"] {
        assert_eq!(get(m, "GET", path, None).0, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let (status, head, _) = get(m, method, "/metrics", None);
        assert_eq!(status, 405, "{method}");
        assert!(
            head.to_ascii_lowercase().contains("allow: get, head"),
            "{head}"
        );
    }
    assert_eq!(get(m, "GET", "/livez", None).0, 200);
    let (status, _, body) = get(m, "GET", "/readyz", None);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // Keep-alive: two scrapes on one connection.
    let mut s = TcpStream::connect(m).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: m\r\n\r\nGET /livez HTTP/1.1\r\nHost: m\r\n\r\n")
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("HTTP/1.1 200").count() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn ten_scrapers_answered_while_clients_stall() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let control = dir.path().join("ctl.sock");
    let h = Httpd::start(
        &v,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--control",
            control.to_str().unwrap(),
        ],
    );
    let m = h.metrics_addr();
    // Stalled: half a head, nothing at all, a scrape never read; and a silent control client.
    let mut half = TcpStream::connect(m).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    let _silent = TcpStream::connect(m).unwrap();
    let mut unread = TcpStream::connect(m).unwrap();
    unread
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        .unwrap();
    let _silent_ctl = std::os::unix::net::UnixStream::connect(&control).unwrap();
    let scrapers: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..5 {
                    let (status, _, body) = get(m, "GET", "/metrics", None);
                    if status == 200 && body.contains("httpd_uptime_seconds") {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let answered: u32 = scrapers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 50, "every scrape answered while others stall");
    // The control socket answers while its silent client waits too.
    let o = Command::new(bin("httpd"))
        .args(["ctl", "status", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // The stalled head is cut after its timeout (5 s), not held for ever.
    half.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "stalled head: {text}"
    );
}

#[test]
fn readyz_fails_at_sigterm_before_listeners_close_livez_until_exit() {
    let (_dir, app, h, m) = before_app(&["--shutdown-delay", "1500ms", "--drain-timeout", "20s"]);
    let addr = h.addr;
    assert_eq!(get(m, "GET", "/readyz", None).0, 200);
    // A slow exchange keeps the process draining past the delay.
    let slow =
        std::thread::spawn(move || request(addr, "GET /slow?ms=4000 HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(300));
    h.signal(libc::SIGTERM);
    let t0 = Instant::now();
    let mut saw_503 = false;
    while t0.elapsed() < Duration::from_secs(1) {
        if get(m, "GET", "/readyz", None).0 == 503 {
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "/readyz 503 once SIGTERM arrived");
    // Not ready, yet still accepting: a load balancer has time to stop sending.
    let r = request(addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"aaa"[..]));
    assert_eq!(get(m, "GET", "/livez", None).0, 200);
    // After the delay the listeners close; the process lives on (draining): livez 200.
    let mut refused = false;
    while t0.elapsed() < Duration::from_secs(3) {
        if TcpStream::connect(addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "listeners closed after --shutdown-delay");
    let (status, _, body) = get(m, "GET", "/readyz", None);
    assert_eq!((status, body.as_str()), (503, "not ready: draining\n"));
    assert_eq!(get(m, "GET", "/livez", None).0, 200, "alive while draining");
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slow"[..]));
    // /livez answers until the process is gone.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(m) {
            Err(_) => break,
            Ok(_) if Instant::now() > end => panic!("httpd did not exit"),
            Ok(_) => {
                let (status, _, _) = get_or_gone(m, "/livez");
                assert!(status == 200 || status == 0, "livez {status}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(h.stop(), Some(0));
    drop(app);
}

/// A GET that tolerates the process going away under it (status 0).
fn get_or_gone(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    );
    let mut all = String::new();
    let _ = s.read_to_string(&mut all);
    let status = all
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, all, String::new())
}

/// Datagrams received on `sock` within `window`.
fn notifications(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => return got,
        }
    }
}

fn pings(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| m.trim() == "WATCHDOG=1").count()
}

#[test]
fn watchdog_pings_stop_while_a_worker_is_wedged() {
    let fp = bin("httpd-failpoints");
    if !fp.exists() {
        assert!(
            !ci(),
            "{} missing: cargo xtask test builds it",
            fp.display()
        );
        eprintln!(
            "skipped: {} not built (cargo xtask test builds it)",
            fp.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let control = dir.path().join("ctl.sock");
    let notify = dir.path().join("notify.sock");
    // The stand-in for systemd: the notify socket, a watchdog of 200 ms.
    let sock = UnixDatagram::bind(&notify).unwrap();
    let h = Httpd::start_bin(
        "httpd-failpoints",
        &v,
        &["--control", control.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let first = notifications(&sock, Duration::from_millis(1500));
    assert!(first.iter().any(|m| m == "READY=1"), "{first:?}");
    assert!(pings(&first) >= 5, "pings while healthy: {first:?}");

    let set = |actions: &str| {
        let o = Command::new(bin("httpd-failpoints"))
            .args(["ctl", "--control"])
            .arg(&control)
            .args(["failpoint", "worker_turn", actions])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    };
    set("return(0)");
    // The ping in flight when it wedged may still come; then none.
    let _ = notifications(&sock, Duration::from_millis(300));
    let wedged = notifications(&sock, Duration::from_millis(1500));
    assert_eq!(
        pings(&wedged),
        0,
        "no ping while worker 0 is wedged: {wedged:?}"
    );
    assert!(h.wait_log("watchdog: worker 0 has not turned", Duration::from_secs(2)));
    // Worker 1 still serves: only the watchdog noticed.
    set("off");
    let again = notifications(&sock, Duration::from_millis(1000));
    assert!(pings(&again) >= 2, "pings once it turns again: {again:?}");
    let (code, log) = h.stop_and_log();
    assert_eq!(code, Some(0), "{log:?}");
}

#[test]
fn histogram_counts_equal_request_counts_after_a_load() {
    let (_dir, app, h, m) = before_app(&[]);
    let mut wrk_total = 0u64;
    for (path, conns) in [("/a.txt", "16"), ("/app/x", "8"), ("/missing.txt", "4")] {
        // Host two.test: a static host; /app/x and /missing.txt are not in it (forwarded).
        let url = format!("http://{}{path}", h.plain);
        let o = Command::new("wrk")
            .args(["-t1", "-c", conns, "-d1s", "-H", "Host: two.test", &url])
            .output()
            .expect("wrk (cargo xtask setup installs it)");
        let out = String::from_utf8_lossy(&o.stdout);
        let n: u64 = out
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("wrk: {out}"));
        assert!(n > 0, "{out}");
        wrk_total += n;
    }
    // A 400 answered here.
    assert_eq!(request(h.addr, "GET /x HTTP/1.1\r\n\r\n").status, 400);
    std::thread::sleep(Duration::from_millis(200));
    let (_, _, text) = get(m, "GET", "/metrics", None);
    let req = |o: &str| sample(&text, &format!("httpd_requests_total{{outcome=\"{o}\"}}"));
    let dur = |o: &str| {
        sample(
            &text,
            &format!("httpd_request_duration_seconds_count{{outcome=\"{o}\"}}"),
        )
    };
    let requests: f64 = [
        "static_hit",
        "not_modified",
        "partial",
        "redirect",
        "forwarded",
        "error",
        "other",
    ]
    .iter()
    .map(|o| req(o))
    .sum();
    let observed: f64 = ["static", "forwarded", "error", "tunnel"]
        .iter()
        .map(|o| dur(o))
        .sum();
    assert_eq!(observed, requests, "one observation per request:\n{text}");
    assert_eq!(
        dur("static"),
        req("static_hit") + req("not_modified") + req("partial") + req("redirect") + req("other")
    );
    assert_eq!(
        dur("forwarded") + dur("error") + dur("tunnel"),
        req("forwarded") + req("error")
    );
    assert_eq!(
        sample(&text, "httpd_upstream_first_byte_seconds_count"),
        req("forwarded"),
        "every forwarded request got its first byte from the upstream"
    );
    // The +Inf bucket is the count.
    let inf = text
        .lines()
        .find(|l| {
            l.starts_with("httpd_request_duration_seconds_bucket{")
                && l.contains("le=\"+Inf\"")
                && l.contains("outcome=\"static\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(inf, Some(dur("static")), "{text}");
    // wrk counts what it saw complete; httpd may have answered a few more as wrk stopped.
    let total = requests as u64;
    assert!(
        total > wrk_total && total <= wrk_total + 1 + 28,
        "httpd counted {total}, wrk saw {wrk_total} (+1 bad request)"
    );
    drop(app);
}

#[test]
fn ctl_top_shows_live_rates() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let control = dir.path().join("ctl.sock");
    let h = Httpd::start(&v, &["--control", control.to_str().unwrap()]);
    let addr = h.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let load = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            request(addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n");
            n += 1;
        }
        n
    });
    let o = Command::new(bin("httpd"))
        .args(["ctl", "--control"])
        .arg(&control)
        .args(["top", "--frames", "2"])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(load.join().unwrap() > 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(out.matches("requests/s").count(), 2, "two frames:\n{out}");
    let rate: f64 = out
        .lines()
        .find(|l| l.starts_with("requests/s"))
        .and_then(|l| l.split("static ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(rate > 0.0, "static requests/s under load:\n{out}");
    assert!(out.contains("two.test"), "busiest hosts:\n{out}");
    assert!(out.contains("latency"), "{out}");
}

#[test]
fn concurrent_control_clients_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let control = dir.path().join("ctl.sock");
    let h = Httpd::start(&v, &["--control", control.to_str().unwrap()]);
    // More reloads at once than the control plane has blocking threads, with status and
    // rotate among them: each answered (a reload once waited on a thread it had taken).
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let control = control.clone();
            std::thread::spawn(move || {
                let cmd = match i % 4 {
                    0 => "status",
                    _ => "reload",
                };
                let mut child = Command::new(bin("httpd"))
                    .args(["ctl", "--control"])
                    .arg(&control)
                    .arg(cmd)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let end = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Some(st) = child.try_wait().unwrap() {
                        return st.success();
                    }
                    if Instant::now() > end {
                        let _ = child.kill();
                        let _ = child.wait();
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let ok = clients
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&b| b)
        .count();
    assert_eq!(ok, 16, "every control client answered");
    assert_eq!(
        request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n").status,
        200
    );
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus server scrapes the listener: it asks for OpenMetrics first (its default
/// Accept), parses with its own parser, and the target is up with no scrape error; the
/// histograms are queryable.
#[test]
fn prometheus_scrapes_the_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let v = vhosts(dir.path());
    let h = Httpd::start(&v, &["--metrics", "127.0.0.1:0"]);
    let m = h.metrics_addr();
    for _ in 0..3 {
        request(h.addr, "GET /a.txt HTTP/1.1\r\nHost: two.test\r\n\r\n");
    }
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: httpd\n    static_configs:\n      - targets: ['{m}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (cargo xtask setup installs it)");
    let api = |path: &str| {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "5", &format!("http://{web}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let end = Instant::now() + Duration::from_secs(30);
    let mut targets = String::new();
    while Instant::now() < end {
        targets = api("/api/v1/targets");
        if targets.contains("\"health\":\"up\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let q =
        api("/api/v1/query?query=httpd_request_duration_seconds_count%7Boutcome%3D%22static%22%7D");
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
    assert!(targets.contains("\"lastError\":\"\""), "{targets}");
    assert!(q.contains("\"outcome\":\"static\""), "{q}");
}
