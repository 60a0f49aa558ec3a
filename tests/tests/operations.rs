//! Running httpd: hot swap of hosts under load, corrupt entries, timeouts (slowloris),
//! connection limit, access logs, graceful stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tests::{Httpd, Raw, mkroot, request, write_tree};

fn build(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let src = dir.join(format!("src-{name}"));
    write_tree(&src, files);
    let out = dir.join(format!("{name}.webroot"));
    mkroot(&src, &out, &["--no-compress"]);
    out
}

/// Atomically points `link` at `target` (a new symlink renamed over the old one).
fn swap_symlink(link: &Path, target: &Path) {
    let tmp = link.with_file_name(".swap.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("not within 3 s: {what}");
}

fn body_for(h: &Httpd, host: &str, path: &str) -> (u16, Vec<u8>) {
    let r = request(
        h.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    (r.status, r.body)
}

#[test]
fn hot_swap_under_load_never_mixes_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let a_body = vec![b'A'; 3000];
    let b_body = vec![b'B'; 70_000];
    let a = build(dir.path(), "a", &[("f.txt", &a_body)]);
    let b = build(dir.path(), "b", &[("f.txt", &b_body)]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    let link = vhosts.join("swap.test");
    swap_symlink(&link, &a);
    let h = Httpd::start(&vhosts, &[]);
    let etag_a = request(
        h.addr,
        "GET /f.txt HTTP/1.1\r\nHost: swap.test\r\nConnection: close\r\n\r\n",
    )
    .header("etag")
    .unwrap()
    .to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for t in 0..3 {
        let (stop, ok, addr) = (stop.clone(), ok.clone(), h.addr);
        let (a_body, b_body, etag_a) = (a_body.clone(), b_body.clone(), etag_a.clone());
        clients.push(std::thread::spawn(move || {
            let mut seen_b = false;
            while !stop.load(Ordering::Relaxed) {
                // Keep-alive runs of 20 requests, then a new connection.
                let mut c = Raw::connect(addr);
                for _ in 0..20 {
                    let r = c.exchange("GET /f.txt HTTP/1.1\r\nHost: swap.test\r\n\r\n");
                    assert_eq!(r.status, 200, "client {t}: failed request during swap");
                    let is_a = r.body == a_body && r.header("etag") == Some(etag_a.as_str());
                    let is_b = r.body == b_body && r.header("etag") != Some(etag_a.as_str());
                    assert!(
                        is_a || is_b,
                        "client {t}: mixed response ({} bytes)",
                        r.body.len()
                    );
                    seen_b |= is_b;
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen_b
        }));
    }
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(60));
        swap_symlink(&link, if i % 2 == 0 { &b } else { &a });
    }
    // Last swap to B: served within 2 s.
    swap_symlink(&link, &b);
    eventually("B served after the last swap", || {
        body_for(&h, "swap.test", "/f.txt").1 == b_body
    });
    // Replacing the file behind the link (rename of a new file over it) is seen too.
    let b2 = build(dir.path(), "b2", &[("f.txt", &a_body)]);
    std::fs::rename(&b2, &b).unwrap();
    eventually("renamed-over file served", || {
        body_for(&h, "swap.test", "/f.txt").1 == a_body
    });
    stop.store(true, Ordering::Relaxed);
    let mut any_b = false;
    for c in clients {
        any_b |= c.join().expect("client thread");
    }
    assert!(any_b, "clients saw the swapped webroot");
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[test]
fn hosts_added_removed_and_corrupt_entries_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = build(dir.path(), "good", &[("index.html", b"good")]);
    let newer = build(dir.path(), "new", &[("index.html", b"new")]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    std::fs::copy(&good, vhosts.join("keep.test")).unwrap();
    std::fs::write(vhosts.join(".staging.tmp"), b"ignored dotfile").unwrap();
    let h = Httpd::start(&vhosts, &[]);
    assert_eq!(body_for(&h, "keep.test", "/").1, b"good");

    // Added.
    std::os::unix::fs::symlink(&newer, vhosts.join("added.test")).unwrap();
    eventually("added host served", || {
        body_for(&h, "added.test", "/").1 == b"new"
    });
    // Removed: falls back to no host (404, no __default__).
    std::fs::remove_file(vhosts.join("added.test")).unwrap();
    eventually("removed host gone", || {
        body_for(&h, "added.test", "/").0 == 404
    });

    // A corrupt new entry: one log line naming it, the others keep serving.
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(dir.path().join("corrupt"), &bytes).unwrap();
    std::fs::rename(dir.path().join("corrupt"), vhosts.join("bad.test")).unwrap();
    assert!(
        h.wait_log("bad.test", Duration::from_secs(3)),
        "{:?}",
        h.log()
    );
    let line = h
        .log()
        .into_iter()
        .find(|l| l.contains("bad.test"))
        .unwrap();
    assert!(
        line.contains("refused") && line.contains("checksum"),
        "{line}"
    );
    assert_eq!(body_for(&h, "keep.test", "/").1, b"good");

    // A good host replaced by a truncated file keeps its previous webroot.
    std::fs::write(dir.path().join("trunc"), &bytes[..n / 2]).unwrap();
    std::fs::rename(dir.path().join("trunc"), vhosts.join("keep.test")).unwrap();
    assert!(h.wait_log("still serving the previous webroot", Duration::from_secs(3)));
    assert_eq!(body_for(&h, "keep.test", "/").1, b"good");
    // ... until a good one arrives.
    std::fs::copy(&newer, dir.path().join("fixed")).unwrap();
    std::fs::rename(dir.path().join("fixed"), vhosts.join("keep.test")).unwrap();
    eventually("repaired host served", || {
        body_for(&h, "keep.test", "/").1 == b"new"
    });
    let refusals = h.log().iter().filter(|l| l.contains("bad.test")).count();
    assert_eq!(refusals, 1, "one line per bad entry, not one per rescan");
}

fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slowloris_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let site = build(dir.path(), "s", &[("index.html", b"hi")]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    std::fs::copy(&site, vhosts.join("__default__")).unwrap();
    let h = Httpd::start(
        &vhosts,
        &["--header-timeout", "1s", "--inactivity-timeout", "2s"],
    );

    // Slow headers: one byte every 200 ms never completes a head; closed after ~1 s.
    let mut slow = TcpStream::connect(h.addr).unwrap();
    let started = Instant::now();
    let mut closed = false;
    for &b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(
        closed || closed_within(&mut slow, Duration::from_secs(3)),
        "slow-header connection left open"
    );

    // Idle keep-alive connection: closed after the inactivity timeout.
    let mut idle = TcpStream::connect(h.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(idle.read(&mut buf).unwrap() > 0);
    assert!(
        closed_within(&mut idle, Duration::from_secs(6)),
        "idle connection left open"
    );
    // The server still serves.
    assert_eq!(body_for(&h, "x", "/").1, b"hi");
}

#[test]
fn connection_limit_protects_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let site = build(dir.path(), "s", &[("index.html", b"hi")]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    std::fs::copy(&site, vhosts.join("__default__")).unwrap();
    let h = Httpd::start(&vhosts, &["--max-connections", "4"]);
    let mut held: Vec<Raw> = (0..4).map(|_| Raw::connect(h.addr)).collect();
    for c in &mut held {
        assert_eq!(c.exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    }
    let mut extra = TcpStream::connect(h.addr).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_within(&mut extra, Duration::from_secs(3)),
        "over the limit: closed"
    );
    drop(held.pop());
    eventually("a slot frees up", || {
        let mut c = TcpStream::connect(h.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn access_logs_are_buffered_complete_and_flushed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let site = build(dir.path(), "s", &[("index.html", b"hi"), ("b.txt", b"bee")]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    std::fs::copy(&site, vhosts.join("__default__")).unwrap();
    std::fs::copy(&site, vhosts.join("two.test")).unwrap();
    let logs = dir.path().join("logs");
    let h = Httpd::start(&vhosts, &["--log-dir", logs.to_str().unwrap()]);
    let mut c = Raw::connect(h.addr);
    for i in 0..300 {
        let host = if i % 3 == 0 { "two.test" } else { "x" };
        c.exchange(&format!(
            "GET /b.txt?i={i} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tester \"q\"\r\nReferer: http://r/\r\n\r\n"
        ));
    }
    let count = |name: &str| {
        std::fs::read_to_string(logs.join(name))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // Flushed at least once a second.
    eventually("logs flushed", || {
        count("two.test.access.log") == 100 && count("__default__.access.log") == 200
    });
    let text = std::fs::read_to_string(logs.join("two.test.access.log")).unwrap();
    let line = text.lines().next().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("] \"GET /b.txt?i=0 HTTP/1.1\" 200 3 \"http://r/\" \"tester \\x22q\\x22\""),
        "{line}"
    );
    // Requests right before SIGTERM are in the log after exit.
    for i in 0..50 {
        c.exchange(&format!(
            "GET /?last={i} HTTP/1.1\r\nHost: two.test\r\n\r\n"
        ));
    }
    drop(c);
    assert_eq!(h.stop(), Some(0), "exit status 0 on SIGTERM");
    assert_eq!(count("two.test.access.log"), 150);
}

/// A tmpfs of this size mounted at `dir` (root only), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let target = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let opts = CString::new(format!("size={size}")).map_err(|e| e.to_string())?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: umount2(2) with a NUL-terminated path that outlives the call.
            unsafe {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// Fills the filesystem of `dir` until a write fails (ENOSPC).
fn fill(dir: &Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![b'z'; 4096];
    while f.write_all(&block).is_ok() {}
    // Whatever a partial block left: fill to the last byte.
    while f.write_all(b"z").is_ok() {}
    filler
}

#[test]
fn a_full_log_disk_keeps_serving_says_so_once_and_logs_again_when_space_returns() {
    if !tests::is_root() {
        assert!(
            !tests::ci(),
            "CI=true but not root: the full-disk test cannot mount"
        );
        eprintln!("skipped: not root (mounts a small tmpfs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let site = build(dir.path(), "s", &[("b.txt", b"bee")]);
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    std::fs::copy(&site, vhosts.join("full.test")).unwrap();
    let logs = dir.path().join("logs");
    let _fs = Tmpfs::mount(&logs, "64k").expect("mount tmpfs");
    let h = Httpd::start(&vhosts, &["--log-dir", logs.to_str().unwrap()]);
    let mut c = Raw::connect(h.addr);
    let mut get = |i: usize| {
        let r = c.exchange(&format!(
            "GET /b.txt?i={i:05} HTTP/1.1\r\nHost: full.test\r\n\r\n"
        ));
        assert_eq!((r.status, &r.body[..]), (200, &b"bee"[..]), "request {i}");
    };
    get(0);
    let log = logs.join("full.test.access.log");
    eventually("first line logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    });
    let filler = fill(&logs);
    // The disk is full: every request is still answered, across several flushes.
    for i in 1..=400 {
        get(i);
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(600));
        }
    }
    let said = |h: &Httpd, what: &str| h.log().iter().filter(|l| l.contains(what)).count();
    assert_eq!(
        said(&h, "access log"),
        1,
        "the failure said exactly once: {:?}",
        h.log()
    );
    // Space again: what was kept is written, and new records follow, no line torn.
    std::fs::remove_file(&filler).unwrap();
    for i in 401..=410 {
        get(i);
    }
    eventually("logging resumed", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 411)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    for (n, line) in text.lines().enumerate() {
        assert!(
            line.contains(&format!("GET /b.txt?i={n:05} HTTP/1.1\" 200 3")),
            "line {n}: {line}"
        );
    }
    assert!(h.wait_log("written again", Duration::from_secs(3)));
    drop(c);
    assert_eq!(h.stop(), Some(0));
}

/// httpd's stderr stops being read (the pipe's reader is gone: a shell or a log collector that
/// exited): log lines are lost, nothing else. Before, the first line after that killed the
/// thread that logged it (tracing-subscriber's eprintln! panicked on EPIPE), the signal
/// thread first, and SIGTERM was ignored from then on.
#[test]
fn a_closed_stderr_costs_log_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    let root = build(dir.path(), "site", &[("index.html", b"still here")]);
    std::os::unix::fs::symlink(&root, vhosts.join("__default__")).unwrap();
    let mut child = std::process::Command::new(tests::bin("httpd"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--ebpf", "off"])
        .arg(&vhosts)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        if std::io::BufRead::read_line(&mut err, &mut line).unwrap() == 0 {
            break;
        }
        if let Some(i) = line.find("listening on ") {
            addr = line[i + 13..].split_whitespace().next().map(str::to_string);
        }
    }
    drop(err); // the reader goes away
    let pid = child.id() as i32;
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(pid, libc::SIGHUP) }; // logs a line, into the closed pipe
    std::thread::sleep(Duration::from_millis(300));
    let addr: std::net::SocketAddr = addr.expect("listening line").parse().unwrap();
    assert_eq!(
        request(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .body,
        b"still here"
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM must still stop it"
    );
}
