//! Tunnel rows of `cargo xtask bench`: WebSocket-style Upgrade tunnels through the proxy to the
//! test app's `/ws` echo, as a round trip of 64-byte messages on one tunnel and as a 256 MiB
//! full-duplex bulk echo. httpd runs with the eBPF programs off, with the sk_msg fast path only,
//! and with the sk_skb splice on (root only); nginx proxies the same tunnels for reference.
//! Every echoed byte is checked. The client runs in this process on CPU 1; servers and app on
//! CPU 0.
//!
//! CPU is given twice: the proxy's own (utime + stime of its processes), and the whole
//! machine's (/proc/stat, all CPUs, idle excluded). The splice moves work out of the proxy
//! into softirq and kworker time that no process is charged for: only the machine figure
//! compares the modes fairly.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::bench::{
    BACKEND_PORT, HTTPD_PORT, NGINX_PORT, NginxRole, Server, clock_ticks_per_sec, cpu_ticks,
    pids_of, start_httpd, start_nginx, wait_port,
};

const MESSAGE: usize = 64;
const BULK: usize = 256 << 20;

/// One measured configuration.
pub struct Row {
    pub server: String,
    /// Round trips per second on one tunnel.
    pub rtt_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Proxy CPU and machine CPU per round trip, microseconds.
    pub rtt_proxy_cpu_us: f64,
    pub rtt_machine_cpu_us: f64,
    /// Bulk echo: MiB/s each way, proxy and machine CPU per MiB, microseconds.
    pub bulk_mibs: f64,
    pub bulk_proxy_cpu_us: f64,
    pub bulk_machine_cpu_us: f64,
}

/// Runs the pinned client threads on CPU 1 (the servers are on CPU 0).
fn pin_to_cpu1() {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity get a valid
    // pointer to it and its exact size; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Busy CPU time of the whole machine, in clock ticks (all CPUs, idle and iowait excluded).
fn machine_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    line.split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<u64>().ok())
        .enumerate()
        // user nice system idle iowait irq softirq steal: skip idle (3) and iowait (4).
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum()
}

/// CPU microseconds used by `pids` and by the machine while `f` runs.
fn measure<T>(pids: &[u32], f: impl FnOnce() -> Result<T>) -> Result<(T, f64, f64)> {
    let hz = clock_ticks_per_sec();
    let (p0, m0) = (cpu_ticks(pids), machine_ticks());
    let out = f()?;
    let (p1, m1) = (cpu_ticks(pids), machine_ticks());
    Ok((
        out,
        (p1 - p0) as f64 / hz * 1e6,
        (m1 - m0) as f64 / hz * 1e6,
    ))
}

/// An Upgrade tunnel to the app's echo, through the proxy on `port`.
fn open_tunnel(port: u16) -> Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    (&s).write_all(
        b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )?;
    // Byte by byte: nothing past the head may be consumed (the echo has not started).
    let mut r = BufReader::with_capacity(1, &s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    ensure!(line.starts_with("HTTP/1.1 101"), "no 101: {line:?}");
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("tunnel closed in the head");
        }
        if line == "\r\n" {
            break;
        }
    }
    Ok(s)
}

/// Round trips of 64-byte messages on one tunnel for `seconds`: count and sorted latencies.
fn round_trips(port: u16, seconds: f64) -> Result<Vec<u32>> {
    std::thread::scope(|sc| {
        sc.spawn(|| -> Result<Vec<u32>> {
            pin_to_cpu1();
            let mut s = open_tunnel(port)?;
            let mut msg = [0u8; MESSAGE];
            let mut back = [0u8; MESSAGE];
            let mut lat = Vec::with_capacity(1 << 20);
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            let mut i = 0u64;
            while Instant::now() < end {
                msg[..8].copy_from_slice(&i.to_le_bytes());
                let t = Instant::now();
                s.write_all(&msg)?;
                s.read_exact(&mut back)?;
                lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                ensure!(back == msg, "round trip {i}: wrong echo");
                i += 1;
            }
            s.shutdown(Shutdown::Write)?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?;
            ensure!(rest.is_empty(), "bytes after the last echo");
            lat.sort_unstable();
            Ok(lat)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("round-trip client panicked"))?
    })
}

/// The bulk stream: a pattern of prime period, so a byte out of place is caught.
const PERIOD: usize = 65_521;
const CHUNK: usize = 256 << 10;

fn pattern() -> Vec<u8> {
    (0..PERIOD + CHUNK)
        .map(|i| ((i % PERIOD).wrapping_mul(131) >> 3) as u8)
        .collect()
}

/// A full-duplex echo of BULK bytes on one tunnel; returns the elapsed time. Neither side
/// half-closes (nginx ends a tunnel at the first FIN): the reader stops at BULK bytes.
fn bulk(port: u16) -> Result<Duration> {
    let s = open_tunnel(port)?;
    let pat = pattern();
    let started = Instant::now();
    std::thread::scope(|sc| -> Result<()> {
        let mut w = s.try_clone()?;
        let pat_w = &pat;
        let writer = sc.spawn(move || -> Result<()> {
            pin_to_cpu1();
            let mut sent = 0;
            while sent < BULK {
                let n = CHUNK.min(BULK - sent);
                let off = sent % PERIOD;
                w.write_all(&pat_w[off..off + n])?;
                sent += n;
            }
            Ok(())
        });
        let mut r = s.try_clone()?;
        let pat_r = &pat;
        let reader = sc.spawn(move || -> Result<()> {
            pin_to_cpu1();
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < BULK {
                let want = CHUNK.min(BULK - got);
                let n = r.read(&mut buf[..want])?;
                ensure!(n > 0, "bulk echo: closed after {got} of {BULK} bytes");
                let off = got % PERIOD;
                ensure!(
                    buf[..n] == pat_r[off..off + n],
                    "bulk echo: bytes {got}..{} differ",
                    got + n
                );
                got += n;
            }
            Ok(())
        });
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("bulk writer panicked"))??;
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("bulk reader panicked"))??;
        Ok(())
    })?;
    Ok(started.elapsed())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn measure_server(name: &str, port: u16, server: &Server, seconds: u32) -> Result<Row> {
    let pids = pids_of(server.0.id());
    // Warm up, then measure.
    round_trips(port, 1.0)?;
    let (lat, proxy, machine) = measure(&pids, || round_trips(port, f64::from(seconds)))?;
    let n = lat.len().max(1) as f64;
    let (elapsed, bproxy, bmachine) = measure(&pids, || bulk(port))?;
    let mib = (BULK >> 20) as f64;
    let row = Row {
        server: name.to_string(),
        rtt_per_s: n / f64::from(seconds),
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        rtt_proxy_cpu_us: proxy / n,
        rtt_machine_cpu_us: machine / n,
        bulk_mibs: mib / elapsed.as_secs_f64(),
        bulk_proxy_cpu_us: bproxy / mib,
        bulk_machine_cpu_us: bmachine / mib,
    };
    eprintln!(
        "xtask bench: tunnel, {name}: {:.0} round trips/s, p50 {:.1} us, bulk {:.0} MiB/s",
        row.rtt_per_s, row.p50_us, row.bulk_mibs
    );
    Ok(row)
}

/// The app (the test suite's upstream) on the backend port, pinned with the servers.
fn start_app(bin: &Path, work: &Path) -> Result<Server> {
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin.join("app"))
        .args(["--listen", &format!("127.0.0.1:{BACKEND_PORT}"), "--log"])
        .arg(work.join("app-requests.log"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start the app (tests/src/bin/app.rs)")?;
    let s = Server(child);
    wait_port(BACKEND_PORT)?;
    Ok(s)
}

/// Every tunnel configuration this machine can run.
pub fn run(bin: &Path, work: &Path, vhosts: &Path, seconds: u32) -> Result<Vec<Row>> {
    let _app = start_app(bin, work)?;
    let mut modes: Vec<(&str, bool, &[&str])> = vec![("httpd, eBPF off", false, &[])];
    if crate::cmd::is_root() {
        modes.push(("httpd, sk_msg only", true, &["--ebpf-splice", "off"]));
        modes.push(("httpd, sk_skb splice", true, &["--ebpf-splice", "on"]));
    }
    let mut rows = Vec::new();
    for (name, ebpf, extra) in modes {
        let srv = start_httpd(bin, vhosts, "sendfile", ebpf, extra)?;
        rows.push(measure_server(name, HTTPD_PORT, &srv, seconds)?);
    }
    let srv = start_nginx(work, vhosts, NginxRole::Tunnel)?;
    rows.push(measure_server("nginx", NGINX_PORT, &srv, seconds)?);
    Ok(rows)
}

/// The rows as a Markdown section.
pub fn markdown(rows: &[Row], md: &mut String) {
    let _ = writeln!(
        md,
        "\nUpgrade tunnels to the app's echo: one tunnel of 64-byte round trips, then a {} MiB full-duplex echo. Proxy CPU is the proxy's processes; machine CPU is every CPU's busy time (the splice runs in softirq and kworkers, charged to no process).\n",
        BULK >> 20
    );
    let _ = writeln!(
        md,
        "| tunnel through | round trips/s | p50 us | p99 us | proxy CPU us/rt | machine CPU us/rt | bulk MiB/s | proxy CPU us/MiB | machine CPU us/MiB |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
            r.server,
            r.rtt_per_s,
            r.p50_us,
            r.p99_us,
            r.rtt_proxy_cpu_us,
            r.rtt_machine_cpu_us,
            r.bulk_mibs,
            r.bulk_proxy_cpu_us,
            r.bulk_machine_cpu_us
        );
    }
}
