//! httpd in front of an app server: forwarding, bodies both ways, headers, upgrade tunnels,
//! failures, and request smuggling checked on the upstream's side.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use tests::{
    App, Httpd, Raw, Stream, curl, json_int, mkroot, peak_rss_kib, request, scaled, tunnel,
    tunnel_sizes, write_tree,
};

struct Setup {
    _dir: tempfile::TempDir,
    vhosts: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(
        &src,
        &[
            ("index.html", b"static index"),
            ("s.txt", b"static file"),
            ("dir/index.html", b"d"),
        ],
    );
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    mkroot(&src, &vhosts.join("__default__"), &[]);
    Setup { _dir: dir, vhosts }
}

fn start(s: &Setup, app: &App, extra: &[&str]) -> Httpd {
    let up = app.addr.to_string();
    let mut args = vec!["--upstream", up.as_str()];
    args.extend_from_slice(extra);
    Httpd::start(&s.vhosts, &args)
}

fn body_str(r: &tests::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn static_hits_stay_misses_go_upstream_in_order() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &[]);
    let mut c = Raw::connect(h.addr);
    // Keep-alive run mixing static and forwarded.
    for i in 0..50 {
        let r = c.exchange("GET /s.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.body, b"static file");
        let r = c.exchange(&format!(
            "GET /api/item?id={i}&q=a%20b HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert_eq!(r.status, 200);
        assert!(
            body_str(&r).contains(&format!("target=/api/item?id={i}&q=a%20b\n")),
            "{}",
            body_str(&r)
        );
        let r = c.exchange("POST /s.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
        assert!(body_str(&r).contains("method=POST") && body_str(&r).ends_with("body=body"));
    }
    // Pipelined mix, answered in order.
    let mut batch = String::new();
    for i in 0..20 {
        if i % 2 == 0 {
            batch.push_str("GET /s.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        } else {
            batch.push_str(&format!("GET /app/{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
        }
    }
    c.send(batch.as_bytes());
    for i in 0..20 {
        let r = c.response(false);
        if i % 2 == 0 {
            assert_eq!(r.body, b"static file", "response {i}");
        } else {
            assert!(
                body_str(&r).contains(&format!("target=/app/{i}\n")),
                "response {i}: {}",
                body_str(&r)
            );
        }
    }
    // Static paths never reached the app.
    assert!(
        !app.requests()
            .iter()
            .any(|l| l.contains("/s.txt") && l.starts_with("GET"))
    );
}

#[test]
fn headers_are_rewritten_both_ways() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &[]);
    let r = request(
        h.addr,
        "GET /echo HTTP/1.1\r\nHost: Example.org:8080\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 203.0.113.7\r\nUpgrade: h2c\r\nX-Custom: kept\r\n\r\n",
    );
    let b = body_str(&r);
    for gone in [
        "X-Private",
        "Keep-Alive",
        "TE:",
        "Proxy-Connection",
        "Upgrade",
        "Connection:",
    ] {
        assert!(!b.contains(gone), "{gone} reached the upstream:\n{b}");
    }
    assert!(b.contains("Host: Example.org:8080\r\n"), "{b}");
    assert!(b.contains("X-Custom: kept\r\n"));
    assert!(b.contains("X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"));
    let proto = if tests::tls_mode() { "https" } else { "http" };
    assert!(
        b.contains(&format!("X-Forwarded-Proto: {proto}\r\n")),
        "{b}"
    );
    assert!(b.contains("X-Forwarded-Host: Example.org:8080\r\n"));
    assert!(b.contains("Via: 1.1 httpd\r\n"));
    // Response side: Via added, Date present, hop-by-hop from the app removed.
    assert_eq!(r.header("via"), Some("1.1 httpd"));
    assert!(r.header("date").is_some());
    assert_eq!(r.header("x-app"), Some("echo"));
    // Absolute form: the target's authority becomes Host.
    let r = request(
        h.addr,
        "GET http://abs.example:81/echo HTTP/1.1\r\nHost: other\r\n\r\n",
    );
    let b = body_str(&r);
    assert!(
        b.contains("Host: abs.example:81\r\n") && !b.contains("Host: other"),
        "{b}"
    );
    assert!(b.contains("X-Forwarded-Host: abs.example:81\r\n"), "{b}");
    // HTTP/1.0 without Host: the upstream still gets one; Upgrade is ignored in 1.0.
    let r = request(
        h.addr,
        "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert_eq!(r.status, 200, "no 101 for HTTP/1.0");
    let b = body_str(&r);
    assert!(
        b.contains(&format!("Host: {}\r\n", app.addr)) && !b.contains("Upgrade"),
        "{b}"
    );
    // An upstream that lists Content-Length as hop-by-hop cannot unframe its response.
    let mut c = Raw::connect(h.addr);
    let r = c.exchange("GET /hopcl HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r.header("content-length"), r.body.as_slice()),
        (Some("5"), &b"hello"[..])
    );
    assert_eq!(
        c.exchange("GET /s.txt HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"static file"
    );
    // HTTP/1.0 client: Via says 1.0, connection closes.
    let r = request(h.addr, "GET /echo HTTP/1.0\r\n\r\n");
    assert!(body_str(&r).contains("Via: 1.0 httpd\r\n"));
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn bodies_stream_both_ways() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &[]);
    // Chunked request with trailers.
    let mut c = Raw::connect(h.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.response(false);
    assert!(
        body_str(&r).ends_with("body=hello world"),
        "{}",
        body_str(&r)
    );
    assert!(body_str(&r).contains("Transfer-Encoding: chunked\r\n"));
    // Same connection goes on.
    assert_eq!(
        c.exchange("GET /s.txt HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"static file"
    );
    // Chunked response with trailer, relayed as chunked.
    let o = curl(&["--raw", "-i", &h.url("/chunked?n=3")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("0\r\nX-Checksum: 42\r\n\r\n"), "{text}");
    let o = curl(&[&h.url("/chunked?n=3")]);
    assert_eq!(o.stdout, b"chunk-0;chunk-1;chunk-2;");
    // HTTP/1.0 client: de-chunked, close-delimited.
    let r = request(h.addr, "GET /chunked?n=2 HTTP/1.0\r\n\r\n");
    assert_eq!(r.body, b"chunk-0;chunk-1;");
    assert!(r.header("transfer-encoding").is_none());
    // Close-delimited upstream body.
    let r = request(h.addr, "GET /close HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.body, b"until the end");
    // HEAD, 204 and 304 carry no body, and the connection stays in sync.
    let mut c = Raw::connect(h.addr);
    let r = c.exchange("HEAD /big?bytes=5000 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("5000")));
    assert_eq!(
        c.exchange("GET /status?code=204 HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        204
    );
    assert_eq!(
        c.exchange("GET /status?code=304 HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        304
    );
    assert_eq!(
        c.exchange("GET /s.txt HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"static file"
    );
    // 1xx interim responses are relayed.
    let mut c = Raw::connect(h.addr);
    c.send(b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response(false).status, 103);
    assert_eq!(c.response(false).body, b"after hints");
    // Expect: 100-continue: the app's 100 is relayed, then the body flows.
    let mut c = Raw::connect(h.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.response(false).status, 100);
    c.send(b"data");
    assert!(body_str(&c.response(false)).ends_with("body=data"));
}

#[test]
fn a_gigabyte_each_way_in_bounded_memory() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &[]);
    let gib = scaled(1 << 30, 4 << 20) as u64;
    // Download.
    let mut c = Stream::connect(h.addr);
    c.write_all(
        format!("GET /big?bytes={gib} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    c.flush().unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(total > gib, "got {total}");
    // Upload, chunked by curl from a pipe of zeroes.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {gib} /dev/zero | curl -s --max-time 120 {} -T - -H 'Transfer-Encoding: chunked' {}",
            if tests::tls_mode() {
                format!("--cacert {}", tests::tls::suite_ca().ca_file().display())
            } else {
                String::new()
            },
            h.url("/upload")
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), gib.to_string());
    let rss = peak_rss_kib(h.pid());
    assert!(
        rss < 64 * 1024,
        "httpd peak RSS {rss} KiB for 1 GiB each way"
    );
}

#[test]
fn upgrade_tunnels_lose_no_byte() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &[]);
    for size in tunnel_sizes() {
        tunnel(h.addr, "/ws", size, true);
        tunnel(h.addr, &format!("/ws?send={size}"), size, false);
    }
}

#[test]
fn upstream_failures_give_502_504_and_recovery() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &["--upstream-timeout", "500ms"]);
    assert_eq!(
        request(h.addr, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\n").status,
        502
    );
    assert_eq!(
        request(h.addr, "GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n").status,
        504
    );
    for k in [0, 1, 2, 3, 5, 6] {
        let r = request(
            h.addr,
            &format!("GET /badresp?k={k} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        assert!(r.status == 502, "bad response {k} gave {}", r.status);
    }
    // Mid-body death: the client sees a short body and a closed connection, never a hang.
    let o = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &h.url("/die-mid?bytes=100000"),
    ]);
    assert_eq!(o.status.code(), Some(18), "curl reports a partial transfer");
    // An interim response, then the upstream closes: the client gets the 103 and then a 502
    // (a final response may follow a 1xx), not a bare close.
    let mut s = Stream::connect(h.addr);
    s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(b"GET /badresp?k=7 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(tests::read_response(&mut r, false).unwrap().status, 103);
    assert_eq!(tests::read_response(&mut r, false).unwrap().status, 502);
    // A chunked response cut by a bad chunk: the client connection is closed, not completed.
    let o = curl(&["-o", "/dev/null", &h.url("/badresp?k=4")]);
    assert_ne!(o.status.code(), Some(0));

    // Upstream down: 502, static still served; back up: recovers by itself.
    let mut c = Raw::connect(h.addr);
    assert_eq!(
        c.exchange("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    let addr = app.kill();
    assert_eq!(
        request(h.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
        502
    );
    assert_eq!(
        request(h.addr, "GET /s.txt HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"static file"
    );
    let app = App::start(Some(addr));
    for _ in 0..5 {
        assert_eq!(
            request(h.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
            200,
            "recovered"
        );
    }
    drop(app);
}

/// Every failed exchange says once, in httpd's log, which side failed and why, and is counted
/// by class in `ctl status` (text and JSON) and `/metrics`.
#[test]
fn failed_exchanges_say_why_once_and_are_counted() {
    let s = setup();
    let app = App::start(None);
    let control = s._dir.path().join("ctl.sock");
    let control_arg = control.to_str().expect("utf-8 path");
    let h = start(
        &s,
        &app,
        &[
            "--upstream-timeout",
            "500ms",
            "--control",
            control_arg,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let cases = [
        ("/badresp?k=0", 502, "bad_response_head"),
        ("/badresp?k=2", 502, "bad_response_head"),
        ("/slow?ms=3000", 504, "timeout"),
        ("/fail", 502, "upstream_closed_early"),
    ];
    for (path, status, _) in cases {
        let r = request(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(r.status, status, "{path}");
    }
    // Mid-body: the client gets a short body, the log says the upstream closed inside it.
    let o = curl(&["-o", "/dev/null", &h.url("/die-mid?bytes=100000")]);
    assert_eq!(o.status.code(), Some(18));
    let addr = app.kill();
    assert_eq!(
        request(h.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
        502
    );
    assert!(
        h.wait_log("[connect]", Duration::from_secs(5)),
        "{:?}",
        h.log()
    );
    let log = h.log();
    let lines = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    for (path, _, class) in cases {
        assert_eq!(
            lines(&format!("forwarded GET {path} ")),
            1,
            "one line for {path}: {log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.contains(&format!("GET {path} ")) && l.contains(&format!("[{class}]"))),
            "{path} logged as {class}: {log:?}"
        );
    }
    assert_eq!(lines("[upstream_closed_early]"), 2, "{log:?}");
    assert!(lines("cannot connect to the upstream") == 1, "{log:?}");
    let j = tests::ctl_json(&control);
    for (class, n) in [
        ("bad_response_head", 2),
        ("timeout", 1),
        ("upstream_closed_early", 2),
        ("connect", 1),
        ("bad_request_body", 0),
    ] {
        assert_eq!(
            json_int(&j, Some("failed_exchanges"), class),
            n,
            "{class}: {j}"
        );
    }
    assert_eq!(json_int(&j, Some("upstream"), "failures"), 5, "{j}");
    assert_eq!(json_int(&j, Some("upstream"), "timeouts"), 1, "{j}");
    let text = String::from_utf8_lossy(
        &std::process::Command::new(tests::bin("httpd"))
            .args(["ctl", "status", "--control", control_arg])
            .output()
            .expect("ctl")
            .stdout,
    )
    .into_owned();
    assert!(
        text.contains("failed exchanges: connect 1  timeout 1  upstream reset 0  bad response head 2  bad response body 0  upstream closed early 2  bad request body 0"),
        "{text}"
    );
    let page = curl(&["-s", &format!("http://{}/metrics", h.metrics_addr())]);
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("httpd_failed_exchanges_total{class=\"timeout\"} 1"),
        "{page}"
    );
    let _ = addr;
}

#[test]
fn dead_pooled_connections_are_retried() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &["--workers", "1"]);
    // Warm the pool, then restart the app: pooled connections are now dead.
    for _ in 0..4 {
        assert_eq!(
            request(h.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
            200
        );
    }
    let addr = app.kill();
    let app = App::start(Some(addr));
    for _ in 0..8 {
        assert_eq!(
            request(h.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").status,
            200
        );
    }
    drop(app);
}

#[test]
fn smuggling_vectors_never_reach_the_upstream() {
    let s = setup();
    let app = App::start(None);
    let h = start(&s, &app, &[]);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let vectors: Vec<String> = vec![
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{smuggled}",
            5 + smuggled.len()
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, {}\r\n\r\nhello{smuggled}",
            5 + smuggled.len()
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!("POST /a HTTP/1.1\nHost: x\nContent-Length: 0\n\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX: a\rb\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n{smuggled}"),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5_0\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n{smuggled}"
        ),
        format!("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
    ];
    for v in &vectors {
        let mut c = Stream::connect(h.addr);
        c.set_read_timeout(Some(Duration::from_secs(10)));
        c.write_all(v.as_bytes()).unwrap();
        c.flush().unwrap();
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp); // the connection must close
        let text = String::from_utf8_lossy(&resp);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 501"),
            "vector {v:?} got {text}"
        );
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "one response only: {text}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let seen = app.requests();
    assert!(
        !seen.iter().any(|l| l.contains("/smuggled")),
        "smuggled request reached the app: {seen:?}"
    );
}
