//! `cargo xtask bench`: httpd against nginx with wrk.

use std::path::Path;

use anyhow::{Result, bail};

pub fn bench(_seconds: u32, _output: Option<&Path>) -> Result<()> {
    bail!("the benchmark arrives with the server (issue 3)")
}
