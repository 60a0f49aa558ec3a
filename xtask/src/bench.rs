//! `cargo xtask bench`: httpd against Debian's nginx on the same corpus, each pinned to CPU 0,
//! wrk pinned to CPU 1. Every response is checked (status and length) in wrk's Lua hook, so a
//! broken server cannot look fast. Server CPU per request comes from the server's own
//! /proc/PID/stat (utime + stime of every process of the server).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd;

pub(crate) const HTTPD_PORT: u16 = 18_081;
pub(crate) const NGINX_PORT: u16 = 18_082;
pub(crate) const BACKEND_PORT: u16 = 18_083;
const SMALL_FILES: usize = 1000;

#[derive(Clone)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// Paths requested (cycled, or at random), with their expected lengths.
    pub(crate) paths: Vec<(String, usize)>,
    pub(crate) connections: u32,
    pub(crate) close: bool,
    /// Misses forwarded to the backend (an nginx `return 200`), compared with nginx proxy_pass.
    pub(crate) upstream: bool,
    /// httpd runs with `--ebpf on` (the sk_msg fast path to the backend; root only).
    pub(crate) ebpf: bool,
    /// Check each body in Lua (small files). Large bodies are checked by total bytes instead:
    /// copying 64 MiB bodies into Lua strings would make wrk the bottleneck.
    pub(crate) check_bodies: bool,
    /// Each request picks a path at random (seeded: the same sequence for every server)
    /// instead of cycling through them.
    pub(crate) random: bool,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Measure {
    pub(crate) requests: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) seconds: f64,
    pub(crate) cpu_us: f64,
    /// The user-mode part of `cpu_us`.
    pub(crate) user_us: f64,
}

impl Measure {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    pub(crate) fn mibs(&self) -> f64 {
        self.bytes as f64 / self.seconds / (1024.0 * 1024.0)
    }
    pub(crate) fn cpu_per_req(&self) -> f64 {
        self.cpu_us / self.requests.max(1) as f64
    }
    fn user_per_req(&self) -> f64 {
        self.user_us / self.requests.max(1) as f64
    }
}

pub(crate) fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The corpus: 1,000 small files (100 B to 16 KiB), 1 MiB, 64 MiB.
fn corpus(dir: &Path) -> Result<Vec<(String, usize)>> {
    let mut files = Vec::new();
    let mut r = rng(42);
    std::fs::create_dir_all(dir.join("small"))?;
    for i in 0..SMALL_FILES {
        let len = 100 + (r() % (16 * 1024 - 100)) as usize;
        let body: Vec<u8> = (0..len).map(|_| b'a' + (r() % 26) as u8).collect();
        let name = format!("small/f{i:04}.html");
        std::fs::write(dir.join(&name), body)?;
        files.push((format!("/{name}"), len));
    }
    for (name, len) in [("1m.bin", 1usize << 20), ("64m.bin", 64 << 20)] {
        let mut r = rng(len as u64);
        let body: Vec<u8> = (0..len / 8).flat_map(|_| r().to_le_bytes()).collect();
        std::fs::write(dir.join(name), body)?;
        files.push((format!("/{name}"), len));
    }
    Ok(files)
}

/// The wrk script of `s`: requests its paths, checks every response.
pub(crate) fn lua(s: &Scenario) -> String {
    let mut paths = String::new();
    let mut lens = String::new();
    for (p, l) in &s.paths {
        let _ = write!(paths, "\"{p}\",");
        let _ = write!(lens, "[{l}]=true,");
    }
    let close = if s.close {
        "wrk.headers[\"Connection\"] = \"close\""
    } else {
        ""
    };
    let response = if s.check_bodies {
        r#"function response(status, headers, body)
  checked = checked + 1
  bytes = bytes + #body
  local cl = tonumber(headers["Content-Length"] or headers["content-length"] or -1)
  if status ~= 200 or cl ~= #body or not lens[#body] then bad = bad + 1 end
end"#
    } else {
        ""
    };
    let minlen = s.paths.iter().map(|(_, l)| *l).min().unwrap_or(0);
    // Random order: seeded in each thread, so every server gets the same sequence.
    let (seed, next) = if s.random {
        ("math.randomseed(42)", "idx = math.random(#paths)")
    } else {
        ("", "idx = idx % #paths + 1")
    };
    format!(
        r#"
local paths = {{{paths}}}
local lens = {{{lens}}}
{close}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  {seed}
  idx = math.random(#paths)
  bad = 0
  checked = 0
  bytes = 0
end
function request()
  {next}
  return wrk.format("GET", paths[idx])
end
{response}
function done(summary, latency, requests)
  local b, c, by = 0, 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    c = c + t:get("checked")
    by = by + t:get("bytes")
  end
  if c == 0 then
    -- Bodies not checked one by one: every response must have carried its full length.
    c = summary.requests
    by = summary.bytes
    if summary.bytes < summary.requests * {minlen} then b = b + 1 end
  end
  b = b + summary.errors.status + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d bytes=%d errors=%d checked=%d p50=%f p99=%f duration=%d\n",
    summary.requests, by, b, c, latency:percentile(50), latency:percentile(99), summary.duration))
end
"#
    )
}

/// Clock ticks per second, the unit of /proc CPU times.
pub(crate) fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

pub(crate) fn cpu_ticks(pids: &[u32]) -> u64 {
    let (user, system) = cpu_split(pids);
    user + system
}

/// User and system clock ticks of `pids` (utime and stime of /proc/PID/stat).
pub(crate) fn cpu_split(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((
                f.get(11)?.parse::<u64>().ok()?,
                f.get(12)?.parse::<u64>().ok()?,
            ))
        })
        .fold((0, 0), |(u, s), (a, b)| (u + a, s + b))
}

pub(crate) fn pids_of(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    if let Ok(o) = Command::new("pgrep")
        .args(["-P", &root.to_string()])
        .output()
    {
        pids.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok()),
        );
    }
    pids
}

pub(crate) fn run_wrk(
    port: u16,
    s: &Scenario,
    script: &Path,
    seconds: u32,
    server: u32,
) -> Result<Measure> {
    run_wrk_url(
        &format!("http://127.0.0.1:{port}/"),
        s,
        script,
        seconds,
        server,
    )
}

/// [`run_wrk`] against a URL (https for the TLS rows).
pub(crate) fn run_wrk_url(
    url: &str,
    s: &Scenario,
    script: &Path,
    seconds: u32,
    server: u32,
) -> Result<Measure> {
    let pids = pids_of(server);
    let hz = clock_ticks_per_sec();
    let before = cpu_split(&pids);
    let started = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{}", s.connections))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "--timeout", "30s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("run wrk")?;
    let _elapsed = started.elapsed();
    let after = cpu_split(&pids);
    let user = after.0.saturating_sub(before.0) as f64 / hz * 1e6;
    let cpu = user + after.1.saturating_sub(before.1) as f64 / hz * 1e6;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .with_context(|| {
            format!(
                "wrk printed no result: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let mut m = Measure {
        cpu_us: cpu,
        user_us: user,
        ..Measure::default()
    };
    let mut duration_us = 0f64;
    for kv in line["RESULT ".len()..].split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "0"));
        let v: f64 = v.parse().unwrap_or(0.0);
        match k {
            "requests" => m.requests = v as u64,
            "bytes" => m.bytes = v as u64,
            "errors" => m.errors = v as u64,
            "p50" => m.p50_us = v,
            "p99" => m.p99_us = v,
            "duration" => duration_us = v,
            _ => {}
        }
    }
    m.seconds = duration_us / 1e6;
    Ok(m)
}

pub(crate) fn wait_port(port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_httpd(
    bin: &Path,
    vhosts: &Path,
    io: &str,
    ebpf: bool,
    extra: &[&str],
) -> Result<Server> {
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin.join("httpd"))
        .args([
            "--listen",
            &format!("127.0.0.1:{HTTPD_PORT}"),
            "--workers",
            "1",
            "--ebpf",
            if ebpf { "on" } else { "off" },
            "--io",
            io,
        ])
        .args(["--upstream", &format!("127.0.0.1:{BACKEND_PORT}")])
        .args(extra)
        .arg(vhosts)
        .stderr(std::fs::File::create(vhosts.with_file_name("httpd.log"))?)
        .spawn()
        .context("start httpd")?;
    let s = Server(child);
    wait_port(HTTPD_PORT)?;
    Ok(s)
}

/// A scenario's figures: httpd, nginx, and the floor proxy where it ran.
pub(crate) type Row = (&'static str, Measure, Measure, Option<Measure>);

/// The floor proxy (`tests/src/bin/floor_proxy.rs`) on httpd's port, pinned like the servers.
fn run_floor(bin: &Path, s: &Scenario, script: &Path, seconds: u32) -> Result<Measure> {
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin.join("floor_proxy"))
        .arg(format!("127.0.0.1:{HTTPD_PORT}"))
        .arg(format!("127.0.0.1:{BACKEND_PORT}"))
        .spawn()
        .context("start floor_proxy")?;
    let srv = Server(child);
    wait_port(HTTPD_PORT)?;
    let pid = srv.0.id();
    run_wrk(HTTPD_PORT, s, script, 1, pid)?;
    run_wrk(HTTPD_PORT, s, script, seconds, pid)
}

/// What an nginx instance of the benchmark does.
pub(crate) enum NginxRole {
    /// Static files from the corpus.
    Static,
    /// Static files, with `aio threads` (reads and sendfile in nginx's default thread pool).
    StaticAioThreads,
    /// Static files, misses to the backend with proxy_pass and upstream keepalive.
    Proxy,
    /// The small fast app server behind both proxies.
    Backend,
    /// Everything to the backend, Upgrade tunnels included.
    Tunnel,
    /// Static files over HTTPS with the certificate pair in this directory
    /// (`__default__.crt/.key`), session cache and tickets on.
    StaticTls(PathBuf),
}

pub(crate) fn start_nginx(dir: &Path, root: &Path, role: NginxRole) -> Result<Server> {
    let ssl = if matches!(role, NginxRole::StaticTls(_)) {
        " ssl"
    } else {
        ""
    };
    let (name, port, server) = match role {
        NginxRole::StaticTls(certs) => (
            "tls",
            NGINX_PORT,
            format!(
                "root {};\n        ssl_certificate {certs}/__default__.crt;\n        ssl_certificate_key {certs}/__default__.key;\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;\n        ssl_session_tickets on;",
                root.display(),
                certs = certs.display()
            ),
        ),
        NginxRole::Static => ("static", NGINX_PORT, format!("root {};", root.display())),
        NginxRole::StaticAioThreads => (
            "static-aio",
            NGINX_PORT,
            format!("root {};\n        aio threads;", root.display()),
        ),
        NginxRole::Proxy => (
            "proxy",
            NGINX_PORT,
            format!(
                "root {};\n        location / {{ try_files $uri @app; }}\n        location @app {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; }}",
                root.display()
            ),
        ),
        NginxRole::Tunnel => (
            "tunnel",
            NGINX_PORT,
            "location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; proxy_read_timeout 300s; }".to_string(),
        ),
        NginxRole::Backend => (
            "backend",
            BACKEND_PORT,
            format!(
                "location /api/ping {{ return 200 \"pong\\n\"; }}\n        location /api/1m {{ alias {}/1m.bin; }}",
                root.display()
            ),
        ),
    };
    let conf = dir.join(format!("nginx-{name}.conf"));
    let tmp = dir.join(format!("nginx-{name}-tmp"));
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(
        &conf,
        format!(
            r#"worker_processes 1;
daemon off;
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    types {{ text/html html; application/octet-stream bin; }}
    upstream app {{ server 127.0.0.1:{BACKEND_PORT}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port}{ssl} reuseport;
        {server}
    }}
}}
"#,
            dir = dir.display(),
            tmp = tmp.display(),
        ),
    )?;
    let child = Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx")?;
    let s = Server(child);
    wait_port(port)?;
    Ok(s)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpu}, {} CPUs, Linux {kernel}, {nginx}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

pub fn bench(
    seconds: u32,
    output: Option<&Path>,
    only: Option<&str>,
    io: &str,
    no_build: bool,
) -> Result<()> {
    for tool in ["wrk", "nginx", "taskset"] {
        if !cmd::on_path(tool) && !Path::new("/usr/sbin").join(tool).exists() {
            bail!("{tool} not installed: run `cargo xtask setup`");
        }
    }
    if !no_build {
        crate::build()?;
    }
    let root = cmd::root();
    let bin = root.join("target/release");
    let work: PathBuf = root.join("target/bench");
    let src = work.join("corpus");
    let _ = std::fs::remove_dir_all(&src);
    let files = corpus(&src)?;
    let vhosts = work.join("vhosts");
    std::fs::create_dir_all(&vhosts)?;
    cmd::run(
        Command::new(bin.join("mkroot"))
            .arg("--no-compress")
            .arg(&src)
            .arg(vhosts.join("__default__")),
    )?;
    let small: Vec<(String, usize)> = files[..SMALL_FILES].to_vec();
    let one = vec![small[0].clone()];
    let scenarios = [
        Scenario {
            name: "small file, 64 keep-alive conns",
            paths: one.clone(),
            connections: 64,
            close: false,
            upstream: false,
            ebpf: false,
            check_bodies: true,
            random: false,
        },
        Scenario {
            name: "1,000 distinct files, 64 conns",
            paths: small.clone(),
            connections: 64,
            close: false,
            upstream: false,
            ebpf: false,
            check_bodies: true,
            random: false,
        },
        Scenario {
            name: "1 MiB file, 8 conns",
            paths: vec![files[SMALL_FILES].clone()],
            connections: 8,
            close: false,
            upstream: false,
            ebpf: false,
            check_bodies: false,
            random: false,
        },
        Scenario {
            name: "64 MiB file, 2 conns",
            paths: vec![files[SMALL_FILES + 1].clone()],
            connections: 2,
            close: false,
            upstream: false,
            ebpf: false,
            check_bodies: false,
            random: false,
        },
        Scenario {
            name: "connection per request, small file",
            paths: one,
            connections: 16,
            close: true,
            upstream: false,
            ebpf: false,
            check_bodies: true,
            random: false,
        },
        Scenario {
            name: "forwarded small response, 64 conns",
            paths: vec![("/api/ping".to_string(), 5)],
            connections: 64,
            close: false,
            upstream: true,
            ebpf: false,
            check_bodies: true,
            random: false,
        },
        Scenario {
            name: "forwarded 1 MiB response, 8 conns",
            paths: vec![("/api/1m".to_string(), 1 << 20)],
            connections: 8,
            close: false,
            upstream: true,
            ebpf: false,
            check_bodies: false,
            random: false,
        },
    ];
    // The same forwarding scenarios with the eBPF fast path on (root only).
    let mut scenarios = scenarios.to_vec();
    if cmd::is_root() {
        for s in scenarios.clone().iter().filter(|s| s.upstream) {
            let mut e = s.clone();
            e.name = if s.name.starts_with("forwarded small") {
                "forwarded small response, eBPF fast path"
            } else {
                "forwarded 1 MiB response, eBPF fast path"
            };
            e.ebpf = true;
            scenarios.push(e);
        }
    }
    let mut rows = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        if only.is_some_and(|o| !s.name.contains(o)) {
            continue;
        }
        let script = work.join(format!("scenario{i}.lua"));
        std::fs::write(&script, lua(s))?;
        // The backend, pinned with the servers, for forwarding scenarios.
        let _backend = if s.upstream {
            Some(start_nginx(&work, &src, NginxRole::Backend)?)
        } else {
            None
        };
        let h = {
            let _srv = start_httpd(&bin, &vhosts, io, s.ebpf, &[])?;
            let srv_pid = _srv.0.id();
            // Warm up, then measure.
            run_wrk(HTTPD_PORT, s, &script, 1, srv_pid)?;
            run_wrk(HTTPD_PORT, s, &script, seconds, srv_pid)?
        };
        let n = {
            let role = if s.upstream {
                NginxRole::Proxy
            } else {
                NginxRole::Static
            };
            let _srv = start_nginx(&work, &src, role)?;
            let srv_pid = _srv.0.id();
            run_wrk(NGINX_PORT, s, &script, 1, srv_pid)?;
            run_wrk(NGINX_PORT, s, &script, seconds, srv_pid)?
        };
        // The small forwarded response also through the floor proxy (bytes copied, nothing
        // else), for user time against what a proxy cannot go below.
        let floor = if s.upstream && !s.ebpf && s.name.starts_with("forwarded small") {
            Some(run_floor(&bin, s, &script, seconds)?)
        } else {
            None
        };
        eprintln!(
            "xtask bench: {}: httpd {:.0} req/s {:.1} us/req ({:.2} user), nginx {:.0} req/s {:.1} us/req ({:.2} user){}",
            s.name,
            h.rps(),
            h.cpu_per_req(),
            h.user_per_req(),
            n.rps(),
            n.cpu_per_req(),
            n.user_per_req(),
            floor.as_ref().map_or(String::new(), |f| format!(
                ", floor proxy {:.0} req/s {:.1} us/req ({:.2} user)",
                f.rps(),
                f.cpu_per_req(),
                f.user_per_req()
            ))
        );
        rows.push((s.name, h, n, floor));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run of `cargo xtask bench --seconds {seconds}` on {}.",
        machine()
    );
    let _ = writeln!(
        md,
        "Date: {}. Server pinned to CPU 0, wrk (1 thread) to CPU 1; httpd `--workers 1 --io {io}`, nginx 1 worker with sendfile, open_file_cache, access log off. Forwarding scenarios: the backend is a third nginx (`return 200`, and the 1 MiB file) pinned to CPU 0 with the server; nginx proxies with `proxy_pass` and upstream keepalive; CPU is the proxy's own. Every response checked (status, length).\n",
        today()
    );
    // Only sections that ran: `--only cold` or `--only tunnel` leave these tables empty.
    if !rows.is_empty() {
        server_tables(&rows, &mut md);
    }
    if only.is_some_and(|o| o.contains("tls")) {
        let tls = crate::tls_bench::run(&bin, &work, &src, &vhosts, &files, seconds)?;
        crate::tls_bench::markdown(&tls, &mut md);
        let errors: u64 = tls.iter().map(|(_, h, n, _)| h.errors + n.errors).sum();
        if errors > 0 {
            bail!("{errors} TLS responses failed the check");
        }
    }
    if only.is_none_or(|o| o.contains("tunnel")) {
        let tunnels = crate::tunnel_bench::run(&bin, &work, &vhosts, seconds)?;
        crate::tunnel_bench::markdown(&tunnels, &mut md);
    }
    let cold = crate::cold_bench::run(&bin, &work, seconds, only)?;
    crate::cold_bench::markdown(&cold, &mut md);
    println!("{md}");
    if let Some(out) = output {
        std::fs::write(out, &md).with_context(|| format!("write {}", out.display()))?;
    }
    let errors: u64 = rows
        .iter()
        .map(|(_, h, n, f)| h.errors + n.errors + f.as_ref().map_or(0, |f| f.errors))
        .sum::<u64>()
        + cold.errors();
    if errors > 0 {
        bail!("{errors} responses failed the check");
    }
    Ok(())
}

/// The httpd-against-nginx table and its ratios.
pub(crate) fn server_tables(rows: &[Row], md: &mut String) {
    let _ = writeln!(
        md,
        "| scenario | server | req/s | MiB/s | p50 ms | p99 ms | CPU us/req | user us/req | errors |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, h, n, floor) in rows {
        let floor = floor.as_ref().map(|f| ("floor proxy", f));
        for (who, m) in [("httpd", h), ("nginx", n)].into_iter().chain(floor) {
            let _ = writeln!(
                md,
                "| {name} | {who} | {:.0} | {:.1} | {:.3} | {:.3} | {:.1} | {:.2} | {} |",
                m.rps(),
                m.mibs(),
                m.p50_us / 1000.0,
                m.p99_us / 1000.0,
                m.cpu_per_req(),
                m.user_per_req(),
                m.errors
            );
        }
    }
    let _ = writeln!(
        md,
        "\nRatios (httpd / nginx): CPU per request (lower is better), throughput and p99 latency.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | CPU/req ratio | req/s ratio | MiB/s ratio | p99 ratio |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (name, h, n, _) in rows {
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            h.cpu_per_req() / n.cpu_per_req().max(1e-9),
            h.rps() / n.rps().max(1e-9),
            h.mibs() / n.mibs().max(1e-9),
            h.p99_us / n.p99_us.max(1e-9)
        );
    }
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A tree of `n` files of `min..max` bytes, a third of them text (compressible).
fn scale_tree(dir: &Path, n: usize, min: usize, max: usize) -> Result<u64> {
    let mut r = rng(n as u64);
    let mut total = 0u64;
    for i in 0..n {
        let sub = dir.join(format!("d{:03}", i % 512));
        if i < 512 {
            std::fs::create_dir_all(&sub)?;
        }
        let len = min + (r() % (max - min + 1) as u64) as usize;
        let text = i % 3 == 0;
        let body: Vec<u8> = if text {
            (0..len)
                .map(|_| b"etaoin shrdlu\n<>/"[(r() % 17) as usize])
                .collect()
        } else {
            (0..len.div_ceil(8))
                .flat_map(|_| r().to_le_bytes())
                .take(len)
                .collect()
        };
        let ext = if text { "html" } else { "bin" };
        std::fs::write(sub.join(format!("f{i}.{ext}")), body)?;
        total += len as u64;
    }
    Ok(total)
}

/// `cargo xtask bench --mkroot-scale`: mkroot time and MB/s on a 100,000-file tree and a 1 GiB
/// tree, and lookup cost against object count.
pub fn mkroot_scale(output: Option<&Path>) -> Result<()> {
    cmd::cargo(&["build", "--release", "-p", "mkroot"])?;
    let root = cmd::root();
    let work = root.join("target/bench-scale");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut md = String::new();
    let _ = writeln!(md, "mkroot scale on {} ({}):\n", machine(), today());
    let _ = writeln!(
        md,
        "| tree | files | MiB in | webroot MiB | seconds | MB/s in |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (name, n, min, max) in [
        ("100,000 small files", 100_000usize, 100usize, 4096usize),
        ("1 GiB, 256 files of 2-6 MiB", 256, 2 << 20, 6 << 20),
    ] {
        let src = work.join("src");
        let _ = std::fs::remove_dir_all(&src);
        let bytes = scale_tree(&src, n, min, max)?;
        let out = work.join("scale.webroot");
        // Write the fresh tree back first, so its writeback does not land in mkroot's time.
        cmd::run(&mut Command::new("sync"))?;
        let t = Instant::now();
        cmd::run(
            Command::new(root.join("target/release/mkroot"))
                .arg(&src)
                .arg(&out),
        )?;
        let secs = t.elapsed().as_secs_f64();
        let out_len = std::fs::metadata(&out)?.len();
        let _ = writeln!(
            md,
            "| {name} | {n} | {:.0} | {:.0} | {secs:.1} | {:.0} |",
            bytes as f64 / 1048576.0,
            out_len as f64 / 1048576.0,
            bytes as f64 / 1e6 / secs
        );
        let _ = std::fs::remove_dir_all(&src);
        let _ = std::fs::remove_file(&out);
    }
    let o = Command::new(cmd::cargo_program())
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "httpd-common",
            "--example",
            "lookup_scale",
        ])
        .current_dir(&root)
        .output()
        .context("run lookup_scale")?;
    if !o.status.success() {
        bail!(
            "lookup_scale failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = writeln!(
        md,
        "\nWebroot lookup cost against object count (1M random hits, 1M misses):\n"
    );
    md.push_str(&String::from_utf8_lossy(&o.stdout));
    println!("{md}");
    if let Some(out) = output {
        std::fs::write(out, &md)?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
