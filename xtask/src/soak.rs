//! `cargo xtask soak`: runs the soak binary (tests/src/bin/soak.rs) against the release
//! build: every kind of client at once, faults on a schedule, invariants at the end.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cmd;

/// Runs the soak for `seconds` (two phases, then the limits), writing its report to `report`.
pub fn run(seconds: u64, report: Option<&Path>, build: bool) -> Result<()> {
    if build {
        crate::build()?;
    }
    let dir = cmd::root().join("target/release");
    let mut c = Command::new(dir.join("soak"));
    c.args(["--seconds", &seconds.to_string()])
        .env("HTTPD_BIN_DIR", &dir);
    if let Some(r) = report {
        c.arg("--report").arg(r);
    }
    cmd::run(&mut c)
}
