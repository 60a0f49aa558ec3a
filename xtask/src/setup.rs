//! `cargo xtask setup`: the system packages and tools the project needs, installed only when
//! missing, so a second run takes a second.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

/// Debian packages: libmagic for mkroot; Debian's rustc with the BPF core library and LLVM 22
/// for the eBPF crate and bpf-linker; nginx and wrk for benchmarks; curl for the tests.
pub const PACKAGES: &[&str] = &[
    "libmagic-dev",
    "rustc-web",
    "libstd-rust-web-dev-bpf",
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
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        cmd::run(
            Command::new(cargo)
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("PATH", path)
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    Ok(())
}
