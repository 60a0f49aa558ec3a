//! The configuration file (`config::parse`, `host_settings`, `apply`, `render`).
//!
//! Invariants: any text is accepted or refused with an error, never a panic; an accepted file
//! gives host settings (mounts left out: they open files) for every host, under its lower-cased
//! name, none lost; the extra header lines are well-formed header fields (httparse reads them
//! all back), none of them a field httpd manages, with no control byte; upstream prefixes
//! start with '/'; applying the file to the default command line and rendering it works.
#![no_main]

use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches};
use httpd::cli::Cli;
use httpd::config::{apply, host_settings, parse, render};
use libfuzzer_sys::fuzz_target;

fn matches() -> &'static clap::ArgMatches {
    static M: OnceLock<clap::ArgMatches> = OnceLock::new();
    M.get_or_init(|| Cli::command().try_get_matches_from(["httpd"]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut cfg = match parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty());
            return;
        }
    };
    let m = matches();
    let mut cli = Cli::from_arg_matches(m).unwrap();
    apply(&mut cli.args, &cfg, m);
    let _ = render(&cli.args, &cfg);

    for h in cfg.hosts.values_mut() {
        for p in h.mounts.keys() {
            assert!(p.starts_with('/') && p.ends_with('/') && p.len() >= 3);
        }
        h.mounts.clear();
    }
    let settings = host_settings(&cfg).expect("valid hosts without mounts refused");
    assert_eq!(
        settings.len(),
        cfg.hosts.len(),
        "hosts lost to case folding: {:?}",
        cfg.hosts.keys().collect::<Vec<_>>()
    );
    for (name, s) in &settings {
        assert_eq!(*name, name.to_ascii_lowercase());
        for p in &s.upstream_prefixes {
            assert_eq!(p.first(), Some(&b'/'));
        }
        let mut block = b"HTTP/1.1 200 OK\r\n".to_vec();
        block.extend_from_slice(&s.headers);
        block.extend_from_slice(b"\r\n");
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let n = s.headers.split(|&c| c == b'\n').count() - 1;
        match r.parse(&block) {
            Ok(httparse::Status::Complete(len)) => assert_eq!(len, block.len()),
            Err(httparse::Error::TooManyHeaders) if n > 64 => continue,
            other => panic!(
                "extra headers of {name}: {other:?} in {:?}",
                String::from_utf8_lossy(&block)
            ),
        }
        assert_eq!(r.headers.len(), n, "header lines of {name}");
        for f in r.headers.iter() {
            let lower = f.name.to_ascii_lowercase();
            assert!(
                ![
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "content-range"
                ]
                .contains(&lower.as_str()),
                "{lower} configured"
            );
            assert!(
                !f.value
                    .iter()
                    .any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)
            );
        }
    }
});
