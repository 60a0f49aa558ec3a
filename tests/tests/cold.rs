//! Cold reads (`--io async-sendfile`, issue 11): with the server's disk reads throttled by a
//! cgroup and the webroot dropped from the page cache, a cold download must not stall the
//! worker's other connections, a client that leaves during a cold read must leave nothing
//! behind, and a webroot swapped during one must finish the response from the old file.
//! Ordering, never a stopwatch: "answered while that read was still in flight" is read from
//! the server's own counters.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tests::{Httpd, Raw, Throttle, ctl_json, drop_cache, json_int, mkroot, pattern, write_tree};

/// Throttled read rate: a 1 MiB cold read takes about half a second.
const BPS: u64 = 2 << 20;
const IOPS: u64 = 200;
const BIG: usize = 8 << 20;

struct Site {
    dir: tempfile::TempDir,
    vhosts: PathBuf,
    control: PathBuf,
}

/// A webroot with `/hot.bin` (1 KiB) and `/big.bin` (BIG random bytes) as the default host;
/// on the target directory's disk (a block device, unlike a tmpfs /tmp).
fn site(seed: u32) -> (Site, PathBuf, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let vhosts = dir.path().join("vhosts");
    std::fs::create_dir(&vhosts).expect("vhosts");
    let (webroot, hot, big) = version(dir.path(), seed);
    std::os::unix::fs::symlink(&webroot, vhosts.join("__default__")).expect("symlink");
    let control = dir.path().join("ctl.sock");
    (
        Site {
            dir,
            vhosts,
            control,
        },
        webroot,
        hot,
        big,
    )
}

fn version(dir: &Path, seed: u32) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let src = dir.join(format!("src{seed}"));
    let hot = pattern(seed, 1024);
    let big = pattern(seed + 1, BIG);
    write_tree(&src, &[("hot.bin", &hot), ("big.bin", &big)]);
    let webroot = dir.join(format!("v{seed}.webroot"));
    mkroot(&src, &webroot, &[]);
    // DONTNEED drops clean pages only.
    assert!(
        std::process::Command::new("sync")
            .status()
            .is_ok_and(|s| s.success())
    );
    (webroot, hot, big)
}

/// The throttle, or None to skip (and a failure under CI=true, where it must work).
fn throttle(file: &Path) -> Option<Throttle> {
    match Throttle::new(file, BPS, IOPS) {
        Ok(t) => Some(t),
        Err(e) if tests::ci() => panic!("cannot throttle disk reads under CI=true: {e}"),
        Err(e) => {
            eprintln!("skipped: cannot throttle disk reads: {e}");
            None
        }
    }
}

fn start(s: &Site) -> Httpd {
    let control = s.control.to_str().expect("utf-8 path");
    Httpd::start(
        &s.vhosts,
        &[
            "--workers",
            "1",
            "--io",
            "async-sendfile",
            "--control",
            control,
        ],
    )
}

fn get(addr: SocketAddr, path: &str) -> tests::Response {
    tests::request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// Waits (bounded) until a cold read is queued or running; returns the status then.
fn wait_in_flight(control: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = ctl_json(control);
        if json_int(&j, Some("cold_reads"), "in_flight") >= 1 {
            return j;
        }
        assert!(Instant::now() < deadline, "no cold read started: {j}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Downloads `path` on a thread; `done` is set when the whole body arrived.
fn download(
    addr: SocketAddr,
    path: &'static str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<tests::Response>) {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let h = std::thread::spawn(move || {
        let r = get(addr, path);
        d.store(true, Ordering::SeqCst);
        r
    });
    (done, h)
}

#[test]
fn hot_hit_answered_while_a_cold_read_is_in_flight() {
    let (s, webroot, hot, big) = site(1);
    let h = start(&s);
    let Some(t) = throttle(&webroot) else { return };
    t.add(h.pid());
    drop_cache(&webroot);
    // The hot file is read in once (a cold read of its own), then stays cached.
    assert_eq!(get(h.addr, "/hot.bin").body, hot);
    let (done, cold) = download(h.addr, "/big.bin");
    let mut answered_during = false;
    for _ in 0..10 {
        let before = wait_in_flight(&s.control);
        let r = get(h.addr, "/hot.bin");
        assert_eq!(
            (r.status, &r.body),
            (200, &hot),
            "hot hit during a cold read"
        );
        let after = ctl_json(&s.control);
        // The same read still in flight: none finished while the hot hit was answered.
        if json_int(&after, Some("cold_reads"), "reads")
            == json_int(&before, Some("cold_reads"), "reads")
            && json_int(&after, Some("cold_reads"), "in_flight") >= 1
            && !done.load(Ordering::SeqCst)
        {
            answered_during = true;
            break;
        }
    }
    assert!(
        answered_during,
        "the hot hit always waited for a cold read to finish: the worker stalls"
    );
    let r = cold.join().expect("download");
    assert_eq!(r.status, 200);
    assert!(
        r.body == big,
        "cold download intact ({} bytes)",
        r.body.len()
    );
    let j = ctl_json(&s.control);
    assert!(json_int(&j, Some("cold_reads"), "reads") >= 2, "{j}");
    // (The kernel's readahead behind those reads brings in more than they read.)
    assert!(json_int(&j, Some("cold_reads"), "bytes") > 0, "{j}");
    assert!(json_int(&j, Some("cold_reads"), "wait_us") > 0, "{j}");
    drop(t);
    assert_eq!(h.stop(), Some(0));
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn client_gone_during_cold_read_leaves_nothing() {
    let (s, webroot, hot, _) = site(3);
    let h = start(&s);
    let Some(t) = throttle(&webroot) else { return };
    t.add(h.pid());
    assert_eq!(get(h.addr, "/hot.bin").body, hot);
    let baseline = open_fds(h.pid());
    drop_cache(&webroot);
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut c = Raw::connect(h.addr);
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
        clients.push(c);
    }
    wait_in_flight(&s.control);
    // Half leave with a reset, half with a FIN, while their reads are queued or running.
    for (i, c) in clients.into_iter().enumerate() {
        let sock = c.reader.into_inner();
        if i % 2 == 0 {
            socket_reset_on_close(sock.tcp());
        }
        drop(sock);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = ctl_json(&s.control);
        let open = json_int(&j, None, "open_connections");
        let in_flight = json_int(&j, Some("cold_reads"), "in_flight");
        if open == 0 && in_flight == 0 && open_fds(h.pid()) <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {open} connections, {in_flight} cold reads, {} fds (baseline \
             {baseline}): {j}",
            open_fds(h.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the server still serves.
    assert_eq!(get(h.addr, "/hot.bin").body, hot);
    drop(t);
    assert_eq!(h.stop(), Some(0));
}

/// SO_LINGER 0: the close sends a reset.
fn socket_reset_on_close(sock: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a live local of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
}

#[test]
fn webroot_swapped_during_cold_read_finishes_from_the_old_file() {
    let (s, v1, _, big1) = site(5);
    let (v2, _, big2) = version(s.dir.path(), 7);
    let h = start(&s);
    let Some(t) = throttle(&v1) else { return };
    t.add(h.pid());
    // HEAD: no body is sent, so no page is seen cached (a page seen cached is not asked
    // about again for a second, and this test drops the cache behind httpd's back).
    let etag1 = tests::request(
        h.addr,
        "HEAD /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .header("etag")
    .expect("etag")
    .to_string();
    drop_cache(&v1);
    let mut c = Raw::connect(h.addr);
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)));
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    wait_in_flight(&s.control);
    // Swap the host to the second version (atomic rename of a new symlink).
    let tmp = s.vhosts.join(".swap");
    std::os::unix::fs::symlink(&v2, &tmp).expect("symlink");
    std::fs::rename(&tmp, s.vhosts.join("__default__")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(20);
    while json_int(&ctl_json(&s.control), Some("hosts"), "generation") < 2 {
        assert!(Instant::now() < deadline, "the swap was not noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r2 = get(h.addr, "/big.bin");
    assert!(r2.body == big2, "a new request gets the new version");
    let r1 = c.response(false);
    assert_eq!(r1.header("etag"), Some(etag1.as_str()));
    assert!(
        r1.body == big1,
        "the download begun before the swap ends with the old file's bytes ({} bytes)",
        r1.body.len()
    );
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    drop(t);
    assert_eq!(h.stop(), Some(0));
}
