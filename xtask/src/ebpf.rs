//! `cargo xtask build-ebpf`: the eBPF crate with Debian's rustc (package rustc-web: only
//! /usr/bin/rustc, which ships `core` for bpfel-unknown-none through libstd-rust-web-dev-bpf)
//! driven by rustup's cargo, and bpf-linker; from the crate's own directory so cargo reads its
//! `.cargo/config.toml`. Debian's cargo (package cargo-web) is not needed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::{cmd, setup};

/// Debian's rustc, from package rustc-web.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

pub fn toolchain_present() -> bool {
    Path::new(DEBIAN_RUSTC).is_file() && setup::bpf_linker().is_some()
}

/// The built object, where httpd's build script looks for it.
pub fn object_path() -> PathBuf {
    cmd::root().join("httpd-ebpf/target/bpfel-unknown-none/release/httpd-ebpf")
}

/// Whether the outer cargo (rustup's) set `key` for us: such settings must not reach the
/// eBPF build. CARGO_HOME stays, so the registry cache and bpf-linker are the same.
fn leaked(key: &str) -> bool {
    (key.starts_with("CARGO") && key != "CARGO_HOME")
        || key.starts_with("RUSTUP")
        || key.starts_with("RUSTC")
        || key == "RUSTFLAGS"
        || key == "RUSTDOCFLAGS"
}

pub fn build_ebpf() -> Result<()> {
    let Some(linker) = setup::bpf_linker() else {
        bail!("bpf-linker not installed: run `cargo xtask setup`");
    };
    if !toolchain_present() {
        bail!("{DEBIAN_RUSTC} (package rustc-web) not installed: run `cargo xtask setup`");
    }
    let dir = cmd::root().join("httpd-ebpf");
    let linker_dir = linker.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut path = OsString::from(linker_dir);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut c = Command::new(cmd::cargo_program());
    c.args(["build", "--release", "--locked"]).current_dir(&dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if leaked(&k) {
            c.env_remove(&k);
        }
    }
    c.env("RUSTC", DEBIAN_RUSTC).env("PATH", path);
    cmd::run(&mut c)?;
    eprintln!("xtask: eBPF object at {}", object_path().display());
    Ok(())
}
