//! Project automation: `cargo xtask setup | build-ebpf | build | test | run | bench | fuzz | soak`.

mod bench;
mod cmd;
mod cold_bench;
mod disk;
mod ebpf;
mod fuzz;
mod provenance;
mod run;
mod setup;
mod soak;
mod tls_bench;
mod tunnel_bench;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "httpd project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every system package and tool the project needs (idempotent, quick when present).
    Setup {
        /// Install nothing: check that every program and path xtask and the tests use comes from
        /// setup's packages, setup's `cargo install` or the new machine image.
        #[arg(long)]
        check: bool,
    },
    /// Build the eBPF object (httpd-ebpf): rustup's cargo driving Debian's rustc, and bpf-linker.
    BuildEbpf,
    /// Release build of everything, the eBPF object included when the toolchain is there.
    Build,
    /// setup + setup --check + build + every test (unit, integration, end-to-end, the
    /// differential suite) + fmt and clippy + a 2-minute soak + a minute of fuzzing per target.
    /// CI runs this.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run httpd: without arguments on the bundled example site at 127.0.0.1:8080.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark httpd against nginx with wrk (not part of test).
    Bench {
        /// Seconds per scenario and server.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Write the markdown table to this file as well.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Instead of the server comparison: mkroot on a 100,000-file tree and a 1 GiB tree,
        /// and webroot lookup cost against object count.
        #[arg(long)]
        mkroot_scale: bool,
        /// Run only the scenarios whose name contains this text (`cold` for the cold-read rows).
        #[arg(long)]
        only: Option<String>,
        /// Use the binaries already in target/release instead of building the workspace first.
        #[arg(long)]
        no_build: bool,
        /// httpd's I/O model in the server rows (the cold rows measure each model).
        #[arg(long, default_value = "async-sendfile")]
        io: String,
    },
    /// The soak: every kind of client at once against httpd (bodies checked byte by byte)
    /// while faults run on a schedule, then the invariants (test runs a short one).
    Soak {
        /// Seconds of load (two phases: --ebpf off, then auto; then the limits).
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Write the report (markdown) to this file as well.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Use the binaries already in target/release.
        #[arg(long)]
        no_build: bool,
    },
    /// Coverage-guided fuzzing (libFuzzer, stable toolchain) of every target in
    /// httpd/fuzz/fuzz_targets, from its seeds; prints a table. A crash fails it.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Run only the targets whose name contains this text.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup { check: false } => setup::setup(),
        Task::Setup { check: true } => provenance::check(),
        Task::BuildEbpf => ebpf::build_ebpf(),
        Task::Build => build(),
        Task::Test { args } => test(&args),
        Task::Run { args } => run::run(&args),
        Task::Bench {
            mkroot_scale: true,
            output,
            ..
        } => bench::mkroot_scale(output.as_deref()),
        Task::Bench {
            seconds,
            output,
            only,
            no_build,
            io,
            ..
        } => bench::bench(seconds, output.as_deref(), only.as_deref(), &io, no_build),
        Task::Soak {
            seconds,
            report,
            no_build,
        } => soak::run(seconds, report.as_deref(), !no_build),
        Task::Fuzz { seconds, only } => {
            print!("{}", fuzz::run(seconds, only.as_deref())?);
            Ok(())
        }
    }
}

/// Release build of the workspace; the eBPF object first when its toolchain is installed.
pub fn build() -> Result<()> {
    if ebpf::toolchain_present() {
        ebpf::build_ebpf()?;
    } else {
        eprintln!(
            "xtask: eBPF toolchain not installed (cargo xtask setup): building httpd without it"
        );
    }
    cmd::cargo(&["build", "--release", "--workspace", "--bins"])
}

fn test(extra: &[String]) -> Result<()> {
    setup::setup()?;
    provenance::check()?;
    ebpf::build_ebpf()?;
    build_failpoints()?;
    cmd::cargo(&["build", "--release", "--workspace", "--bins"])?;
    cmd::cargo(&["fmt", "--all", "--check"])?;
    cmd::cargo(&[
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut args = vec!["test", "--release", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    cmd::cargo(&args)?;
    if extra.is_empty() {
        // The functional suites again over HTTPS.
        functional_suites(&[("HTTPD_TEST_TLS", "1".as_ref())], &[])?;
        partial_io_run()?;
        ebpf_run()?;
        let target = cmd::root().join("target");
        soak::run(120, Some(&target.join("soak.md")), false)?;
        let table = fuzz::run(60, None)?;
        print!("{table}");
        std::fs::write(target.join("fuzz.md"), table)?;
    }
    Ok(())
}

/// httpd with failpoints (the `failpoints` feature) as target/release/httpd-failpoints, for the
/// tests that wedge a worker; the plain build that follows puts the release httpd back.
fn build_failpoints() -> Result<()> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "httpd",
        "--bin",
        "httpd",
        "--features",
        "failpoints",
    ])?;
    let dir = cmd::root().join("target/release");
    std::fs::copy(dir.join("httpd"), dir.join("httpd-failpoints"))
        .context("copying httpd-failpoints")?;
    Ok(())
}

/// `cargo test` of the functional end-to-end suites (static serving, forwarding) with extra
/// environment and test-harness arguments.
fn functional_suites(env: &[(&str, &std::ffi::OsStr)], harness: &[&str]) -> Result<()> {
    let mut c = std::process::Command::new(cmd::cargo_program());
    c.args([
        "test",
        "--release",
        "-p",
        "tests",
        "--test",
        "static_serving",
        "--test",
        "forward",
    ]);
    if !harness.is_empty() {
        c.arg("--").args(harness);
    }
    c.envs(env.iter().copied()).current_dir(cmd::root());
    cmd::run(&mut c)
}

/// The functional end-to-end suites again with `--ebpf on --ebpf-splice on` (root only, one
/// httpd at a time): the sk_msg fast path under every exchange, the splice under every tunnel.
fn ebpf_run() -> Result<()> {
    if !cmd::is_root() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        anyhow::ensure!(!ci, "CI=true but not root: the --ebpf on run cannot happen");
        eprintln!("xtask: not root: skipping the --ebpf on run of the functional tests");
        return Ok(());
    }
    functional_suites(
        &[
            ("HTTPD_TEST_EBPF", "on".as_ref()),
            ("HTTPD_TEST_SPLICE", "on".as_ref()),
        ],
        &["--test-threads=1"],
    )
}

/// The functional end-to-end tests again, with every socket read and write of httpd cut to a
/// few bytes per call by an LD_PRELOAD shim (tests/shim/partial_io.c).
fn partial_io_run() -> Result<()> {
    let root = cmd::root();
    let so = root.join("target/partial_io.so");
    cmd::run(
        std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&so)
            .arg(root.join("tests/shim/partial_io.c"))
            .arg("-ldl"),
    )?;
    functional_suites(
        &[
            ("HTTPD_TEST_PRELOAD", so.as_os_str()),
            ("PARTIAL_IO_MAX", "7".as_ref()),
        ],
        &[],
    )?;
    // And over HTTPS: TLS records cut anywhere, handshakes a few bytes at a time.
    functional_suites(
        &[
            ("HTTPD_TEST_PRELOAD", so.as_os_str()),
            ("PARTIAL_IO_MAX", "7".as_ref()),
            ("HTTPD_TEST_TLS", "1".as_ref()),
        ],
        &[],
    )
}
