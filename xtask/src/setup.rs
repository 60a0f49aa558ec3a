//! `cargo xtask setup`: the system packages and tools the project needs, installed only when
//! missing, so a second run takes a second.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

/// Debian packages, on top of what a new machine has (`provenance::IMAGE_PACKAGES`):
/// - libmagic for mkroot (headers, library, database);
/// - Debian's rustc (rustc-web gives /usr/bin/rustc only; rustup's cargo drives it) with the BPF
///   `core` library, for the eBPF crate;
/// - LLVM 22 (llvm-22: llvm-config; libllvm22: the libLLVM that bpf-linker loads; the -dev
///   packages, zstd and zlib to build bpf-linker);
/// - curl, wget and bpftool for the tests; nginx, wrk and procps (pgrep) for the benchmarks;
///   prometheus for its promtool and python3-prometheus-client for its OpenMetrics parser (the
///   tests check the metrics exposition in both formats with them).
///
/// Every package whose files xtask or the tests use is named here, not left to a dependency:
/// `cargo xtask setup --check` holds every program and path to this list and the image's.
pub const PACKAGES: &[&str] = &[
    "libmagic-dev",
    "libmagic1",
    "libmagic-mgc",
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22",
    "libllvm22",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "nginx",
    "wrk",
    "curl",
    "procps",
    "wget",
    "bpftool",
    "openssl",
    "prometheus",
    "python3-prometheus-client",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn privileged(args: &[&str]) -> Command {
    let mut c = if cmd::is_root() {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg(args[0]);
        c
    };
    c.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// The crate setup installs with `cargo install`.
pub const BPF_LINKER_CRATE: &str = "bpf-linker";

/// Where `cargo install` puts bpf-linker.
pub fn bpf_linker() -> Option<PathBuf> {
    cmd::find("bpf-linker").or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        Some(home.join("bin/bpf-linker")).filter(|p| p.is_file())
    })
}

pub fn setup() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!(
            "xtask setup: all {} Debian packages present",
            PACKAGES.len()
        );
    } else {
        if !cmd::is_root() && !cmd::on_path("sudo") {
            bail!("missing packages {missing:?} and not root (no sudo): install them first");
        }
        eprintln!("xtask setup: installing {}", missing.join(" "));
        cmd::run(&mut privileged(&["apt-get", "update", "-qq"]))?;
        let mut args = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        cmd::run(&mut privileged(&args))?;
    }
    let linker_works = bpf_linker().is_some_and(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if linker_works {
        eprintln!("xtask setup: bpf-linker present");
    } else {
        eprintln!("xtask setup: installing bpf-linker (about 1.5 min)");
        let cargo = cmd::cargo_program();
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        cmd::run(
            Command::new(cargo)
                .args([
                    "install",
                    "--locked",
                    BPF_LINKER_CRATE,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("PATH", path)
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    python_env()
}

/// target/pyenv: a venv of the machine's python3 with the differential suite's reference
/// parser (tests/differential/requirements.txt, pinned by hash).
pub fn python_env() -> Result<()> {
    let root = cmd::root();
    let venv = root.join("target/pyenv");
    let python = venv.join("bin/python");
    let reqs = root.join("tests/differential/requirements.txt");
    let ok = Command::new(&python)
        .args([
            "-c",
            "import h11, sys; sys.exit(h11.__version__ != '0.16.0')",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        eprintln!("xtask setup: target/pyenv (h11) present");
        return Ok(());
    }
    eprintln!("xtask setup: making target/pyenv (h11 from PyPI)");
    cmd::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    cmd::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(["--require-hashes", "-r"])
            .arg(&reqs),
    )
}
