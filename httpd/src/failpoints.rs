//! Failpoints for the tests (cargo feature `failpoints`, built by `cargo xtask test` as
//! `target/release/httpd-failpoints`; never in a release build). Set at run time with
//! `httpd ctl failpoint NAME ACTIONS` (the fail crate's syntax).
//!
//! - `worker_turn`: `return(N)` wedges worker N at the top of its loop until the failpoint is
//!   set `off` again (its connections stall, its turns stop: what the watchdog must notice).

use std::time::Duration;

/// At the top of every turn of worker `index`'s loop.
pub fn worker_turn(index: usize) {
    while wedged(index) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wedged(index: usize) -> bool {
    fail::eval("worker_turn", |arg| {
        arg.and_then(|a| a.trim().parse::<usize>().ok()) == Some(index)
    })
    .unwrap_or(false)
}

/// `ctl failpoint NAME ACTIONS`.
pub fn set(name: &str, actions: &str) -> String {
    match fail::cfg(name, actions) {
        Ok(()) => format!("failpoint {name} = {actions}\n"),
        Err(e) => format!("error: failpoint {name}: {e}\n"),
    }
}
