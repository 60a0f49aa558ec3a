//! `cargo xtask fuzz`: coverage-guided fuzzing of the targets in httpd/fuzz/fuzz_targets with
//! libFuzzer, on the stable toolchain.
//!
//! libfuzzer-sys compiles libFuzzer itself (with the C++ compiler) and links it into each
//! target; the coverage instrumentation is LLVM's SanitizerCoverage, which stable rustc enables
//! with `-Cpasses=sancov-module` and `-Cllvm-args`: the flags cargo-fuzz passes for
//! `--sanitizer none`, plus debug assertions and overflow checks. `--target` keeps them off
//! build scripts and proc-macros. No sanitizer (they need nightly): the targets assert their
//! invariants instead, and a panic is a crash to libFuzzer.
//!
//! Each target starts from a fresh copy of its checked-in seeds (httpd/fuzz/seeds/TARGET) in
//! target/fuzz/corpus/TARGET, so the seeds are never written to; crashes, timeouts and
//! out-of-memory inputs land in target/fuzz/artifacts/TARGET/ (kept across runs), libFuzzer's
//! output in target/fuzz/logs/TARGET.log.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What cargo-fuzz sets in RUSTFLAGS for `--sanitizer none` on Linux, with debug assertions
/// and overflow checks on as in its debug-assertion builds.
const RUSTFLAGS: &[&str] = &[
    "--cfg fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "-Clink-dead-code",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// One target's run.
struct Row {
    target: String,
    seconds: f64,
    executions: u64,
    exec_per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    /// Crash, timeout, out-of-memory and leak inputs libFuzzer wrote.
    artifacts: Vec<PathBuf>,
    /// libFuzzer's exit status when it was not success.
    failed: Option<String>,
    /// What the log says about the failure: from the panic (or libFuzzer's `==ERROR`) to the
    /// input's bytes, so CI's output alone names the bug.
    why: String,
}

/// The part of a libFuzzer log that explains a failure: from the first panic message or
/// `==ERROR` line on, at most 40 lines, stopping after the input's Base64 line.
fn why(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.starts_with("==") && l.contains("ERROR"))
    else {
        return String::new();
    };
    let mut out = String::new();
    for l in lines[start..].iter().take(40) {
        out.push_str("    ");
        out.push_str(l);
        out.push('\n');
        if l.starts_with("Base64:") {
            break;
        }
    }
    out
}

/// The fuzz targets: the files of httpd/fuzz/fuzz_targets, by name.
fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("httpd/fuzz/fuzz_targets");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs")
            && let Some(s) = p.file_stem().and_then(|s| s.to_str())
        {
            names.push(s.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds the targets with coverage instrumentation (release, into target/fuzz).
fn build(root: &Path, targets: &[String]) -> Result<()> {
    let mut c = Command::new(cmd::cargo_program());
    c.args(["build", "--release", "--manifest-path"])
        .arg(root.join("httpd/fuzz/Cargo.toml"))
        .args(["--target", TRIPLE, "--target-dir"])
        .arg(root.join("target/fuzz"));
    for t in targets {
        c.args(["--bin", t]);
    }
    c.env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root);
    eprintln!("xtask: RUSTFLAGS=\"{}\"", RUSTFLAGS.join(" "));
    cmd::run(&mut c)
}

/// The number after `key` in `line` (`cov: 123` -> 123).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Empties (or makes) a directory.
fn fresh_dir(d: &Path) -> Result<()> {
    if d.exists() {
        std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
    }
    std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))
}

fn fuzz_one(root: &Path, target: &str, seconds: u64) -> Result<Row> {
    let work = root.join("target/fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let logs = work.join("logs");
    fresh_dir(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    std::fs::create_dir_all(&logs)?;
    let seeds = root.join("httpd/fuzz/seeds").join(target);
    if seeds.is_dir() {
        copy_dir(&seeds, &corpus)?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)?;
    let bin = work.join(TRIPLE).join("release").join(target);
    let mut c = Command::new(&bin);
    c.arg(&corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-rss_limit_mb=2048")
        .arg("-timeout=10")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .current_dir(root);
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    eprintln!("xtask: $ {}", cmd::show(&c));
    let start = Instant::now();
    let status = c
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let elapsed = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stat = |key: &str| {
        text.lines()
            .filter(|l| l.starts_with(key))
            .find_map(|l| field(l, key))
    };
    // The last status line: `#N  NEW|REDUCE|pulse|DONE  cov: C ft: F corp: U/SIZE ...`.
    let last = text
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains(" cov: "))
        .unwrap_or("");
    // libFuzzer names each input it saves: "Test unit written to PATH" (crash, timeout, oom,
    // leak; also slow units, which are not failures). Earlier runs' artifacts stay where they
    // are and are not counted.
    let found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_once("Test unit written to "))
        .map(|(_, p)| root.join(p.trim()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with("slow-unit-"))
        })
        .collect();
    let executions = stat("stat::number_of_executed_units:")
        .or_else(|| field(last, "#"))
        .unwrap_or(0);
    Ok(Row {
        target: target.to_string(),
        seconds: elapsed,
        executions,
        exec_per_sec: stat("stat::average_exec_per_sec:")
            .unwrap_or_else(|| (executions as f64 / elapsed.max(1e-3)) as u64),
        cov: field(last, "cov:").unwrap_or(0),
        ft: field(last, "ft:").unwrap_or(0),
        corpus: field(last, "corp:").unwrap_or(0),
        artifacts: found,
        failed: (!status.success()).then(|| status.to_string()),
        why: if status.success() {
            String::new()
        } else {
            why(&text)
        },
    })
}

fn table(rows: &[Row]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| target | seconds | executions | exec/s | cov | ft | corpus | crashes |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.seconds,
            r.executions,
            r.exec_per_sec,
            r.cov,
            r.ft,
            r.corpus,
            r.artifacts.len()
        );
    }
    md
}

/// Builds the fuzz targets (those whose name contains `only`), runs each for `seconds`, and
/// returns the markdown table. A crash, timeout or out-of-memory input fails it, naming the
/// artifact and how to reproduce it.
pub(crate) fn run(seconds: u64, only: Option<&str>) -> Result<String> {
    let root = cmd::root();
    let all = targets(&root)?;
    let chosen: Vec<String> = all
        .iter()
        .filter(|t| only.is_none_or(|o| t.contains(o)))
        .cloned()
        .collect();
    ensure!(
        !chosen.is_empty(),
        "no fuzz target name contains {:?} (targets: {})",
        only.unwrap_or(""),
        all.join(", ")
    );
    build(&root, &chosen)?;
    let mut rows = Vec::new();
    for t in &chosen {
        rows.push(fuzz_one(&root, t, seconds)?);
    }
    let md = table(&rows);
    let mut problems = String::new();
    for r in &rows {
        for a in &r.artifacts {
            let bin = root
                .join("target/fuzz")
                .join(TRIPLE)
                .join("release")
                .join(&r.target);
            let _ = writeln!(
                problems,
                "{}: {} (reproduce: {} {})",
                r.target,
                a.display(),
                bin.display(),
                a.display()
            );
        }
        if r.artifacts.is_empty()
            && let Some(s) = &r.failed
        {
            let _ = writeln!(
                problems,
                "{}: libFuzzer failed ({s}) without an artifact: see target/fuzz/logs/{}.log",
                r.target, r.target
            );
        }
    }
    for r in &rows {
        if !r.why.is_empty() {
            let _ = writeln!(problems, "{} log:\n{}", r.target, r.why);
        }
    }
    if !problems.is_empty() {
        bail!("{md}\nfuzzing found problems:\n{problems}");
    }
    Ok(md)
}
