//! The configuration file (`--config FILE`, TOML): every flag's setting, plus per-host settings
//! (extra response headers, path prefixes that always go upstream, an upstream of its own).
//! Flags given on the command line win over the file. Unknown keys are errors, with their line.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::vhosts::{HostSettings, Mount};
use clap::ValueEnum;
use serde::Deserialize;

/// The file as written.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub vhosts_dir: Option<PathBuf>,
    pub listen: Option<Vec<SocketAddr>>,
    pub upstream: Option<SocketAddr>,
    pub upstream_timeout: Option<String>,
    pub workers: Option<usize>,
    pub io: Option<String>,
    pub io_threads: Option<u16>,
    pub inactivity_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub log_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub log_referer: Option<bool>,
    pub log_agent: Option<bool>,
    pub ebpf: Option<String>,
    pub ebpf_source: Option<Ipv4Addr>,
    pub ebpf_splice: Option<String>,
    pub cgroup: Option<PathBuf>,
    pub control: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub user: Option<String>,
    pub preload: Option<bool>,
    pub log_level: Option<String>,
    pub drain_timeout: Option<String>,
    pub shutdown_delay: Option<String>,
    pub listen_tls: Option<Vec<SocketAddr>>,
    pub tls_certs: Option<PathBuf>,
    pub proxy_protocol: Option<Vec<SocketAddr>>,
    pub proxy_trusted: Option<Vec<String>>,
    #[serde(default)]
    pub listeners: BTreeMap<SocketAddr, ListenerConfig>,
    #[serde(default)]
    pub hosts: BTreeMap<String, HostConfig>,
}

/// `[hosts."name"]`: settings of one virtual host (`__default__` for the default one).
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Extra response headers, on static and forwarded responses.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests whose path starts with one of these always go upstream (`/api/`).
    #[serde(default)]
    pub upstream_prefixes: Vec<String>,
    /// This host's own upstream (instead of `--upstream`).
    pub upstream: Option<SocketAddr>,
    /// Mount points: requests under `/prefix/` are served from another webroot file, the
    /// prefix removed (`"/docs/" = "/srv/docs.webroot"`).
    #[serde(default)]
    pub mounts: BTreeMap<String, PathBuf>,
    /// Plain HTTP requests are redirected to HTTPS (308, same path and query).
    #[serde(default)]
    pub https_redirect: bool,
    /// Strict-Transport-Security sent on HTTPS responses (`max-age=31536000`).
    pub hsts: Option<String>,
    /// The listeners (`ADDR:PORT`, as in `listen`/`listen_tls`) this host answers on; empty:
    /// every one.
    #[serde(default)]
    pub listeners: Vec<SocketAddr>,
    /// This host's certificate chain and key (PEM), instead of the certificates directory's.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[listeners."ADDR:PORT"]`: settings of one listener.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Expect a PROXY protocol header (v1 or v2) first on every connection.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Sources allowed to send one (addresses or networks); default: `proxy_trusted`.
    pub proxy_trusted: Option<Vec<String>>,
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

impl HostConfig {
    fn validate(&self, host: &str) -> Result<()> {
        for (k, v) in &self.headers {
            if !token(k) {
                bail!("hosts.{host:?}.headers: {k:?} is not a header name");
            }
            if v.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f) {
                bail!("hosts.{host:?}.headers.{k}: control characters in the value");
            }
            let lower = k.to_ascii_lowercase();
            if [
                "content-length",
                "transfer-encoding",
                "connection",
                "content-range",
            ]
            .contains(&lower.as_str())
            {
                bail!("hosts.{host:?}.headers: {k} is managed by httpd");
            }
        }
        for p in &self.upstream_prefixes {
            if !p.starts_with('/') {
                bail!("hosts.{host:?}.upstream_prefixes: {p:?} must start with '/'");
            }
        }
        for p in self.mounts.keys() {
            if !p.starts_with('/') || !p.ends_with('/') || p.len() < 3 {
                bail!("hosts.{host:?}.mounts: {p:?} must start and end with '/'");
            }
        }
        if let Some(v) = &self.hsts
            && (v.is_empty() || v.bytes().any(|c| c < 0x20 || c == 0x7f))
        {
            bail!("hosts.{host:?}.hsts: empty, or control characters in it");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("hosts.{host:?}: tls_cert and tls_key go together");
        }
        Ok(())
    }

    /// The serving form; opens (and validates) the mounted webroots.
    pub fn settings(&self) -> Result<HostSettings> {
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            headers.extend_from_slice(k.as_bytes());
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(v.as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
        let mut mounts = Vec::new();
        for (prefix, file) in &self.mounts {
            let root = httpd_common::webroot::Webroot::open(file)
                .map_err(|e| anyhow::anyhow!("mount {prefix}: {e}"))?;
            mounts.push(Mount {
                prefix: prefix.as_bytes().to_vec(),
                root: std::sync::Arc::new(root),
            });
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let mut tls_headers = headers.clone();
        if let Some(v) = &self.hsts {
            tls_headers.extend_from_slice(b"Strict-Transport-Security: ");
            tls_headers.extend_from_slice(v.as_bytes());
            tls_headers.extend_from_slice(b"\r\n");
        }
        Ok(HostSettings {
            headers,
            tls_headers,
            https_redirect: self.https_redirect,
            listeners: self.listeners.clone(),
            upstream_prefixes: self
                .upstream_prefixes
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            upstream: self.upstream,
            mounts,
        })
    }
}

fn duration(key: &str, v: &Option<String>) -> Result<()> {
    if let Some(v) = v {
        crate::cli::duration(v).map_err(|e| anyhow::anyhow!("{key} = {e}"))?;
    }
    Ok(())
}

fn choice<T: ValueEnum>(key: &str, v: &Option<String>) -> Result<()> {
    if let Some(v) = v {
        T::from_str(v, true).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|x| x.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            anyhow::anyhow!("{key} = {v:?}: expected one of {}", names.join(", "))
        })?;
    }
    Ok(())
}

/// Reads and validates a configuration file. Errors name the file, and the line for syntax
/// errors and unknown keys.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// Parses and validates the text of a configuration file ([`load`] without the file).
pub fn parse(text: &str) -> Result<FileConfig> {
    let cfg: FileConfig = toml::from_str(text)?;
    let check = || -> Result<()> {
        duration("upstream_timeout", &cfg.upstream_timeout)?;
        duration("inactivity_timeout", &cfg.inactivity_timeout)?;
        duration("header_timeout", &cfg.header_timeout)?;
        duration("drain_timeout", &cfg.drain_timeout)?;
        duration("shutdown_delay", &cfg.shutdown_delay)?;
        choice::<crate::out::IoModel>("io", &cfg.io)?;
        choice::<crate::cli::EbpfMode>("ebpf", &cfg.ebpf)?;
        choice::<crate::cli::Switch>("ebpf_splice", &cfg.ebpf_splice)?;
        choice::<crate::accesslog::Format>("log_format", &cfg.log_format)?;
        if let Some(v) = &cfg.proxy_trusted {
            nets(v).context("proxy_trusted")?;
        }
        for (a, l) in &cfg.listeners {
            if let Some(v) = &l.proxy_trusted {
                nets(v).with_context(|| format!("listeners.\"{a}\".proxy_trusted"))?;
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (name, h) in &cfg.hosts {
            h.validate(name)?;
            // Hosts are looked up lower-cased: a second spelling would silently replace one.
            if !names.insert(name.to_ascii_lowercase()) {
                bail!("hosts.{name:?}: another host has this name in other case");
            }
        }
        Ok(())
    };
    check()?;
    Ok(cfg)
}

/// The per-host settings of a configuration, by lower-cased host name.
pub fn host_settings(cfg: &FileConfig) -> Result<BTreeMap<String, HostSettings>> {
    cfg.hosts
        .iter()
        .map(|(k, v)| {
            let settings = v.settings().with_context(|| format!("hosts.{k:?}"))?;
            Ok((k.to_ascii_lowercase(), settings))
        })
        .collect()
}

/// Fills every setting of `args` that was not given on the command line from the file.
pub fn apply(args: &mut crate::cli::Args, f: &FileConfig, m: &clap::ArgMatches) {
    let explicit = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let dur = |v: &Option<String>| v.as_deref().and_then(|s| crate::cli::duration(s).ok());
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if !explicit(stringify!($field))
                && let Some(v) = $value
            {
                args.$field = v;
            }
        };
    }
    set!(vhosts_dir, f.vhosts_dir.clone().map(Some));
    set!(listen, f.listen.clone());
    set!(upstream, f.upstream.map(Some));
    set!(upstream_timeout, dur(&f.upstream_timeout));
    set!(workers, f.workers.map(Some));
    set!(
        io,
        f.io.as_deref()
            .and_then(|v| crate::out::IoModel::from_str(v, true).ok())
    );
    set!(io_threads, f.io_threads);
    set!(inactivity_timeout, dur(&f.inactivity_timeout));
    set!(header_timeout, dur(&f.header_timeout));
    set!(max_connections, f.max_connections);
    set!(log_dir, f.log_dir.clone().map(Some));
    set!(
        log_format,
        f.log_format
            .as_deref()
            .and_then(|v| crate::accesslog::Format::from_str(v, true).ok())
    );
    set!(log_referer, f.log_referer);
    set!(log_agent, f.log_agent);
    set!(
        ebpf,
        f.ebpf
            .as_deref()
            .and_then(|v| crate::cli::EbpfMode::from_str(v, true).ok())
    );
    set!(ebpf_source, f.ebpf_source);
    set!(
        ebpf_splice,
        f.ebpf_splice
            .as_deref()
            .and_then(|v| crate::cli::Switch::from_str(v, true).ok())
    );
    set!(cgroup, f.cgroup.clone());
    set!(control, f.control.clone().map(Some));
    set!(metrics, f.metrics.map(Some));
    set!(user, f.user.clone().map(Some));
    set!(preload, f.preload);
    set!(log_level, f.log_level.clone());
    set!(drain_timeout, dur(&f.drain_timeout));
    set!(shutdown_delay, dur(&f.shutdown_delay));
    set!(listen_tls, f.listen_tls.clone());
    set!(tls_certs, f.tls_certs.clone().map(Some));
    set!(proxy_protocol, f.proxy_protocol.clone());
    set!(
        proxy_trusted,
        f.proxy_trusted.as_ref().and_then(|v| nets(v).ok())
    );
}

/// Trusted PROXY protocol sources as written.
pub fn nets(v: &[String]) -> Result<Vec<ipnet::IpNet>> {
    v.iter()
        .map(|s| crate::proxyproto::parse_net(s).map_err(anyhow::Error::msg))
        .collect()
}

/// The per-host certificate files of a configuration, by lower-cased host name.
pub fn host_certs(cfg: &FileConfig) -> BTreeMap<String, crate::tls::certs::PairFiles> {
    cfg.hosts
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.to_ascii_lowercase(),
                crate::tls::certs::PairFiles {
                    cert: v.tls_cert.clone()?,
                    key: v.tls_key.clone()?,
                },
            ))
        })
        .collect()
}

/// The effective configuration, in the file's own format.
pub fn render(args: &crate::cli::Args, f: &FileConfig) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let opt = |p: &Option<PathBuf>| {
        p.as_ref().map_or("(none)".to_string(), |p| {
            format!("{:?}", p.display().to_string())
        })
    };
    let _ = writeln!(o, "vhosts_dir = {}", opt(&args.vhosts_dir));
    let listen: Vec<String> = args.listen.iter().map(|a| format!("\"{a}\"")).collect();
    let _ = writeln!(o, "listen = [{}]", listen.join(", "));
    let listen_tls: Vec<String> = args.listen_tls.iter().map(|a| format!("\"{a}\"")).collect();
    let _ = writeln!(o, "listen_tls = [{}]", listen_tls.join(", "));
    let _ = writeln!(o, "tls_certs = {}", opt(&args.tls_certs));
    let pp: Vec<String> = args
        .proxy_protocol
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let _ = writeln!(o, "proxy_protocol = [{}]", pp.join(", "));
    let pt: Vec<String> = args
        .proxy_trusted
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let _ = writeln!(o, "proxy_trusted = [{}]", pt.join(", "));
    let _ = writeln!(
        o,
        "upstream = {}",
        args.upstream
            .map_or("(none)".into(), |u| format!("\"{u}\""))
    );
    let _ = writeln!(
        o,
        "upstream_timeout = \"{}\"",
        humantime::format_duration(args.upstream_timeout)
    );
    let _ = writeln!(
        o,
        "workers = {}",
        args.workers
            .map_or("(one per CPU)".into(), |w| w.to_string())
    );
    let name = |v: Option<clap::builder::PossibleValue>| {
        v.map_or(String::new(), |p| p.get_name().to_string())
    };
    let _ = writeln!(o, "io = \"{}\"", name(args.io.to_possible_value()));
    let _ = writeln!(o, "io_threads = {}", args.io_threads);
    let _ = writeln!(
        o,
        "inactivity_timeout = \"{}\"",
        humantime::format_duration(args.inactivity_timeout)
    );
    let _ = writeln!(
        o,
        "header_timeout = \"{}\"",
        humantime::format_duration(args.header_timeout)
    );
    let _ = writeln!(o, "max_connections = {}", args.max_connections);
    let _ = writeln!(o, "log_dir = {}", opt(&args.log_dir));
    let _ = writeln!(
        o,
        "log_format = \"{}\"",
        name(args.log_format.to_possible_value())
    );
    let _ = writeln!(
        o,
        "log_referer = {}\nlog_agent = {}",
        args.log_referer, args.log_agent
    );
    let _ = writeln!(
        o,
        "ebpf = \"{:?}\"\nebpf_source = \"{}\"\nebpf_splice = \"{}\"",
        args.ebpf,
        args.ebpf_source,
        name(args.ebpf_splice.to_possible_value())
    );
    let _ = writeln!(o, "cgroup = {:?}", args.cgroup.display().to_string());
    let _ = writeln!(o, "control = {}", opt(&args.control));
    let _ = writeln!(
        o,
        "metrics = {}",
        args.metrics.map_or("(none)".into(), |m| format!("\"{m}\""))
    );
    let _ = writeln!(
        o,
        "user = {}",
        args.user
            .as_deref()
            .map_or("(none)".into(), |u| format!("{u:?}"))
    );
    let _ = writeln!(o, "preload = {}", args.preload);
    let _ = writeln!(o, "log_level = {:?}", args.log_level);
    let _ = writeln!(
        o,
        "drain_timeout = \"{}\"",
        humantime::format_duration(args.drain_timeout)
    );
    let _ = writeln!(
        o,
        "shutdown_delay = \"{}\"",
        humantime::format_duration(args.shutdown_delay)
    );
    for (addr, l) in &f.listeners {
        let _ = writeln!(o, "\n[listeners.\"{addr}\"]");
        let _ = writeln!(o, "proxy_protocol = {}", l.proxy_protocol);
        if let Some(t) = &l.proxy_trusted {
            let t: Vec<String> = t.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(o, "proxy_trusted = [{}]", t.join(", "));
        }
    }
    for (name, h) in &f.hosts {
        let _ = writeln!(o, "\n[hosts.{name:?}]");
        if !h.listeners.is_empty() {
            let l: Vec<String> = h.listeners.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(o, "listeners = [{}]", l.join(", "));
        }
        if h.https_redirect {
            let _ = writeln!(o, "https_redirect = true");
        }
        if let Some(v) = &h.hsts {
            let _ = writeln!(o, "hsts = {v:?}");
        }
        if let (Some(c), Some(k)) = (&h.tls_cert, &h.tls_key) {
            let _ = writeln!(
                o,
                "tls_cert = {:?}\ntls_key = {:?}",
                c.display().to_string(),
                k.display().to_string()
            );
        }
        if let Some(u) = h.upstream {
            let _ = writeln!(o, "upstream = \"{u}\"");
        }
        let p: Vec<String> = h
            .upstream_prefixes
            .iter()
            .map(|p| format!("{p:?}"))
            .collect();
        let _ = writeln!(o, "upstream_prefixes = [{}]", p.join(", "));
        let hs: Vec<String> = h
            .headers
            .iter()
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect();
        let _ = writeln!(o, "headers = {{ {} }}", hs.join(", "));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found with the config fuzz target's invariants: two spellings of one host were both
    /// accepted and `host_settings` kept only one of them.
    #[test]
    fn host_names_differing_in_case_refused() {
        let e = parse("[hosts.\"A.test\"]\n[hosts.\"a.test\"]\nupstream_prefixes = [\"/api/\"]\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("other case"), "{e:#}");
        let cfg = parse("[hosts.\"A.test\"]\n[hosts.\"b.test\"]\n").unwrap();
        assert_eq!(host_settings(&cfg).unwrap().len(), 2);
    }

    /// A drain timeout of a thousand years overflowed the clock when the drain began.
    #[test]
    fn durations_are_bounded() {
        let e = parse("drain_timeout = \"1000years\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("drain_timeout"), "{e:#}");
        assert!(parse("drain_timeout = \"365days\"\n").is_ok());
        assert!(parse("header_timeout = \"3\"\n").is_err());
        assert!(crate::cli::duration("18446744073709551615s").is_err());
        assert_eq!(
            crate::cli::duration("2s"),
            Ok(std::time::Duration::from_secs(2))
        );
    }
}
