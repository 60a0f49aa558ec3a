//! Cold rows of `cargo xtask bench`: does one cold disk read stall a server's worker?
//!
//! Each server runs one worker on CPU 0, its processes in a cgroup that reads the corpus's
//! disk at 24 MiB/s and 300 reads/s at most (a slow network disk; see disk.rs). Phase A: wrk
//! -c16 on a hot 1 KiB file alone. Phase B: the page cache of the served files is dropped,
//! then the same hot wrk runs together with a cold wrk (-c4) downloading files that must come
//! from the disk. A server whose worker blocks on the disk serves the hot file only between
//! reads: its hot req/s falls and its hot p99 rises to the time of one read.
//!
//! Two shapes: "cold-big", 24 files of 32 MiB (long sequential reads), and "cold-many", 100,000
//! files of 4-16 KiB hit at random (a read per request). Bodies are random bytes with a type
//! mkroot does not precompress, so every byte of a cold response is read from the disk.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};

use crate::bench::{
    HTTPD_PORT, Measure, NGINX_PORT, NginxRole, Scenario, Server, lua, pids_of, rng, run_wrk,
    start_httpd, start_nginx,
};
use crate::cmd;
use crate::disk::{self, READ_BPS, READ_IOPS, Throttle};

/// httpd's I/O models measured, in table order. A model the binary does not offer (its
/// `--help` does not list it) is skipped with a note, so a model being written can be listed
/// before it exists.
const HTTPD_IO: &[&str] = &["async-sendfile", "sendfile"];

/// The shapes, by the name `--only` matches (`--only cold` runs both).
const SHAPES: [&str; 2] = ["cold-big", "cold-many"];

const HOT_LEN: usize = 1024;
const HOT_CONNS: u32 = 16;
const COLD_CONNS: u32 = 4;
const BIG_FILES: usize = 24;
const BIG_LEN: usize = 32 << 20;
const MANY_FILES: usize = 100_000;
/// Spread over subdirectories as a real site would be (and no directory of 100,000 entries).
const MANY_DIRS: usize = 256;
const MANY_MIN: usize = 4 << 10;
const MANY_MAX: usize = 16 << 10;
/// Above this share of the page cache of the cold files left after the drop, the cold phase
/// is not cold: said loudly and in the report.
const MAX_CACHED_SHARE: f64 = 0.01;
/// Rounds of phase A then B per server: a 2-CPU machine's req/s moves by 10-20% from one run
/// to the next, so one round decides nothing. The median round is reported.
const ROUNDS: usize = 3;

#[derive(Clone, Copy)]
enum Contender {
    Httpd(&'static str),
    Nginx { aio_threads: bool },
}

impl Contender {
    fn label(self) -> String {
        match self {
            Contender::Httpd(io) => format!("httpd --io {io}"),
            Contender::Nginx { aio_threads: false } => "nginx sendfile".into(),
            Contender::Nginx { aio_threads: true } => "nginx sendfile + aio threads".into(),
        }
    }
}

/// One shape's corpus, webroot and requests.
struct Shape {
    name: &'static str,
    /// What the cold clients download, for the report.
    what: String,
    dir: PathBuf,
    src: PathBuf,
    vhosts: PathBuf,
    hot: (String, usize),
    cold: Vec<(String, usize)>,
    random: bool,
    /// Time spent writing the corpus, compiling it with mkroot, and syncing.
    build: String,
}

impl Shape {
    fn webroot(&self) -> PathBuf {
        self.vhosts.join("__default__")
    }

    fn cold_sources(&self) -> Vec<PathBuf> {
        self.cold
            .iter()
            .map(|(p, _)| self.src.join(p.trim_start_matches('/')))
            .collect()
    }

    /// The files whose page cache a cold phase drops: what the server reads the cold bodies
    /// from (httpd's webroot, nginx's source files).
    fn served_files(&self, c: Contender) -> Vec<PathBuf> {
        match c {
            Contender::Httpd(_) => vec![self.webroot()],
            Contender::Nginx { .. } => self.cold_sources(),
        }
    }

    fn hot_scenario(&self) -> Scenario {
        scenario(vec![self.hot.clone()], HOT_CONNS, true, false)
    }

    fn cold_scenario(&self) -> Scenario {
        // cold-many (the random shape) has small bodies, checked one by one; cold-big's 32 MiB
        // bodies are checked by total bytes (see Scenario::check_bodies).
        let small = self.random;
        scenario(self.cold.clone(), COLD_CONNS, small, self.random)
    }
}

fn scenario(paths: Vec<(String, usize)>, conns: u32, check: bool, random: bool) -> Scenario {
    Scenario {
        name: "cold",
        paths,
        connections: conns,
        close: false,
        upstream: false,
        ebpf: false,
        check_bodies: check,
        random,
    }
}

/// One server's measures in one shape.
struct Row {
    server: String,
    alone: Measure,
    during: Measure,
    cold: Measure,
    /// Bytes the servers' cgroup read from the disk during phase B.
    disk_bytes: u64,
    /// Page cache of the served files right after the drop: (cached, total) bytes.
    cached: (u64, u64),
    /// Time the server's event-loop threads waited for the disk in phase B, in ms (None
    /// without delay accounting).
    loop_wait_ms: Option<f64>,
    /// Every round's ratio, in the order run (this row is the median round's).
    ratios: Vec<f64>,
}

struct ShapeResult {
    name: &'static str,
    what: String,
    build: String,
    rows: Vec<Row>,
}

/// Everything the cold rows report.
#[derive(Default)]
pub(crate) struct Section {
    /// Why the cold rows did not run (no throttle), when they did not.
    skipped: Option<String>,
    /// The throttled disk, "MAJ:MIN".
    disk: String,
    /// Its readahead: how much one cold read brings in (mmap faults read around this much).
    read_ahead_kb: Option<u64>,
    shapes: Vec<ShapeResult>,
    notes: Vec<String>,
}

impl Section {
    pub(crate) fn errors(&self) -> u64 {
        self.shapes
            .iter()
            .flat_map(|s| &s.rows)
            .map(|r| r.alone.errors + r.during.errors + r.cold.errors)
            .sum()
    }
}

/// Runs the shapes `only` selects (all without it); skips, saying why, when the disk cannot be
/// throttled.
pub(crate) fn run(bin: &Path, work: &Path, seconds: u32, only: Option<&str>) -> Result<Section> {
    let mut section = Section::default();
    let names: Vec<&'static str> = SHAPES
        .into_iter()
        .filter(|n| only.is_none_or(|o| n.contains(o)))
        .collect();
    if names.is_empty() {
        return Ok(section);
    }
    let dir = work.join("cold");
    std::fs::create_dir_all(&dir)?;
    let throttle = match disk::disk_of(&dir).and_then(|d| Ok((Throttle::new(&d)?, d))) {
        Ok((t, d)) => {
            section.read_ahead_kb = disk::read_ahead_kb(&d);
            section.disk = d;
            t
        }
        Err(e) => {
            eprintln!("xtask bench: cold: cannot throttle the disk, skipping: {e:#}");
            section.skipped = Some(format!("{e:#}"));
            return Ok(section);
        }
    };
    eprintln!(
        "xtask bench: cold: servers throttled to {} MiB/s and {READ_IOPS} reads/s on {} ({})",
        READ_BPS >> 20,
        section.disk,
        throttle.path().display()
    );
    // Delay accounting shows directly whether a server's event loop waited for the disk.
    let acct = match disk::DelayAcct::on() {
        Ok(a) => Some(a),
        Err(e) => {
            let note = format!("no delay accounting ({e:#}): loop waits not measured");
            eprintln!("xtask bench: cold: {note}");
            section.notes.push(note);
            None
        }
    };
    let contenders = contenders(bin, &mut section.notes)?;
    for name in names {
        let shape = prepare(name, &dir, bin, seconds, &mut section.notes)?;
        let mut rows = Vec::new();
        for c in &contenders {
            rows.push(measure(
                *c,
                &shape,
                bin,
                &throttle,
                seconds,
                acct.is_some(),
                &mut section.notes,
            )?);
        }
        // 1-2 GiB per shape, regenerated by every run like the main corpus: not kept.
        std::fs::remove_dir_all(&shape.dir)
            .with_context(|| format!("remove {}", shape.dir.display()))?;
        section.shapes.push(ShapeResult {
            name: shape.name,
            what: shape.what,
            build: shape.build,
            rows,
        });
    }
    Ok(section)
}

/// The servers to measure: the httpd models this build offers, then nginx without and with a
/// thread pool.
fn contenders(bin: &Path, notes: &mut Vec<String>) -> Result<Vec<Contender>> {
    let help = Command::new(bin.join("httpd"))
        .arg("--help")
        .output()
        .context("run httpd --help")?;
    let help = String::from_utf8_lossy(&help.stdout);
    let mut v = Vec::new();
    for &io in HTTPD_IO {
        let offered = help
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("- {io}:")));
        if offered {
            v.push(Contender::Httpd(io));
        } else {
            let note = format!("httpd `--io {io}`: not offered by this build, row skipped");
            eprintln!("xtask bench: cold: {note}");
            notes.push(note);
        }
    }
    v.push(Contender::Nginx { aio_threads: false });
    v.push(Contender::Nginx { aio_threads: true });
    Ok(v)
}

/// Writes the shape's corpus and webroot (fresh every run), timed.
fn prepare(
    name: &'static str,
    dir: &Path,
    bin: &Path,
    seconds: u32,
    notes: &mut Vec<String>,
) -> Result<Shape> {
    let root = dir.join(name);
    let _ = std::fs::remove_dir_all(&root);
    let src = root.join("corpus");
    let vhosts = root.join("vhosts");
    std::fs::create_dir_all(&src)?;
    std::fs::create_dir_all(&vhosts)?;
    let t = Instant::now();
    let hot = write_hot(&src)?;
    let (cold, random, what) = if name == "cold-big" {
        let what = format!(
            "{BIG_FILES} files of {} MiB, cycled, each connection starting at a different file",
            BIG_LEN >> 20
        );
        (write_big(&src)?, false, what)
    } else {
        let what = format!(
            "{MANY_FILES} files of {}-{} KiB in {MANY_DIRS} directories, at random (seeded)",
            MANY_MIN >> 10,
            MANY_MAX >> 10
        );
        (write_many(&src)?, true, what)
    };
    let written = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // --no-compress as in the main corpus; the bodies are random anyway, so no variant would
    // be kept and every byte of a cold response is on the disk.
    cmd::run(
        Command::new(bin.join("mkroot"))
            .arg("--no-compress")
            .arg(&src)
            .arg(vhosts.join("__default__")),
    )?;
    let compiled = t.elapsed().as_secs_f64();
    // POSIX_FADV_DONTNEED leaves dirty pages: everything written must reach the disk first.
    let t = Instant::now();
    cmd::run(&mut Command::new("sync"))?;
    let synced = t.elapsed().as_secs_f64();
    let bytes: u64 = cold.iter().map(|(_, l)| *l as u64).sum();
    let build = format!(
        "Corpus ({} MiB) written in {written:.1} s, mkroot {compiled:.1} s, sync {synced:.1} s.",
        bytes >> 20
    );
    eprintln!("xtask bench: {name}: {build}");
    // A phase that could read much of the corpus would find the rest of it cached by its own
    // earlier reads (cold) or by chance (cold-many): no longer a cold read per request.
    if READ_BPS * u64::from(seconds) > bytes / 2 {
        let note = format!(
            "{name}: {seconds} s at {} MiB/s reads over half of the {} MiB corpus: later requests may hit the cache",
            READ_BPS >> 20,
            bytes >> 20
        );
        eprintln!("xtask bench: warning: {note}");
        notes.push(note);
    }
    Ok(Shape {
        name,
        what,
        dir: root,
        src,
        vhosts,
        hot,
        cold,
        random,
        build,
    })
}

/// Random bytes from the kernel: incompressible, and fast even in xtask's debug build (a Rust
/// generator byte by byte is not). The content need not be reproducible; the request order is.
fn random_bytes(urandom: &mut File, buf: &mut [u8]) -> Result<()> {
    urandom.read_exact(buf).context("read /dev/urandom")
}

fn write_hot(src: &Path) -> Result<(String, usize)> {
    let mut r = rng(7);
    let body: Vec<u8> = (0..HOT_LEN).map(|_| b'a' + (r() % 26) as u8).collect();
    std::fs::write(src.join("hot.html"), body)?;
    Ok(("/hot.html".to_string(), HOT_LEN))
}

fn write_big(src: &Path) -> Result<Vec<(String, usize)>> {
    let mut urandom = File::open("/dev/urandom")?;
    let mut buf = vec![0u8; BIG_LEN];
    std::fs::create_dir_all(src.join("big"))?;
    let mut files = Vec::new();
    for i in 0..BIG_FILES {
        random_bytes(&mut urandom, &mut buf)?;
        let name = format!("big/b{i:02}.bin");
        std::fs::write(src.join(&name), &buf)?;
        files.push((format!("/{name}"), BIG_LEN));
    }
    Ok(files)
}

fn write_many(src: &Path) -> Result<Vec<(String, usize)>> {
    let mut urandom = File::open("/dev/urandom")?;
    let mut buf = vec![0u8; MANY_MAX];
    let mut r = rng(MANY_FILES as u64);
    for d in 0..MANY_DIRS {
        std::fs::create_dir_all(src.join(format!("d{d:03}")))?;
    }
    let mut files = Vec::with_capacity(MANY_FILES);
    for i in 0..MANY_FILES {
        let len = MANY_MIN + (r() % (MANY_MAX - MANY_MIN + 1) as u64) as usize;
        random_bytes(&mut urandom, &mut buf[..len])?;
        let name = format!("d{:03}/f{i:06}.bin", i % MANY_DIRS);
        std::fs::write(src.join(&name), &buf[..len])?;
        files.push((format!("/{name}"), len));
    }
    Ok(files)
}

fn start(c: Contender, shape: &Shape, bin: &Path) -> Result<(Server, u16)> {
    Ok(match c {
        Contender::Httpd(io) => (start_httpd(bin, &shape.vhosts, io, false, &[])?, HTTPD_PORT),
        Contender::Nginx { aio_threads } => {
            let role = if aio_threads {
                NginxRole::StaticAioThreads
            } else {
                NginxRole::Static
            };
            (start_nginx(&shape.dir, &shape.src, role)?, NGINX_PORT)
        }
    })
}

/// Phase A then phase B for one server.
fn measure(
    c: Contender,
    shape: &Shape,
    bin: &Path,
    throttle: &Throttle,
    seconds: u32,
    acct: bool,
    notes: &mut Vec<String>,
) -> Result<Row> {
    let hot_script = shape.dir.join("hot.lua");
    let cold_script = shape.dir.join("cold.lua");
    let (hot_s, cold_s) = (shape.hot_scenario(), shape.cold_scenario());
    std::fs::write(&hot_script, lua(&hot_s))?;
    std::fs::write(&cold_script, lua(&cold_s))?;
    let (srv, port) = start(c, shape, bin)?;
    let pid = srv.0.id();
    // Warm the hot file (and let nginx fork its worker), then throttle every process.
    run_wrk(port, &hot_s, &hot_script, 1, pid)?;
    let pids = pids_of(pid);
    throttle.add(&pids)?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let alone = run_wrk(port, &hot_s, &hot_script, seconds, pid)?;
        let served = shape.served_files(c);
        disk::drop_cache(&served)?;
        // httpd's webroot holds the hot file too: bring it back, only the cold bodies stay out.
        fetch(port, &shape.hot.0)?;
        let cached = disk::cached_bytes(&served)?;
        check_cold(shape.name, c, cached, notes);
        let before = throttle.read_bytes()?;
        let waited = disk::loop_io_wait_ticks(&pids);
        let (during, cold) = hot_and_cold(
            port,
            pid,
            seconds,
            (&hot_s, &hot_script),
            (&cold_s, &cold_script),
        )?;
        let disk_bytes = throttle.read_bytes()?.saturating_sub(before);
        let loop_wait_ms = acct.then(|| {
            let ticks = disk::loop_io_wait_ticks(&pids).saturating_sub(waited);
            ticks as f64 * 1000.0 / crate::bench::clock_ticks_per_sec()
        });
        rounds.push(Row {
            server: c.label(),
            alone,
            during,
            cold,
            disk_bytes,
            cached,
            loop_wait_ms,
            ratios: Vec::new(),
        });
    }
    drop(srv);
    // The round of median ratio stands for the server; every round's ratio is reported.
    let ratios: Vec<f64> = rounds.iter().map(ratio).collect();
    rounds.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let mut row = rounds.swap_remove(rounds.len() / 2);
    row.ratios = ratios;
    progress(shape.name, &row, &pids);
    Ok(row)
}

/// Says loudly when the drop left much of the cold data cached (mapped or dirty pages).
fn check_cold(shape: &str, c: Contender, (cached, total): (u64, u64), notes: &mut Vec<String>) {
    if cached as f64 > total as f64 * MAX_CACHED_SHARE {
        let note = format!(
            "{shape}, {}: page cache drop incomplete, {:.1} of {:.1} MiB still cached",
            c.label(),
            mib(cached),
            mib(total)
        );
        eprintln!("xtask bench: warning: {note}");
        notes.push(note);
    }
}

/// The hot and the cold wrk at once, both on CPU 1 (the cold one mostly waits for the disk).
fn hot_and_cold(
    port: u16,
    pid: u32,
    seconds: u32,
    hot: (&Scenario, &Path),
    cold: (&Scenario, &Path),
) -> Result<(Measure, Measure)> {
    std::thread::scope(|sc| {
        let c = sc.spawn(|| run_wrk(port, cold.0, cold.1, seconds, pid));
        let h = run_wrk(port, hot.0, hot.1, seconds, pid);
        let c = c.join().map_err(|_| anyhow!("cold wrk thread panicked"))?;
        Ok((h?, c?))
    })
}

/// One GET with `Connection: close`, checked for a 200.
fn fetch(port: u16, path: &str) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    ensure!(
        resp.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {:?}",
        String::from_utf8_lossy(&resp[..resp.len().min(64)])
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn progress(shape: &str, r: &Row, pids: &[u32]) {
    eprintln!(
        "xtask bench: {shape}: {}: hot alone {:.0} req/s p99 {:.2} ms; during cold {:.0} req/s p50 {:.2} ms p99 {:.2} ms ({:.2}); cold {:.1} MiB/s, {} responses; disk {:.1} MiB by pids {pids:?}; cached after drop {:.1}/{:.1} MiB; loop waited on disk {:?} ms; ratios of the rounds {:.2?}",
        r.server,
        r.alone.rps(),
        r.alone.p99_us / 1000.0,
        r.during.rps(),
        r.during.p50_us / 1000.0,
        r.during.p99_us / 1000.0,
        ratio(r),
        r.cold.mibs(),
        r.cold.requests,
        mib(r.disk_bytes),
        mib(r.cached.0),
        mib(r.cached.1),
        r.loop_wait_ms,
        r.ratios
    );
}

fn ratio(r: &Row) -> f64 {
    r.during.rps() / r.alone.rps().max(1e-9)
}

/// Appends the cold section to the bench report.
pub(crate) fn markdown(s: &Section, md: &mut String) {
    if let Some(why) = &s.skipped {
        let _ = writeln!(md, "\nCold reads: skipped ({why}).");
        return;
    }
    if s.shapes.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nCold reads: does one cold disk read stall a server's worker? One worker per server on CPU 0, its processes in a cgroup reading the corpus's disk ({}, read_ahead_kb {}) at {} MiB/s and {READ_IOPS} reads/s at most. Hot: wrk -c{HOT_CONNS} on a {HOT_LEN}-byte file, alone, then during cold downloads (wrk -c{COLD_CONNS}) after the page cache of the served files was dropped (POSIX_FADV_DONTNEED; httpd's webroot, nginx's files). Ratio: hot req/s during / alone, {ROUNDS} rounds of both phases per server (the page cache dropped before each cold phase); the median round is shown. Loop waited on disk: the time the server's event-loop thread (httpd's worker, nginx's worker process) spent waiting for block I/O during the cold phase, from the kernel's delay accounting (`kernel.task_delayacct`; 10 ms resolution): cold-send and aio threads, which wait by design, not counted. nginx: sendfile, no aio, or `aio threads` (default pool).",
        s.disk,
        s.read_ahead_kb
            .map_or_else(|| "unknown".to_string(), |k| k.to_string()),
        READ_BPS >> 20
    );
    for shape in &s.shapes {
        shape_table(shape, md);
    }
    for n in &s.notes {
        let _ = writeln!(md, "\nNote: {n}.");
    }
}

fn shape_table(shape: &ShapeResult, md: &mut String) {
    let _ = writeln!(
        md,
        "\n**{}**: {}. {}\n",
        shape.name, shape.what, shape.build
    );
    let _ = writeln!(
        md,
        "| server | hot alone | hot during cold downloads | ratio (median of {ROUNDS}; all) | cold MiB/s | loop waited on disk |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|");
    for r in &shape.rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} req/s, p99 {:.2} ms | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | {:.2} ({}) | {:.1} | {} |",
            r.server,
            r.alone.rps(),
            r.alone.p99_us / 1000.0,
            r.during.rps(),
            r.during.p50_us / 1000.0,
            r.during.p99_us / 1000.0,
            ratio(r),
            r.ratios
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.cold.mibs(),
            r.loop_wait_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.0} ms"))
        );
    }
    // The throttle at work: what each server's processes asked of the disk in phase B. v1
    // blkio counts a read when it enters the throttle, so reads still queued at the end are
    // in it: it can exceed the limit times the duration by the readahead in flight.
    let _ = write!(
        md,
        "\nThrottle check, per server: reads the server's cgroup submitted to the throttled disk during the cold phase (queued ones included); page cache of the served files after the drop; cold responses completed."
    );
    for r in &shape.rows {
        let _ = write!(
            md,
            " {}: {:.1} MiB, {:.1}/{:.1} MiB cached, {} responses.",
            r.server,
            mib(r.disk_bytes),
            mib(r.cached.0),
            mib(r.cached.1),
            r.cold.requests
        );
    }
    let _ = writeln!(md);
}
