//! `mkroot SRC_DIR OUT.webroot`: compile a directory into one immutable webroot file.
//! `mkroot ls FILE`, `mkroot verify FILE`: inspect one.

mod compile;
mod compress;
mod inspect;
mod mime;
mod scan;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Compile a directory into an immutable webroot file for httpd",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory to compile.
    #[arg(required = true)]
    src: Option<PathBuf>,
    /// Webroot file to write (replaced atomically).
    #[arg(required = true)]
    out: Option<PathBuf>,
    /// Include files and directories whose names start with '.' (`.errors/` is always included).
    #[arg(long)]
    include_dotfiles: bool,
    /// Refuse symlinks that lead outside SRC_DIR (each is named, no webroot is written), for
    /// trees whose authors are not trusted. By default their targets are compiled under the
    /// link's path and counted in the summary. Either way, links that would loop and dangling
    /// links are skipped with a warning.
    #[arg(long)]
    refuse_outside_links: bool,
    /// A file in /etc/mime.types format whose extensions override the built-in table and libmagic.
    #[arg(long, value_name = "FILE")]
    mime_types: Option<PathBuf>,
    /// `GLOB=VALUE`: bake `Cache-Control: VALUE` into files whose relative path matches GLOB.
    /// Repeatable; the first matching rule wins. Example: --cache-control '*.css=max-age=86400'
    #[arg(long, value_name = "GLOB=VALUE")]
    cache_control: Vec<compile::CacheRule>,
    /// Bake a `Repr-Digest: sha-256=...` header (RFC 9530) into every representation.
    #[arg(long)]
    digest: bool,
    /// Do not store precompressed (gzip, br, zstd) variants.
    #[arg(long)]
    no_compress: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List the objects of a webroot: path, type, size, ETag, variants.
    Ls { file: PathBuf },
    /// Check every body against its content hash; the exit status says the result.
    Verify { file: PathBuf },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Ls { file }) => inspect::ls(&file).map(|()| ExitCode::SUCCESS),
        Some(Command::Verify { file }) => inspect::verify(&file),
        None => {
            let (Some(src), Some(out)) = (cli.src, cli.out) else {
                anyhow::bail!("usage: mkroot SRC_DIR OUT.webroot");
            };
            let mime_types = match &cli.mime_types {
                Some(p) => mime::parse_mime_types(p)?,
                None => Default::default(),
            };
            let opts = compile::Options {
                src,
                out,
                include_dotfiles: cli.include_dotfiles,
                outside_links: if cli.refuse_outside_links {
                    scan::OutsideLinks::Refuse
                } else {
                    scan::OutsideLinks::Follow
                },
                mime_types,
                cache_rules: cli.cache_control,
                digest: cli.digest,
                compress: !cli.no_compress,
            };
            let s = compile::compile(&opts)?;
            const MIB: f64 = 1024.0 * 1024.0;
            println!(
                "mkroot: {}: {} objects ({} files), {:.1} MiB in, {:.1} MiB out, {} variants{}, {:.2} s ({:.1} MB/s)",
                opts.out.display(),
                s.objects,
                s.files,
                s.bytes_in as f64 / MIB,
                s.bytes_out as f64 / MIB,
                s.variants,
                links_summary(&s),
                s.seconds,
                s.bytes_in as f64 / 1e6 / s.seconds.max(1e-9),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `, N outside link(s) followed`, then the skipped links when there are any.
fn links_summary(s: &compile::Summary) -> String {
    let mut out = format!(", {} outside link(s) followed", s.outside_links);
    if s.loops > 0 {
        out += &format!(", {} loop(s) skipped", s.loops);
    }
    if s.dangling > 0 {
        out += &format!(", {} dangling link(s) skipped", s.dangling);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mkroot: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
