//! `mkroot ls` and `mkroot verify`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use httpd_common::webroot::{Kind, Webroot};

pub fn ls(file: &Path) -> Result<()> {
    let w = Webroot::open(file)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:<32} {:>10} {:<20} VARIANTS",
        "PATH", "TYPE", "SIZE", "ETAG"
    )?;
    for o in w.objects() {
        let path = String::from_utf8_lossy(&o.path);
        match (o.kind, o.identity()) {
            (Kind::File, Some(id)) => {
                let variants: Vec<String> = o.reps[1..]
                    .iter()
                    .map(|r| format!("{}:{}", r.encoding.token(), r.body_len))
                    .collect();
                let v = if variants.is_empty() {
                    "-".to_string()
                } else {
                    variants.join(",")
                };
                writeln!(
                    out,
                    "{path:<40} {:<32} {:>10} {:<20} {v}",
                    o.mime, id.body_len, id.etag
                )?;
            }
            _ => writeln!(
                out,
                "{path:<40} {:<32} {:>10} {:<20} -",
                "(directory: redirect)", "-", "-"
            )?,
        }
    }
    Ok(())
}

pub fn verify(file: &Path) -> Result<ExitCode> {
    let w = Webroot::open(file)?;
    let problems = w.verify();
    if problems.is_empty() {
        let bytes: u64 = w
            .objects()
            .iter()
            .flat_map(|o| o.reps.iter())
            .map(|r| r.body_len)
            .sum();
        println!(
            "{}: ok ({} objects, {} body bytes checked)",
            file.display(),
            w.objects().len(),
            bytes
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("{}: {}: {}", file.display(), p.path, p.what);
        }
        eprintln!("{}: {} problem(s)", file.display(), problems.len());
        Ok(ExitCode::FAILURE)
    }
}
