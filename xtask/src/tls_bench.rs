//! `cargo xtask bench --only tls`: httpd against nginx over HTTPS, the same ECDSA P-256
//! certificate and key for both, TLS 1.3, one worker each pinned to CPU 0, the client on CPU 1:
//! small keep-alive hits (CPU per request), a 1 MiB file (MiB/s), a new connection per request
//! with wrk (which resumes every session after the first: tickets), and full and resumed
//! handshakes with `openssl s_time -new` / `-reuse` (one client in a loop, so the rate is the
//! client's; the server's CPU per handshake is the figure).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bench::{
    HTTPD_PORT, Measure, NGINX_PORT, NginxRole, Scenario, Server, clock_ticks_per_sec, cpu_split,
    lua, pids_of, run_wrk_url, start_nginx, wait_port,
};
use crate::cmd;

/// The certificate and key both servers use (made with openssl: ECDSA P-256).
fn make_cert(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    cmd::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
            ])
            .arg(dir.join("__default__.key"))
            .arg("-out")
            .arg(dir.join("__default__.crt"))
            .stderr(Stdio::null()),
    )
}

fn start_httpd_tls(bin: &Path, vhosts: &Path, certs: &Path) -> Result<Server> {
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin.join("httpd"))
        .args(["--listen", "127.0.0.1:0", "--listen-tls"])
        .arg(format!("127.0.0.1:{HTTPD_PORT}"))
        .args(["--workers", "1", "--ebpf", "off", "--tls-certs"])
        .arg(certs)
        .arg(vhosts)
        .stderr(std::fs::File::create(
            vhosts.with_file_name("httpd-tls.log"),
        )?)
        .spawn()
        .context("start httpd")?;
    let s = Server(child);
    wait_port(HTTPD_PORT)?;
    Ok(s)
}

/// The suite and version a server negotiates with OpenSSL's client.
fn negotiated(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("New, "))
        .map_or("?".into(), |l| l.trim_start_matches("New, ").to_string())
}

/// `openssl s_time` against `port` for `seconds` (`-new`: full handshakes; `-reuse`: one full
/// then resumed ones), each connection fetching `path`; the server's CPU from /proc.
fn s_time(port: u16, mode: &str, path: &str, seconds: u32, server: u32) -> Result<Measure> {
    let pids = pids_of(server);
    let hz = clock_ticks_per_sec();
    let before = cpu_split(&pids);
    let started = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", "1", "openssl", "s_time", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(mode)
        .args(["-time", &seconds.to_string(), "-www", path])
        .stderr(Stdio::null())
        .output()
        .context("openssl s_time")?;
    let real = started.elapsed().as_secs_f64();
    let after = cpu_split(&pids);
    let text = String::from_utf8_lossy(&out.stdout);
    // "N connections in S real seconds, B bytes read per connection"
    let line = text
        .lines()
        .find(|l| l.contains("real seconds"))
        .with_context(|| format!("s_time printed no result: {text}"))?;
    let n: u64 = line
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("s_time connections")?;
    let per: u64 = line
        .split(", ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let user = after.0.saturating_sub(before.0) as f64 / hz * 1e6;
    let cpu = user + after.1.saturating_sub(before.1) as f64 / hz * 1e6;
    Ok(Measure {
        requests: n,
        bytes: n * per,
        errors: u64::from(n == 0),
        seconds: real,
        cpu_us: cpu,
        user_us: user,
        ..Measure::default()
    })
}

/// The rows: (scenario, httpd, nginx).
pub fn run(
    bin: &Path,
    work: &Path,
    src: &Path,
    vhosts: &Path,
    files: &[(String, usize)],
    seconds: u32,
) -> Result<Vec<crate::bench::Row>> {
    for tool in ["openssl", "wrk", "nginx"] {
        if !cmd::on_path(tool) && !Path::new("/usr/sbin").join(tool).exists() {
            bail!("{tool} not installed: run `cargo xtask setup`");
        }
    }
    let certs = work.join("tls-certs");
    make_cert(&certs)?;
    let small = files[0].clone();
    let big = files
        .iter()
        .find(|(_, l)| *l == 1 << 20)
        .cloned()
        .context("a 1 MiB file in the corpus")?;
    let scenario = |name, paths: Vec<(String, usize)>, connections, close, check| Scenario {
        name,
        paths,
        connections,
        close,
        upstream: false,
        ebpf: false,
        check_bodies: check,
        random: false,
    };
    let wrk_rows = [
        scenario(
            "TLS small file, 64 keep-alive conns",
            vec![small.clone()],
            64,
            false,
            true,
        ),
        scenario("TLS 1 MiB file, 8 conns", vec![big], 8, false, false),
        // wrk keeps each connection's session: every new connection resumes (a ticket).
        scenario(
            "TLS new connection per request (resumed), small file",
            vec![small.clone()],
            16,
            true,
            true,
        ),
    ];
    let mut rows = Vec::new();
    let mut suites = String::new();
    for (i, s) in wrk_rows.iter().enumerate() {
        let script = work.join(format!("tls{i}.lua"));
        std::fs::write(&script, lua(s))?;
        let h = {
            let srv = start_httpd_tls(bin, vhosts, &certs)?;
            if i == 0 {
                let _ = write!(suites, "httpd: {}", negotiated(HTTPD_PORT));
            }
            let url = format!("https://127.0.0.1:{HTTPD_PORT}/");
            run_wrk_url(&url, s, &script, 1, srv.0.id())?;
            run_wrk_url(&url, s, &script, seconds, srv.0.id())?
        };
        let n = {
            let srv = start_nginx(work, src, NginxRole::StaticTls(certs.clone()))?;
            if i == 0 {
                let _ = write!(suites, "; nginx: {}", negotiated(NGINX_PORT));
            }
            let url = format!("https://127.0.0.1:{NGINX_PORT}/");
            run_wrk_url(&url, s, &script, 1, srv.0.id())?;
            run_wrk_url(&url, s, &script, seconds, srv.0.id())?
        };
        eprintln!(
            "xtask bench: {}: httpd {:.0} req/s {:.1} us/req, nginx {:.0} req/s {:.1} us/req",
            s.name,
            h.rps(),
            h.cpu_per_req(),
            n.rps(),
            n.cpu_per_req()
        );
        rows.push((s.name, h, n, None));
    }
    for (name, mode) in [
        ("TLS full handshake per connection (s_time -new)", "-new"),
        (
            "TLS resumed handshake per connection (s_time -reuse)",
            "-reuse",
        ),
    ] {
        // Warm up (a second), then measure.
        let h = {
            let srv = start_httpd_tls(bin, vhosts, &certs)?;
            s_time(HTTPD_PORT, mode, &small.0, 1, srv.0.id())?;
            s_time(HTTPD_PORT, mode, &small.0, seconds, srv.0.id())?
        };
        let n = {
            let srv = start_nginx(work, src, NginxRole::StaticTls(certs.clone()))?;
            s_time(NGINX_PORT, mode, &small.0, 1, srv.0.id())?;
            s_time(NGINX_PORT, mode, &small.0, seconds, srv.0.id())?
        };
        eprintln!(
            "xtask bench: {name}: httpd {:.0}/s {:.1} us each, nginx {:.0}/s {:.1} us each",
            h.rps(),
            h.cpu_per_req(),
            n.rps(),
            n.cpu_per_req()
        );
        rows.push((name, h, n, None));
    }
    eprintln!("xtask bench: TLS negotiated with OpenSSL's client: {suites}");
    Ok(rows)
}

/// The TLS section of the report.
pub fn markdown(rows: &[crate::bench::Row], md: &mut String) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## HTTPS\n\nThe same ECDSA P-256 certificate for both; httpd (rustls, aws-lc-rs) and nginx (OpenSSL), one worker each on CPU 0, the client on CPU 1. wrk rows: req/s and server CPU per request (wrk resumes the session of each new connection: the connection-per-request row is resumed handshakes); s_time rows: one client connecting in a loop (its rate is the client's, no latency figures), server CPU per connection (handshake, one small page, close).\n"
    );
    crate::bench::server_tables(rows, md);
}
