//! `cargo xtask setup --check`, also the first step of `cargo xtask test` after setup: where
//! every external program and path that xtask and the tests use comes from on this machine.
//! Each must come from a Debian package in `setup::PACKAGES`, from a package of a new machine
//! image that the project relies on (`IMAGE_PACKAGES`), from the image's rustup toolchain or
//! Python, or from setup's `cargo install`. Anything else (a package installed by hand, a file
//! no package owns) fails the check, so a machine with extra packages cannot hide a missing
//! install step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, ebpf, setup};

/// The Debian packages of a new `rust` machine (Debian 12) that the build and the tests rely on
/// without setup installing them: Debian's base system (dpkg, apt, coreutils, the shells,
/// util-linux) and what a new machine promises (gcc with libc6-dev, python3, curl). Each name is
/// in the image's package list, `packages/installed-rust.txt` of the workplace's machine notes
/// (first line "# kinds: rust rust-pyo3 rust-svc rust-docker"), checked when written; that list
/// is not read at run time (CI and other machines do not have it). Everything else the project
/// uses must be in `setup::PACKAGES`.
pub const IMAGE_PACKAGES: &[&str] = &[
    "apt",
    "bash",
    "coreutils",
    "curl",
    "dash",
    "dpkg",
    "g++",
    "g++-12",
    "gcc",
    "gcc-12",
    "libc6-dev",
    "libstdc++-12-dev",
    "libstdc++6",
    "python3",
    "python3-minimal",
    "python3.11",
    "python3.11-minimal",
    "util-linux",
];

/// How a program or path is found, the way xtask or the tests find it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Locate {
    /// The cargo that runs xtask (rustup's).
    Cargo,
    /// A tool next to that cargo in its rustup toolchain (rustc, rustfmt, clippy-driver).
    Toolchain(&'static str),
    /// bpf-linker, as setup finds it.
    BpfLinker,
    /// A program started by name: PATH, then /usr/sbin (root's tools).
    Program(String),
    /// An absolute path.
    Path(String),
}

impl Locate {
    fn label(&self) -> String {
        match self {
            Locate::Cargo => "cargo (rustup's)".into(),
            Locate::Toolchain(t) => format!("{t} (rustup's)"),
            Locate::BpfLinker => "bpf-linker".into(),
            Locate::Program(p) | Locate::Path(p) => p.clone(),
        }
    }

    fn find(&self) -> Option<PathBuf> {
        match self {
            Locate::Cargo => find_program(&cmd::cargo_program().to_string_lossy()),
            Locate::Toolchain(t) => {
                let cargo = Locate::Cargo.find()?;
                Some(cargo.parent()?.join(t)).filter(|p| p.is_file())
            }
            Locate::BpfLinker => setup::bpf_linker(),
            Locate::Program(p) => find_program(p),
            Locate::Path(p) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        }
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    cmd::find(name).or_else(|| Some(Path::new("/usr/sbin").join(name)).filter(|p| p.is_file()))
}

/// What xtask and the tests use, and what for. The source scan (`scanned`) adds anything
/// started with `Command::new("...")` or named by an absolute path literal that is not here.
fn needs() -> Vec<(Locate, String)> {
    let prog = |p: &str| Locate::Program(p.into());
    let path = |p: &str| Locate::Path(p.into());
    let list = [
        (Locate::Cargo, "every build and test; drives the eBPF build"),
        (Locate::Toolchain("rustc"), "the workspace's compiler"),
        (Locate::Toolchain("cargo-fmt"), "cargo fmt --check"),
        (Locate::Toolchain("rustfmt"), "cargo fmt --check"),
        (Locate::Toolchain("cargo-clippy"), "cargo clippy"),
        (Locate::Toolchain("clippy-driver"), "cargo clippy"),
        (path(ebpf::DEBIAN_RUSTC), "the eBPF crate's compiler"),
        (
            path("/usr/lib/rustlib/bpfel-unknown-none/lib"),
            "core for the BPF target",
        ),
        (Locate::BpfLinker, "links the eBPF object"),
        (
            path("/usr/lib/llvm-22/bin/llvm-config"),
            "cargo install bpf-linker (LLVM_PREFIX)",
        ),
        (
            path("/usr/lib/llvm-22/lib/libLLVM.so.22.1"),
            "bpf-linker loads it",
        ),
        (
            path("/usr/lib/x86_64-linux-gnu/libmagic.so"),
            "mkroot links libmagic",
        ),
        (
            path("/usr/lib/file/magic.mgc"),
            "libmagic's database, mkroot",
        ),
        (
            path("/usr/lib/x86_64-linux-gnu/libc.so"),
            "cc links against libc",
        ),
        (prog("dpkg-query"), "setup: what is installed"),
        (prog("apt-get"), "setup: installs"),
        (prog("sudo"), "setup, when not root"),
        (prog("dpkg"), "this check"),
        (prog("cc"), "links the workspace; the partial-I/O shim"),
        (
            prog("c++"),
            "cargo xtask fuzz: libfuzzer-sys builds libFuzzer",
        ),
        (
            path("/usr/lib/gcc/x86_64-linux-gnu/12/libstdc++.so"),
            "cargo xtask fuzz: links libFuzzer",
        ),
        (prog("curl"), "tests"),
        (prog("wget"), "tests (static_serving)"),
        (prog("openssl"), "tests (tls: s_client), bench --only tls"),
        (prog("python3"), "tests (control: sd_notify peer)"),
        (
            prog("promtool"),
            "tests (observability: promtool check metrics)",
        ),
        (
            path("/usr/bin/python3"),
            "tests (observability: Debian's python for its packages)",
        ),
        (
            path("/usr/lib/python3/dist-packages/prometheus_client"),
            "tests (observability: the OpenMetrics parser)",
        ),
        (prog("sh"), "tests (forward)"),
        (prog("head"), "tests (forward)"),
        (prog("bpftool"), "tests (ebpf_fastpath)"),
        (prog("nginx"), "bench"),
        (prog("wrk"), "bench"),
        (prog("taskset"), "bench"),
        (prog("pgrep"), "bench"),
        (prog("uname"), "bench"),
        (prog("date"), "bench"),
        (prog("sync"), "bench --mkroot-scale"),
        (path("/usr/bin/env"), ".ci/run (#!/usr/bin/env bash)"),
        (prog("bash"), ".ci/run"),
    ];
    list.into_iter()
        .map(|(l, why)| (l, why.to_string()))
        .collect()
}

/// The sources whose external programs the check covers (this file excluded: it only names
/// them).
fn scanned_sources() -> Vec<PathBuf> {
    let root = cmd::root();
    let mut files = Vec::new();
    for dir in ["xtask/src", "tests", "httpd/tests"] {
        collect_rs(&root.join(dir), &mut files);
    }
    files.retain(|f| !f.ends_with("xtask/src/provenance.rs"));
    files
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.ends_with("target") {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// String literals of `text` with their offsets (escaped quotes and the char literal `'"'`
/// skipped: enough for program names and paths).
fn literals(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' && bytes.get(i + 1) == Some(&b'"') && bytes.get(i + 2) == Some(&b'\'')
        {
            i += 3;
            continue;
        }
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        if j >= bytes.len() {
            break;
        }
        out.push((i, &text[start..j]));
        i = j + 1;
    }
    out
}

/// Absolute paths into the installed system named in a literal (`"/usr/lib/x/bin:{}"` names
/// `/usr/lib/x/bin`).
fn system_paths(literal: &str) -> impl Iterator<Item = &str> {
    literal.split([':', ' ']).filter(|t| {
        ["/usr", "/bin", "/sbin", "/lib", "/opt"].iter().any(|d| {
            t.strip_prefix(d)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        }) && !t.contains(['{', '*'])
    })
}

/// Programs started by a literal name and system paths named in the sources.
fn scanned() -> Vec<(Locate, String)> {
    let root = cmd::root();
    let mut found = Vec::new();
    for file in scanned_sources() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (at, lit) in literals(&text) {
            if text[..at].ends_with("Command::new(") && !lit.contains(['/', ' ']) {
                found.push((Locate::Program(lit.into()), rel.clone()));
            }
            for p in system_paths(lit) {
                found.push((Locate::Path(p.into()), rel.clone()));
            }
        }
    }
    found
}

/// Programs only started when xtask does not run as root (setup's `sudo apt-get`): checked
/// then, skipped as root.
const NOT_AS_ROOT: &[&str] = &["sudo"];

/// The checked list: `needs()` first, then what the scan adds.
fn everything() -> Vec<(Locate, String)> {
    let mut all = needs();
    let mut seen: BTreeSet<Locate> = all.iter().map(|(l, _)| l.clone()).collect();
    for (l, file) in scanned() {
        if seen.insert(l.clone()) {
            all.push((l, format!("named in {file}")));
        }
    }
    if cmd::is_root() {
        all.retain(|(l, _)| !matches!(l, Locate::Program(p) if NOT_AS_ROOT.contains(&p.as_str())));
    }
    all
}

/// Where a found file comes from.
enum Source {
    Rustup,
    Pyenv,
    CargoInstall(String),
    /// Debian: each path asked (the file, its canonical path, their usrmerge twins) that a
    /// package owns, with its owners.
    Deb(Vec<(PathBuf, Vec<String>)>),
}

fn home_dir(var: &str, default: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)))?;
    dir.canonicalize().ok()
}

/// The homes of the image's non-Debian tools: rustup's toolchains, its proxies in cargo's bin,
/// pyenv's Pythons.
struct Homes {
    rustup: Option<PathBuf>,
    cargo_bin: Option<PathBuf>,
    pyenv: Option<PathBuf>,
}

impl Homes {
    fn new() -> Self {
        Homes {
            rustup: home_dir("RUSTUP_HOME", ".rustup"),
            cargo_bin: home_dir("CARGO_HOME", ".cargo").map(|h| h.join("bin")),
            pyenv: home_dir("PYENV_ROOT", ".pyenv"),
        }
    }

    fn under(dir: &Option<PathBuf>, p: &Path) -> bool {
        dir.as_ref().is_some_and(|d| p.starts_with(d))
    }
}

/// The same file under both halves of Debian's merged /usr (/bin/x is /usr/bin/x).
fn usrmerge_twin(p: &Path) -> Option<PathBuf> {
    for top in ["bin", "sbin", "lib", "lib64"] {
        if let Ok(r) = p.strip_prefix(Path::new("/usr").join(top)) {
            return Some(Path::new("/").join(top).join(r));
        }
        if let Ok(r) = p.strip_prefix(Path::new("/").join(top)) {
            return Some(Path::new("/usr").join(top).join(r));
        }
    }
    None
}

/// The paths to ask dpkg about for a found file.
fn dpkg_candidates(found: &Path) -> Vec<PathBuf> {
    let mut c = vec![found.to_path_buf()];
    if let Ok(real) = found.canonicalize() {
        c.push(real);
    }
    let twins: Vec<PathBuf> = c.iter().filter_map(|p| usrmerge_twin(p)).collect();
    c.extend(twins);
    c.dedup();
    let mut seen = BTreeSet::new();
    c.retain(|p| seen.insert(p.clone()));
    c
}

/// Owners of each path that some package owns: one `dpkg -S` for all of them.
fn dpkg_owners(paths: &BTreeSet<PathBuf>) -> Result<BTreeMap<PathBuf, Vec<String>>> {
    let mut owners = BTreeMap::new();
    if paths.is_empty() {
        return Ok(owners);
    }
    // Exit status 1 when some path has no owner: expected, the others are printed.
    let out = Command::new("dpkg")
        .arg("-S")
        .args(paths)
        .output()
        .context("run dpkg -S")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.contains("diversion by ") {
            continue;
        }
        let Some((pkgs, path)) = line.split_once(": ") else {
            continue;
        };
        let pkgs = pkgs
            .split(", ")
            .map(|p| p.split(':').next().unwrap_or(p).to_string())
            .collect();
        owners.insert(PathBuf::from(path), pkgs);
    }
    Ok(owners)
}

/// Binary name -> crate, from `cargo install --list`.
fn cargo_installed() -> BTreeMap<String, String> {
    let mut bins = BTreeMap::new();
    let Ok(out) = Command::new(cmd::cargo_program())
        .args(["install", "--list"])
        .output()
    else {
        return bins;
    };
    let mut krate = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(bin) = line.strip_prefix("    ") {
            bins.insert(bin.trim().to_string(), krate.clone());
        } else if let Some((name, _)) = line.split_once(' ') {
            krate = name.to_string();
        }
    }
    bins
}

fn classify(
    found: &Path,
    homes: &Homes,
    installed: &mut Option<BTreeMap<String, String>>,
    owners: &BTreeMap<PathBuf, Vec<String>>,
) -> Source {
    let real = found.canonicalize().unwrap_or_else(|_| found.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    if Homes::under(&homes.rustup, &real)
        || (Homes::under(&homes.cargo_bin, &real) && name(&real).as_deref() == Some("rustup"))
    {
        return Source::Rustup;
    }
    if Homes::under(&homes.pyenv, &real) || Homes::under(&homes.pyenv, found) {
        return Source::Pyenv;
    }
    if Homes::under(&homes.cargo_bin, &real) {
        let bins = installed.get_or_insert_with(cargo_installed);
        if let Some(krate) = name(&real).and_then(|n| bins.get(&n)) {
            return Source::CargoInstall(krate.clone());
        }
    }
    let owned = dpkg_candidates(found)
        .into_iter()
        .filter_map(|p| owners.get(&p).map(|o| (p, o.clone())))
        .collect();
    Source::Deb(owned)
}

/// Where an allowed package comes from, or None.
fn allowed(pkg: &str) -> Option<&'static str> {
    if setup::PACKAGES.contains(&pkg) {
        Some("setup")
    } else if IMAGE_PACKAGES.contains(&pkg) {
        Some("image")
    } else {
        None
    }
}

/// The verdict on one source: Ok(where it comes from) or Err(why not).
fn judge(source: &Source) -> Result<String, String> {
    match source {
        Source::Rustup => Ok("rustup toolchain (image)".into()),
        Source::Pyenv => Ok("pyenv's Python (image)".into()),
        Source::CargoInstall(k) if k == setup::BPF_LINKER_CRATE => {
            Ok(format!("cargo install {k} (setup)"))
        }
        Source::CargoInstall(k) => Err(format!("cargo install {k}, which setup does not do")),
        Source::Deb(owned) if owned.is_empty() => {
            Err("no Debian package owns it (installed by hand?)".into())
        }
        Source::Deb(owned) => judge_deb(owned),
    }
}

/// Every path of the file that a package owns must have an allowed owner.
fn judge_deb(owned: &[(PathBuf, Vec<String>)]) -> Result<String, String> {
    let mut ok = BTreeSet::new();
    for (path, pkgs) in owned {
        match pkgs
            .iter()
            .find_map(|p| allowed(p).map(|w| format!("{p} ({w})")))
        {
            Some(w) => {
                ok.insert(w);
            }
            None => {
                return Err(format!(
                    "{} -> package {}: neither in setup's PACKAGES nor in IMAGE_PACKAGES",
                    path.display(),
                    pkgs.join(", ")
                ));
            }
        }
    }
    Ok(ok.into_iter().collect::<Vec<_>>().join(", "))
}

/// The path to show beside a label: nothing when the label is that path.
fn shown(label: &str, path: Option<&Path>) -> String {
    match path {
        Some(p) if p.as_os_str() != label => p.display().to_string(),
        _ => String::new(),
    }
}

/// Judges each found file, printing one line each; returns the failures.
fn judge_all(all: &[(Locate, String)], found: &[Option<PathBuf>]) -> Result<Vec<String>> {
    let asked: BTreeSet<PathBuf> = found
        .iter()
        .flatten()
        .flat_map(|p| dpkg_candidates(p))
        .collect();
    let owners = dpkg_owners(&asked)?;
    let homes = Homes::new();
    let mut installed = None;
    let mut failures = Vec::new();
    for ((locate, why), path) in all.iter().zip(found) {
        let label = locate.label();
        let shown = shown(&label, path.as_deref());
        let verdict = match path {
            None => Err("not found on this machine (cargo xtask setup should install it)".into()),
            Some(p) => judge(&classify(p, &homes, &mut installed, &owners)),
        };
        match verdict {
            Ok(from) => eprintln!("  ok    {label:<24} {from:<36} {shown}  ({why})"),
            Err(e) if shown.is_empty() || e.contains(&shown) => failures.push((label, e, why)),
            Err(e) => failures.push((label, format!("{shown}: {e}"), why)),
        }
    }
    for (label, e, why) in &failures {
        eprintln!("  FAIL  {label:<24} {e}  ({why})");
    }
    Ok(failures
        .into_iter()
        .map(|(label, e, _)| format!("{label}: {e}"))
        .collect())
}

/// `cargo xtask setup --check`.
pub fn check() -> Result<()> {
    let all = everything();
    let found: Vec<Option<PathBuf>> = all.iter().map(|(l, _)| l.find()).collect();
    eprintln!("xtask check: where each program and path comes from");
    if cmd::is_root() {
        eprintln!("  (root: {} not needed)", NOT_AS_ROOT.join(", "));
    }
    let failures = judge_all(&all, &found)?;
    if !failures.is_empty() {
        bail!(
            "{} of {} programs and paths do not come from setup or the new machine image:\n  {}",
            failures.len(),
            all.len(),
            failures.join("\n  ")
        );
    }
    eprintln!(
        "xtask check: all {} programs and paths come from setup or the new machine image",
        all.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_of_literals() {
        let lit = literals(r#"x("/usr/lib/llvm-22/bin:{}") y("/../etc/passwd") z("/usr/sbin")"#);
        let paths: Vec<&str> = lit.iter().flat_map(|(_, l)| system_paths(l)).collect();
        assert_eq!(paths, ["/usr/lib/llvm-22/bin", "/usr/sbin"]);
    }

    #[test]
    fn command_names_are_found() {
        let text = r#"Command::new("wget").args(["-q"]); Command::new(bin("httpd"))"#;
        let names: Vec<&str> = literals(text)
            .into_iter()
            .filter(|(at, _)| text[..*at].ends_with("Command::new("))
            .map(|(_, l)| l)
            .collect();
        assert_eq!(names, ["wget"]);
    }

    #[test]
    fn usrmerge_twins() {
        assert_eq!(
            usrmerge_twin(Path::new("/usr/bin/uname")),
            Some(PathBuf::from("/bin/uname"))
        );
        assert_eq!(
            usrmerge_twin(Path::new("/sbin/ip")),
            Some(PathBuf::from("/usr/sbin/ip"))
        );
        assert_eq!(usrmerge_twin(Path::new("/usr/share/x")), None);
    }

    #[test]
    fn packages_are_judged() {
        let owned = |p: &str, pkg: &str| vec![(PathBuf::from(p), vec![pkg.to_string()])];
        assert!(judge(&Source::Deb(owned("/usr/bin/wget", "wget"))).is_ok());
        assert!(judge(&Source::Deb(owned("/usr/bin/head", "coreutils"))).is_ok());
        let e = judge(&Source::Deb(owned("/usr/bin/cargo", "cargo-web"))).unwrap_err();
        assert!(e.contains("/usr/bin/cargo -> package cargo-web"), "{e}");
        assert!(judge(&Source::Deb(Vec::new())).is_err());
        assert!(judge(&Source::CargoInstall("bpf-linker".into())).is_ok());
        assert!(judge(&Source::CargoInstall("cargo-nextest".into())).is_err());
    }
}
