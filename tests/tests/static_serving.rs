//! httpd serving webroots: bytes and headers, HEAD, conditionals, ranges, negotiation,
//! routing, redirects, errors. Every functional test runs under each I/O model.

use std::io::Read;
use std::path::{Path, PathBuf};

use tests::{Httpd, IO_MODELS, Raw, curl, mkroot, request, scaled, write_tree};

struct Site {
    _dir: tempfile::TempDir,
    vhosts: PathBuf,
    src: PathBuf,
}

fn big(n: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let css = "body { color: #123456; margin: 0 auto; }\n".repeat(300);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    write_tree(
        &src,
        &[
            (
                "index.html",
                b"<!doctype html><title>home</title><p>Hello</p>",
            ),
            ("style.css", css.as_bytes()),
            ("app.js", b"export const x = 1;\n"),
            ("data.json", b"{\"ok\":true}"),
            ("img.png", png),
            ("docs/index.html", b"<p>docs</p>"),
            ("empty.txt", b""),
            ("big.bin", &big(scaled(3 << 20, 200 << 10))),
            ("sp ace/ü.txt", "unicode".as_bytes()),
        ],
    );
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    mkroot(&src, &vhosts.join("__default__"), &[]);
    let other = dir.path().join("other");
    write_tree(
        &other,
        &[
            ("index.html", b"other host"),
            (".errors/404.html", b"<p>custom missing page</p>"),
        ],
    );
    mkroot(&other, &vhosts.join("other.example"), &[]);
    Site {
        _dir: dir,
        vhosts,
        src,
    }
}

fn each_model(f: impl Fn(&Httpd, &Path)) {
    let s = site();
    for io in IO_MODELS {
        let h = Httpd::start(&s.vhosts, &["--io", io]);
        eprintln!("--- io model {io}");
        f(&h, &s.src);
    }
}

fn get(h: &Httpd, path: &str, headers: &str) -> tests::Response {
    request(
        h.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"),
    )
}

#[test]
fn bytes_and_headers_per_type() {
    each_model(|h, src| {
        for (path, mime) in [
            ("/index.html", "text/html; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/data.json", "application/json"),
            ("/img.png", "image/png"),
            ("/empty.txt", "text/plain; charset=utf-8"),
            ("/big.bin", "application/octet-stream"),
        ] {
            let r = get(h, path, "");
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("content-type"), Some(mime), "{path}");
            let want = std::fs::read(src.join(&path[1..])).unwrap();
            assert_eq!(r.body.len(), want.len(), "{path}");
            assert!(r.body == want, "{path}: body differs");
            assert_eq!(
                r.header("content-length"),
                Some(want.len().to_string().as_str())
            );
            let etag = r.header("etag").unwrap();
            assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
            assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
            assert!(r.header("date").is_some() && r.header("server").is_some());
            assert_eq!(r.header("accept-ranges"), Some("bytes"));
        }
        // curl agrees, over a real client.
        let o = curl(&["-o", "-", &h.url("/sp%20ace/%C3%BC.txt")]);
        assert_eq!(o.stdout, b"unicode");
    });
}

#[test]
fn head_has_same_headers_and_no_body() {
    each_model(|h, _| {
        let mut c = Raw::connect(h.addr);
        let g = c.exchange("GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n");
        let hd = c.exchange("HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(hd.status, 200);
        assert!(hd.body.is_empty());
        for name in [
            "content-type",
            "content-length",
            "etag",
            "last-modified",
            "vary",
        ] {
            assert_eq!(g.header(name), hd.header(name), "{name}");
        }
        // The connection is still in sync: the HEAD sent no body.
        let again = c.exchange("GET /data.json HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(again.body, b"{\"ok\":true}");
    });
}

#[test]
fn conditional_requests() {
    each_model(|h, _| {
        let r = get(h, "/index.html", "");
        let etag = r.header("etag").unwrap().to_string();
        let lm = r.header("last-modified").unwrap().to_string();
        let cases: Vec<(String, u16)> = vec![
            (format!("If-None-Match: {etag}\r\n"), 304),
            (format!("If-None-Match: \"nope\", {etag}\r\n"), 304),
            (format!("If-None-Match: W/{etag}\r\n"), 304),
            ("If-None-Match: *\r\n".into(), 304),
            ("If-None-Match: \"nope\"\r\n".into(), 200),
            (format!("If-Modified-Since: {lm}\r\n"), 304),
            (
                "If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT\r\n".into(),
                200,
            ),
            (
                format!("If-None-Match: \"nope\"\r\nIf-Modified-Since: {lm}\r\n"),
                200,
            ),
            ("If-Match: \"nope\"\r\n".into(), 412),
            (format!("If-Match: {etag}\r\n"), 200),
            (format!("If-Match: W/{etag}\r\n"), 412),
            ("If-Match: *\r\n".into(), 200),
            (
                "If-Unmodified-Since: Thu, 01 Jan 1998 00:00:00 GMT\r\n".into(),
                412,
            ),
            (format!("If-Unmodified-Since: {lm}\r\n"), 200),
            ("If-Modified-Since: not a date\r\n".into(), 200),
            // Repeated lines form one list (RFC 9110 section 5.3).
            (
                format!("If-None-Match: \"nope\"\r\nIf-None-Match: {etag}\r\n"),
                304,
            ),
            (format!("If-Match: \"nope\"\r\nIf-Match: {etag}\r\n"), 200),
        ];
        for (hdr, want) in cases {
            let r = get(h, "/index.html", &hdr);
            assert_eq!(r.status, want, "{hdr}");
            if want == 304 {
                assert!(r.body.is_empty());
                assert_eq!(r.header("etag"), Some(etag.as_str()));
                assert!(r.header("content-length").is_none());
            }
        }
    });
}

#[test]
fn ranges() {
    each_model(|h, src| {
        let big = std::fs::read(src.join("big.bin")).unwrap();
        let len = big.len();
        let r = get(h, "/big.bin", "Range: bytes=100-199\r\n");
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 100-199/{len}").as_str())
        );
        assert_eq!(r.body, &big[100..200]);
        let r = get(h, "/big.bin", "Range: bytes=-500\r\n");
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &big[len - 500..]);
        let r = get(
            h,
            "/big.bin",
            &format!("Range: bytes={}-\r\n", len - 70_000),
        );
        assert_eq!(r.status, 206);
        assert!(r.body == big[len - 70_000..]);
        let r = get(h, "/big.bin", &format!("Range: bytes={len}-\r\n"));
        assert_eq!(r.status, 416);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        let r = get(h, "/big.bin", "Range: bytes=0-1,10-20\r\n");
        assert_eq!(r.status, 200, "multiple ranges: full representation");
        assert_eq!(r.body.len(), len);
        let etag = r.header("etag").unwrap().to_string();
        let r = get(
            h,
            "/big.bin",
            &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"),
        );
        assert_eq!(r.status, 206);
        let r = get(h, "/big.bin", "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), len);
        // HEAD ignores Range.
        let r = request(
            h.addr,
            "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        // curl's own range handling.
        let o = curl(&["-r", "5-9", &h.url("/index.html")]);
        assert_eq!(o.stdout, b"type ");
    });
}

fn decode(enc: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match enc {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        _ => out = body.to_vec(),
    }
    out
}

#[test]
fn content_negotiation() {
    each_model(|h, src| {
        let css = std::fs::read(src.join("style.css")).unwrap();
        let mut etags = std::collections::HashSet::new();
        for (ae, want) in [
            ("", "identity"),
            ("Accept-Encoding: gzip\r\n", "gzip"),
            ("Accept-Encoding: br\r\n", "br"),
            ("Accept-Encoding: zstd\r\n", "zstd"),
            ("Accept-Encoding: gzip;q=0.5, identity\r\n", "identity"),
            ("Accept-Encoding: br;q=0, gzip\r\n", "gzip"),
            ("Accept-Encoding: deflate\r\n", "identity"),
        ] {
            let r = get(h, "/style.css", ae);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
            let got = r.header("content-encoding").unwrap_or("identity");
            assert_eq!(got, want, "{ae}");
            assert_eq!(decode(got, &r.body), css, "{ae}");
            etags.insert((got.to_string(), r.header("etag").unwrap().to_string()));
        }
        let distinct: std::collections::HashSet<_> = etags.iter().map(|(_, e)| e).collect();
        assert_eq!(
            distinct.len(),
            4,
            "each variant has its own ETag: {etags:?}"
        );
        // curl --compressed gets the original back.
        let o = curl(&["--compressed", &h.url("/style.css")]);
        assert_eq!(o.stdout, css);
        // A 304 on the variant's own ETag.
        let r = get(h, "/style.css", "Accept-Encoding: gzip\r\n");
        let e = r.header("etag").unwrap().to_string();
        let r = get(
            h,
            "/style.css",
            &format!("Accept-Encoding: gzip\r\nIf-None-Match: {e}\r\n"),
        );
        assert_eq!(r.status, 304);
    });
}

#[test]
fn routing_and_paths() {
    each_model(|h, _| {
        let a = h.addr;
        let body = |req: &str| request(a, req).body;
        assert_eq!(
            body("GET / HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"),
            b"other host"
        );
        assert_eq!(
            body("GET / HTTP/1.1\r\nHost: OTHER.Example:8080\r\nConnection: close\r\n\r\n"),
            b"other host"
        );
        assert_eq!(
            body("GET / HTTP/1.1\r\nHost: other.example.\r\nConnection: close\r\n\r\n"),
            b"other host"
        );
        assert!(
            body("GET / HTTP/1.1\r\nHost: unknown\r\nConnection: close\r\n\r\n")
                .starts_with(b"<!doctype html><title>home")
        );
        assert_eq!(
            body(
                "GET http://other.example/ HTTP/1.1\r\nHost: unknown\r\nConnection: close\r\n\r\n"
            ),
            b"other host",
            "absolute-form host wins"
        );
        assert!(body("GET / HTTP/1.0\r\n\r\n").starts_with(b"<!doctype html><title>home"));
        // Directory redirect, with query kept; dir/ serves its index.
        let r = request(
            a,
            "GET /docs?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("/docs/?x=1"));
        assert_eq!(
            body("GET /docs/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
            b"<p>docs</p>"
        );
        // Normalisation and refusals.
        assert_eq!(
            body("GET /docs/../data.json?q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
            b"{\"ok\":true}"
        );
        assert_eq!(
            body("GET /%64ata.json HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
            b"{\"ok\":true}"
        );
        for bad in ["/../etc/passwd", "/%2e%2e/x", "/a%00b", "/a%zz", "/%0a"] {
            let r = request(
                a,
                &format!("GET {bad} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
            );
            assert_eq!(r.status, 400, "{bad}");
        }
        // Custom error page of a host, built-in otherwise.
        let r = request(
            a,
            "GET /missing HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (r.status, r.body.as_slice()),
            (404, &b"<p>custom missing page</p>"[..])
        );
        let r = request(
            a,
            "GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 404);
        assert!(String::from_utf8_lossy(&r.body).contains("404 Not Found"));
    });
}

#[test]
fn error_codes_and_closing() {
    each_model(|h, _| {
        let a = h.addr;
        // 405 with Allow, connection kept.
        let mut c = Raw::connect(a);
        let r = c.exchange("POST /index.html HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        let r = c.exchange("DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 405);
        assert_eq!(
            c.exchange("GET /data.json HTTP/1.1\r\nHost: h\r\n\r\n")
                .status,
            200,
            "body skipped, still in sync"
        );
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"GARBAGE\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n".to_vec(), 505),
            (format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000)).into_bytes(), 414),
            (format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000)).into_bytes(), 431),
            (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), 501),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\nHost: h\n\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n".to_vec(), 400),
        ];
        for (req, want) in cases {
            let mut c = Raw::connect(a);
            c.send(&req);
            let r = c.response(false);
            assert_eq!(
                r.status,
                want,
                "{:?}",
                String::from_utf8_lossy(&req[..req.len().min(60)])
            );
            assert_eq!(r.header("connection"), Some("close"));
            assert!(c.closed(), "connection closed after {want}");
        }
    });
}

#[test]
fn pipelining_and_keep_alive() {
    each_model(|h, src| {
        let mut c = Raw::connect(h.addr);
        let paths = [
            "/index.html",
            "/style.css",
            "/missing",
            "/data.json",
            "/big.bin",
            "/app.js",
            "/docs",
        ];
        let mut batch = String::new();
        for p in paths {
            batch.push_str(&format!("GET {p} HTTP/1.1\r\nHost: h\r\n\r\n"));
        }
        batch.push_str("HEAD /index.html HTTP/1.1\r\nHost: h\r\n\r\n");
        c.send(batch.as_bytes());
        for p in paths {
            let r = c.response(false);
            match p {
                "/missing" => assert_eq!(r.status, 404),
                "/docs" => assert_eq!(r.status, 301),
                _ => {
                    assert_eq!(r.status, 200, "{p}");
                    assert!(r.body == std::fs::read(src.join(&p[1..])).unwrap(), "{p}");
                }
            }
        }
        assert_eq!(c.response(true).status, 200);
        // 1,000 requests on one connection.
        for i in 0..scaled(1000, 100) {
            let p = if i % 2 == 0 { "/data.json" } else { "/app.js" };
            let r = c.exchange(&format!("GET {p} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert_eq!(r.status, 200);
        }
        // A request sent with the client's FIN (half-close) is answered, then the connection
        // closes at once: on a new connection, and on one that served a request already (the
        // read that returns the request takes the FIN too; no later event announces it).
        for warm in [false, true] {
            let mut c = Raw::connect(h.addr);
            if warm {
                let r = c.exchange("GET /data.json HTTP/1.1\r\nHost: h\r\n\r\n");
                assert_eq!(r.status, 200);
            }
            c.send(b"GET /app.js HTTP/1.1\r\nHost: h\r\n\r\n");
            c.reader.get_mut().shutdown_write();
            assert_eq!(c.response(false).status, 200);
            assert!(c.closed(), "closed after the half-close (warm: {warm})");
        }
        // HTTP/1.0: closed unless keep-alive asked.
        let mut c = Raw::connect(h.addr);
        let r = c.exchange("GET /data.json HTTP/1.0\r\n\r\n");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed());
        let mut c = Raw::connect(h.addr);
        let r = c.exchange("GET /data.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(
            c.exchange("GET /data.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .status,
            200
        );
    });
}

#[test]
fn wget_downloads() {
    let s = site();
    let h = Httpd::start(&s.vhosts, &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.bin");
    let mut wget = std::process::Command::new("wget");
    if tests::tls_mode() {
        wget.arg("--ca-certificate")
            .arg(tests::tls::suite_ca().ca_file());
    }
    let st = wget
        .args(["-q", "-O"])
        .arg(&out)
        .arg(h.url("/big.bin"))
        .status()
        .expect("wget");
    assert!(st.success());
    assert!(std::fs::read(&out).unwrap() == std::fs::read(s.src.join("big.bin")).unwrap());
}
