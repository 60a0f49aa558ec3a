//! `cargo xtask build-ebpf`: the eBPF crate with Debian's rustc (which ships `core` for
//! bpfel-unknown-none) and bpf-linker, from the crate's own directory so cargo reads its
//! `.cargo/config.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::{cmd, setup};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

pub fn toolchain_present() -> bool {
    Path::new(DEBIAN_CARGO).is_file()
        && Path::new(DEBIAN_RUSTC).is_file()
        && setup::bpf_linker().is_some()
}

/// The built object, where httpd's build script looks for it.
pub fn object_path() -> PathBuf {
    cmd::root().join("httpd-ebpf/target/bpfel-unknown-none/release/httpd-ebpf")
}

pub fn build_ebpf() -> Result<()> {
    let Some(linker) = setup::bpf_linker() else {
        bail!("bpf-linker not installed: run `cargo xtask setup`");
    };
    if !toolchain_present() {
        bail!("Debian's rustc/cargo not installed: run `cargo xtask setup`");
    }
    let dir = cmd::root().join("httpd-ebpf");
    let linker_dir = linker.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!(
        "{}:{}",
        linker_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(DEBIAN_CARGO);
    c.args(["build", "--release", "--locked"]).current_dir(&dir);
    // The outer cargo (rustup's) leaks its settings into our environment; the eBPF build must
    // see none of them.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || k.starts_with("RUSTUP")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            c.env_remove(&k);
        }
    }
    c.env("RUSTC", DEBIAN_RUSTC).env("PATH", path);
    cmd::run(&mut c)?;
    eprintln!("xtask: eBPF object at {}", object_path().display());
    Ok(())
}
