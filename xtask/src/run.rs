//! `cargo xtask run`: build, then run httpd; without arguments on the bundled example site.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    crate::build()?;
    let root = cmd::root();
    let bin = root.join("target/release");
    let mut httpd = Command::new(bin.join("httpd"));
    if args.is_empty() {
        let vhosts = root.join("target/run/vhosts");
        std::fs::create_dir_all(&vhosts)?;
        cmd::run(
            Command::new(bin.join("mkroot"))
                .arg(root.join("examples/site"))
                .arg(vhosts.join("__default__")),
        )?;
        println!("httpd: serving the example site at http://127.0.0.1:8080/");
        httpd.args(["--listen", "127.0.0.1:8080"]).arg(&vhosts);
    } else {
        httpd.args(args);
    }
    eprintln!("xtask: $ {}", cmd::show(&httpd));
    let err = httpd.exec();
    Err(err).context("cannot exec httpd")
}
