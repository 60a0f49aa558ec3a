//! HTTPS and the PROXY protocol: certificates by SNI and their hot swap, ALPN, versions and
//! resumption (openssl s_client), junk and stalled handshakes, PROXY v1/v2 from raw sockets,
//! hosts bound to listeners, the HTTPS redirect and HSTS, TLS in logs and counters.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tests::{App, Httpd, Stream, TestCa, ctl_json, json_int, mkroot, write_tree};

struct Site {
    dir: tempfile::TempDir,
    vhosts: PathBuf,
    ca: TestCa,
}

impl Site {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// Three hosts (`a.test`, `b.test`, `__default__`), each with a certificate of its own.
fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    for (name, body) in [
        ("a.test", "site a"),
        ("b.test", "site b"),
        ("__default__", "default site"),
    ] {
        let src = dir.path().join(format!("src-{name}"));
        write_tree(
            &src,
            &[
                ("index.html", body.as_bytes()),
                ("big.bin", &tests::pattern(7, 3 << 20)),
            ],
        );
        mkroot(&src, &vhosts.join(name), &[]);
    }
    let ca = TestCa::new(&dir.path().join("certs"));
    ca.issue("a.test", "a", &["a.test"]);
    ca.issue("b.test", "b", &["b.test"]);
    ca.issue("__default__", "default", &["127.0.0.1", "localhost"]);
    Site { dir, vhosts, ca }
}

fn start(s: &Site, extra: &[&str]) -> (Httpd, SocketAddr) {
    let certs = s.ca.dir.to_string_lossy().into_owned();
    let mut args = vec!["--listen-tls", "127.0.0.1:0", "--tls-certs", certs.as_str()];
    args.extend_from_slice(extra);
    let h = Httpd::start(&s.vhosts, &args);
    let tls = h.tls_addr().expect("a TLS listener");
    (h, tls)
}

/// The leaf certificate (DER) in `dir/NAME.crt`.
fn file_cert(dir: &Path, name: &str) -> Vec<u8> {
    let pem = std::fs::read(dir.join(format!("{name}.crt"))).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .unwrap()
        .to_vec()
}

/// Handshakes with `sni` (trusting the test CA, so the name is checked too), sends a request
/// for `/` with that Host, and returns the leaf certificate served and the response body.
fn fetch(addr: SocketAddr, sni: &str, ca: &TestCa) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut s = Stream::tls(sock, sni, ca.client_config());
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes())?;
    s.flush()?;
    let mut r = BufReader::new(s);
    let resp = tests::read_response(&mut r, false)?;
    let Stream::Tls(t) = r.get_ref() else {
        unreachable!()
    };
    let leaf = t
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((leaf, resp.body))
}

fn openssl(args: &[&str], stdin: &str) -> String {
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut input = c.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    // s_client ends when the server closes (Connection: close) or stdin ends.
    let out = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            // Keep stdin open a moment so the response (and TLS 1.3 tickets) are read.
        }
        drop(input);
        c.wait_with_output().unwrap()
    };
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GET_CLOSE: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[test]
fn sni_chooses_the_certificate_and_the_default_answers_the_rest() {
    let s = site();
    let (h, tls) = start(&s, &[]);
    for (sni, cert, body) in [
        ("a.test", "a.test", "site a"),
        ("b.test", "b.test", "site b"),
        ("localhost", "__default__", "default site"),
    ] {
        let (leaf, got) = fetch(tls, sni, &s.ca).unwrap();
        assert!(
            leaf == file_cert(&s.ca.dir, cert),
            "{sni}: wrong certificate"
        );
        assert_eq!(String::from_utf8_lossy(&got), body, "{sni}");
    }
    // curl with the name resolved by hand: SNI and the certificate's name checked by curl.
    let port = tls.port();
    let o = tests::curl(&[
        "--cacert",
        &s.ca.ca_file().to_string_lossy(),
        "--resolve",
        &format!("a.test:{port}:127.0.0.1"),
        &format!("https://a.test:{port}/index.html"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "site a", "{o:?}");
    // No SNI at all (an address): the default certificate, which names 127.0.0.1.
    let o = tests::curl(&[
        "--cacert",
        &s.ca.ca_file().to_string_lossy(),
        &format!("https://127.0.0.1:{port}/index.html"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "default site", "{o:?}");
    // A name with no certificate of its own gets the default one (which does not name it).
    let o = openssl(
        &[
            "s_client",
            "-connect",
            &tls.to_string(),
            "-servername",
            "unknown.test",
            "-CAfile",
            &s.ca.ca_file().to_string_lossy(),
        ],
        GET_CLOSE,
    );
    assert!(
        o.contains("CN = default") || o.contains("CN=default"),
        "{o}"
    );
    // The static and plain listeners keep working side by side.
    assert_eq!(
        tests::request(
            h.plain,
            "GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n"
        )
        .body,
        b"site b"
    );
    let big = tests::curl(&[
        "--cacert",
        &s.ca.ca_file().to_string_lossy(),
        &format!("https://127.0.0.1:{port}/big.bin"),
    ]);
    assert!(
        big.stdout == tests::pattern(7, 3 << 20),
        "big body over TLS"
    );
}

#[test]
fn alpn_versions_and_resumption() {
    let s = site();
    let control = s.path("ctl.sock");
    let (_h, tls) = start(&s, &["--control", &control.to_string_lossy()]);
    let connect = tls.to_string();
    let ca = s.ca.ca_file().to_string_lossy().into_owned();
    let base = ["s_client", "-connect", &connect, "-CAfile", &ca];
    // ALPN: http/1.1 chosen; a client that offers only h2 is refused (no protocol in common).
    let o = openssl(&[&base[..], &["-alpn", "h2,http/1.1"]].concat(), GET_CLOSE);
    assert!(o.contains("ALPN protocol: http/1.1"), "{o}");
    assert!(o.contains("HTTP/1.1 200 OK"), "{o}");
    let o = openssl(&[&base[..], &["-alpn", "h2"]].concat(), GET_CLOSE);
    assert!(!o.contains("HTTP/1.1 200"), "h2 only: {o}");
    // Both versions, and resumption in each (tickets in 1.3, session IDs or tickets in 1.2).
    for v in ["-tls1_3", "-tls1_2"] {
        let sess = s.path(&format!("sess{v}.pem"));
        let sess = sess.to_string_lossy();
        let o = openssl(&[&base[..], &[v, "-sess_out", &sess]].concat(), GET_CLOSE);
        let name = if v == "-tls1_3" { "TLSv1.3" } else { "TLSv1.2" };
        assert!(o.contains(&format!("New, {name}")), "{v}: {o}");
        assert!(o.contains("HTTP/1.1 200 OK"), "{v}: {o}");
        let o = openssl(&[&base[..], &[v, "-sess_in", &sess]].concat(), GET_CLOSE);
        assert!(
            o.contains(&format!("Reused, {name}")),
            "{v} resumption: {o}"
        );
        assert!(o.contains("HTTP/1.1 200 OK"), "{v}: {o}");
    }
    // TLS 1.1 is not offered.
    let o = openssl(&[&base[..], &["-tls1_1"]].concat(), GET_CLOSE);
    assert!(!o.contains("HTTP/1.1 200"), "TLS 1.1: {o}");
    let j = ctl_json(&control);
    assert!(json_int(&j, Some("tls"), "resumed") >= 2, "{j}");
    assert!(json_int(&j, Some("tls"), "full") >= 3, "{j}");
    assert!(
        json_int(&j, Some("tls_failures"), "incompatible") >= 1,
        "{j}"
    );
}

#[test]
fn certificates_swapped_under_load_with_no_failed_handshake() {
    let s = site();
    let (h, tls) = start(&s, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cfg = s.ca.client_config();
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed, cfg) = (stop.clone(), ok.clone(), failed.clone(), cfg.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = (|| -> std::io::Result<bool> {
                        let sock = TcpStream::connect(tls)?;
                        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
                        let mut st = Stream::tls(sock, "a.test", cfg.clone());
                        st.write_all(
                            b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                        )?;
                        st.flush()?;
                        let resp = tests::read_response(&mut BufReader::new(st), false)?;
                        Ok(resp.status == 200 && resp.body == b"site a")
                    })();
                    match r {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("handshake or request failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for round in 0..5 {
        // A deploy: key and certificate renamed into place one after the other (between the
        // two the pair does not match and is refused; the old pair serves on).
        s.ca.issue("a.test", &format!("a{round}"), &["a.test"]);
        let want = file_cert(&s.ca.dir, "a.test");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if fetch(tls, "a.test", &s.ca).unwrap().0 == want {
                break;
            }
            assert!(
                Instant::now() < end,
                "round {round}: new certificate not served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A broken pair: refused with a line naming the file; the last good pair keeps serving.
    let good = file_cert(&s.ca.dir, "a.test");
    tests::tls::write_atomic(
        &s.ca.dir.join("a.test.crt"),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    assert!(
        h.wait_log("a.test.crt", Duration::from_secs(10)),
        "no log line names the bad file"
    );
    // A key of another pair: mismatched.
    let (_, other_key) = s.ca.leaf("x", &["a.test"]);
    let (crt, _) = s.ca.leaf("y", &["a.test"]);
    tests::tls::write_atomic(&s.ca.dir.join("a.test.crt"), crt.as_bytes());
    tests::tls::write_atomic(&s.ca.dir.join("a.test.key"), other_key.as_bytes());
    assert!(
        h.wait_log("do not belong together", Duration::from_secs(10)),
        "no log line for the mismatched pair"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fetch(tls, "a.test", &s.ca).unwrap().0 == good,
        "the last good pair serves"
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests over new connections during the swaps, {failed} failed");
    assert!(ok > 20, "too little load: {ok}");
    assert_eq!(failed, 0);
}

#[test]
fn junk_truncated_and_stalled_handshakes_close_cleanly() {
    let s = site();
    let control = s.path("ctl.sock");
    let (_h, tls) = start(
        &s,
        &[
            "--control",
            &control.to_string_lossy(),
            "--header-timeout",
            "1s",
        ],
    );
    // Plain HTTP to the TLS port: an alert or nothing, then the close.
    let mut c = TcpStream::connect(tls).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.len() < 64 && !got.starts_with(b"HTTP"), "{got:?}");
    // The first bytes of a real ClientHello, then the client goes away.
    let hello = client_hello();
    let mut c = TcpStream::connect(tls).unwrap();
    c.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(c);
    // The same, left hanging: closed by the header timeout.
    let mut c = TcpStream::connect(tls).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&hello[..hello.len() / 2]).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stalled handshake closed by the timeout"
    );
    // A connection that never says anything: the same.
    let mut c = TcpStream::connect(tls).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    // Still serving.
    assert_eq!(fetch(tls, "localhost", &s.ca).unwrap().1, b"default site");
    std::thread::sleep(Duration::from_millis(200));
    let j = ctl_json(&control);
    assert!(json_int(&j, Some("tls_failures"), "protocol") >= 1, "{j}");
    assert!(json_int(&j, Some("tls_failures"), "incomplete") >= 3, "{j}");
}

/// A client's first flight (a ClientHello), as rustls sends it.
fn client_hello() -> Vec<u8> {
    let ca = tests::tls::suite_ca();
    let mut conn = rustls::ClientConnection::new(
        ca.client_config(),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    assert!(out.len() > 100);
    out
}

/// A port free now (for listeners that must be named on the command line).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn v2_header(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.extend_from_slice(&[0x21, 0x11, 0, 12]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&[127, 0, 0, 1]);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&443u16.to_be_bytes());
    v
}

fn json_log(dir: &Path, host: &str) -> String {
    std::thread::sleep(Duration::from_millis(800));
    std::fs::read_to_string(dir.join(format!("{host}.access.log"))).unwrap_or_default()
}

#[test]
fn proxy_protocol_from_trusted_sources() {
    let s = site();
    let app = App::start(None);
    let logs = s.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let (pp, pp_tls) = (free_port(), free_port());
    let pp_addr: SocketAddr = format!("127.0.0.1:{pp}").parse().unwrap();
    let pp_tls_addr: SocketAddr = format!("127.0.0.1:{pp_tls}").parse().unwrap();
    let control = s.path("ctl.sock");
    let (h, _) = start(
        &s,
        &[
            "--upstream",
            &app.addr.to_string(),
            "--listen",
            &pp_addr.to_string(),
            "--listen-tls",
            &pp_tls_addr.to_string(),
            "--proxy-protocol",
            &pp_addr.to_string(),
            "--proxy-protocol",
            &pp_tls_addr.to_string(),
            "--log-dir",
            &logs.to_string_lossy(),
            "--log-format",
            "json",
            "--header-timeout",
            "1s",
            "--control",
            &control.to_string_lossy(),
        ],
    );
    let send = |bytes: &[u8]| -> Vec<u8> {
        let mut c = TcpStream::connect(pp_addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bytes).unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        got
    };
    // v1: the client it names is the client: in X-Forwarded-For and in the log.
    let got = send(
        b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 80\r\nGET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("X-Forwarded-For: 192.0.2.7\r\n"), "{text}");
    // v2 (binary), split in two writes around the header's end.
    let mut c = TcpStream::connect(pp_addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hdr = v2_header([198, 51, 100, 9], 4000);
    c.write_all(&hdr[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(&hdr[10..]).unwrap();
    c.write_all(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        got.ends_with(b"default site"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let log = json_log(&logs, "__default__");
    assert!(log.contains("\"client\":\"192.0.2.7\""), "{log}");
    assert!(log.contains("\"client\":\"198.51.100.9\""), "{log}");
    // Forged or broken headers, and none at all: closed without an answer.
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PROXY TCP4 999.0.2.7 127.0.0.1 56324 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 56324\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c123456789012GET / HTTP/1.1\r\n\r\n",
    ] {
        assert!(send(bad).is_empty(), "{:?}", String::from_utf8_lossy(bad));
    }
    // Truncated, the client leaving; truncated and left hanging: the header timeout.
    let mut c = TcpStream::connect(pp_addr).unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.7 127.0").unwrap();
    drop(c);
    let t0 = Instant::now();
    assert!(send(b"PROXY TCP4 192.0.2.7 127.0").is_empty());
    assert!(t0.elapsed() < Duration::from_secs(8));
    // An untrusted source (127.0.0.2; only 127.0.0.1 and ::1 are trusted) is closed at once.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&pp_addr.into()).unwrap();
    let mut c: TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ =
        c.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.is_empty(), "untrusted source answered");
    // A header on a listener that does not expect one is a malformed request: 400.
    let r = tests::request(
        h.plain,
        "PROXY TCP4 192.0.2.7 127.0.0.1 56324 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    let mut c = TcpStream::connect(h.plain).unwrap();
    c.write_all(&v2_header([1, 2, 3, 4], 5)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(c);
    assert_eq!(tests::read_response(&mut r, false).unwrap().status, 400);
    // PROXY then TLS on the TLS listener that expects it.
    let mut sock = TcpStream::connect(pp_tls_addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"PROXY TCP6 2001:db8::5 ::1 1234 443\r\n")
        .unwrap();
    let mut st = Stream::tls(sock, "localhost", s.ca.client_config());
    st.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    st.flush().unwrap();
    let resp = tests::read_response(&mut BufReader::new(st), false).unwrap();
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains("X-Forwarded-For: 2001:db8::5\r\n"), "{body}");
    assert!(body.contains("X-Forwarded-Proto: https\r\n"), "{body}");
    let j = ctl_json(&control);
    assert!(json_int(&j, Some("proxy_protocol"), "refused") >= 7, "{j}");
}

#[test]
fn hosts_bound_to_listeners_redirect_and_hsts() {
    let s = site();
    let logs = s.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let internal = free_port();
    let cfg = s.path("httpd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hosts.\"b.test\"]\nlisteners = [\"127.0.0.1:{internal}\"]\n\
             [hosts.\"a.test\"]\nhttps_redirect = true\nhsts = \"max-age=600\"\n"
        ),
    )
    .unwrap();
    let (h, tls) = start(
        &s,
        &[
            "--listen",
            &format!("127.0.0.1:{internal}"),
            "--config",
            &cfg.to_string_lossy(),
            "--log-dir",
            &logs.to_string_lossy(),
            "--log-format",
            "json",
        ],
    );
    let internal: SocketAddr = format!("127.0.0.1:{internal}").parse().unwrap();
    let get = |addr, host: &str, path: &str| {
        tests::request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // b.test answers only on the internal listener; elsewhere the default host answers.
    assert_eq!(get(internal, "b.test", "/").body, b"site b");
    assert_eq!(get(h.plain, "b.test", "/").body, b"default site");
    assert_eq!(fetch(tls, "b.test", &s.ca).unwrap().1, b"default site");
    // a.test over plain HTTP: 308 to the same path and query over HTTPS; no HSTS there.
    let r = get(h.plain, "a.test", "/index.html?x=1&y=2");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{}/index.html?x=1&y=2", tls.port()).as_str())
    );
    assert_eq!(r.header("strict-transport-security"), None);
    // Over HTTPS: served, with Strict-Transport-Security.
    let sock = TcpStream::connect(tls).unwrap();
    let mut st = Stream::tls(sock, "a.test", s.ca.client_config());
    st.set_read_timeout(Some(Duration::from_secs(10)));
    st.write_all(b"GET /index.html HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    st.flush().unwrap();
    let r = tests::read_response(&mut BufReader::new(st), false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"site a");
    assert_eq!(r.header("strict-transport-security"), Some("max-age=600"));
    // The JSON log says which version and cipher.
    let log = json_log(&logs, "a.test");
    assert!(
        log.contains("\"tls\":\"TLSv1.3\",\"cipher\":\"TLS13_"),
        "{log}"
    );
    assert!(
        log.contains("\"status\":308") && log.contains("\"tls\":null"),
        "{log}"
    );
}

#[test]
fn certificates_from_the_configuration_file() {
    let s = site();
    // b.test's pair lives elsewhere, named in the file; it wins over the directory's.
    let elsewhere = s.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (crt, key) = s.ca.leaf("b from the file", &["b.test"]);
    std::fs::write(elsewhere.join("b.pem"), &crt).unwrap();
    std::fs::write(elsewhere.join("b.key"), &key).unwrap();
    let cfg = s.path("httpd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hosts.\"b.test\"]\ntls_cert = {:?}\ntls_key = {:?}\n",
            elsewhere.join("b.pem"),
            elsewhere.join("b.key")
        ),
    )
    .unwrap();
    let control = s.path("ctl.sock");
    let (h, tls) = start(
        &s,
        &[
            "--config",
            &cfg.to_string_lossy(),
            "--control",
            &control.to_string_lossy(),
        ],
    );
    let want = |pem: &[u8]| {
        CertificateDer::pem_slice_iter(pem)
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    assert!(fetch(tls, "b.test", &s.ca).unwrap().0 == want(crt.as_bytes()));
    assert!(fetch(tls, "a.test", &s.ca).unwrap().0 == file_cert(&s.ca.dir, "a.test"));
    // Replaced in place (not renamed): picked up too.
    let (crt2, key2) = s.ca.leaf("b again", &["b.test"]);
    std::fs::write(elsewhere.join("b.key"), &key2).unwrap();
    std::fs::write(elsewhere.join("b.pem"), &crt2).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while fetch(tls, "b.test", &s.ca).unwrap().0 != want(crt2.as_bytes()) {
        assert!(Instant::now() < end, "the replaced pair was not loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The status text has the TLS lines.
    let out = Command::new(tests::bin("httpd"))
        .args(["ctl", "status", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("full handshakes"), "{text}");
    drop(h);
}
