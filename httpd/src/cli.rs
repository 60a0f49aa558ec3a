//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::out::IoModel;

/// The longest timeout accepted: a year. Longer ones mean "never" to an operator, and a
/// deadline computed from them would overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A timeout from the command line or the configuration file: `500ms`, `3s`, `1m`, up to
/// [`MAX_DURATION`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use e.g. 500ms, 3s, 1m)"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?}: longer than a year"));
    }
    Ok(d)
}

/// Whether to load the eBPF programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfMode {
    /// Load if possible; otherwise say why in one log line and run without.
    Auto,
    /// Refuse to start without them.
    On,
    /// Never load them.
    Off,
}

/// A feature switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The command line: serve (the default) or a subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "httpd",
    version,
    args_conflicts_with_subcommands = true,
    about = "HTTP/1.1 accelerator: static hits from webroot files, everything else to the upstream",
    long_about = "Serves each entry of VHOSTS_DIR as a virtual host: the file name is the host name \
(`__default__` for every other host), the file a webroot built by mkroot (or a symlink to one). \
Entries are added, removed and replaced while httpd runs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Validate a configuration file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Talk to a running httpd through its control socket.
    Ctl {
        /// The control socket (httpd --control PATH); required. Before or after the command.
        #[arg(long, value_name = "PATH", global = true)]
        control: Option<PathBuf>,
        /// JSON output (status only). Before or after the command.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCommand,
    },
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// Version, uptime, connections, requests by outcome, hosts, upstream pool, eBPF.
    Status,
    /// Rename every open log to a unique name and open fresh ones; prints the renamed files.
    Rotate,
    /// Reopen the logs under their configured names (after logrotate moved them); as SIGUSR1.
    Reopen,
    /// Re-read what can change without dropping connections; as SIGHUP.
    Reload,
    /// A live view, refreshed every second: requests/s by outcome and latency, bytes/s,
    /// connections, upstream pool, cold reads, TLS, the five busiest hosts. Ctrl-C ends it.
    Top {
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long, value_name = "N")]
        frames: Option<u64>,
    },
    /// Set a failpoint (only in a build with the `failpoints` feature, for the tests).
    #[command(hide = true)]
    Failpoint { name: String, actions: String },
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of virtual hosts (webroot files or symlinks, named by host); or
    /// `vhosts_dir` in the configuration file.
    pub vhosts_dir: Option<PathBuf>,
    /// Configuration file (TOML) with any of these settings and per-host ones; flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; repeatable.
    #[arg(
        long = "listen",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:80"
    )]
    pub listen: Vec<SocketAddr>,
    /// Address to listen on for HTTPS; repeatable. Certificates from `--tls-certs` (or per
    /// host in the configuration file).
    #[arg(long = "listen-tls", value_name = "ADDR:PORT")]
    pub listen_tls: Vec<SocketAddr>,
    /// Directory of certificates: `HOST.crt` (PEM chain, leaf first) and `HOST.key` (PEM
    /// key) per host name, `__default__.crt/.key` for clients without SNI or with another
    /// name. Watched: replaced files take effect without a restart.
    #[arg(long, value_name = "DIR")]
    pub tls_certs: Option<PathBuf>,
    /// A listener (one of --listen/--listen-tls) that expects a PROXY protocol header (v1 or
    /// v2) first on every connection, from `--proxy-trusted` sources only; repeatable.
    #[arg(long = "proxy-protocol", value_name = "ADDR:PORT")]
    pub proxy_protocol: Vec<SocketAddr>,
    /// Sources allowed to send a PROXY protocol header (address or network); repeatable.
    #[arg(
        long = "proxy-trusted",
        value_name = "NET",
        default_values = ["127.0.0.1/32", "::1/128"],
        value_parser = crate::proxyproto::parse_net
    )]
    pub proxy_trusted: Vec<ipnet::IpNet>,
    /// The application server that gets every request that is not a static hit.
    #[arg(long, value_name = "ADDR:PORT")]
    pub upstream: Option<SocketAddr>,
    /// Longest wait for the upstream's response before answering 504.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_timeout: Duration,
    /// Worker threads, each with its own event loop and listener (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// How bodies reach the socket: async-sendfile (sendfile, and bytes not known to be in the
    /// page cache are sent by the cold-send threads, so a cold read never stalls other
    /// connections),
    /// sendfile (zero copy; a cold read blocks the worker), read (pread + write) or mmap
    /// (gathered writes from the mapping). Bodies up to 32 KiB go from the mapping in one call
    /// with their head in every model.
    #[arg(long, value_enum, default_value = "async-sendfile")]
    pub io: IoModel,
    /// Cold-send threads of `--io async-sendfile`: the most cold sends at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub io_threads: u16,
    /// Close connections idle for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub inactivity_timeout: Duration,
    /// Close connections whose request head is not complete after this long (slowloris).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Most open client connections; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub max_connections: usize,
    /// Directory for per-host access logs (`HOST.access.log`).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Access log format: combined (Combined Log Format) or json (one object per line).
    #[arg(long, value_enum, default_value = "combined")]
    pub log_format: crate::accesslog::Format,
    /// Also write `HOST.referer.log` (`referer -> target`, as phhttpd did).
    #[arg(long)]
    pub log_referer: bool,
    /// Also write `HOST.agent.log` (one User-Agent per line).
    #[arg(long)]
    pub log_agent: bool,
    /// eBPF programs: auto, on or off.
    #[arg(long, value_enum, default_value = "auto")]
    pub ebpf: EbpfMode,
    /// Source address of httpd's upstream connections when the eBPF fast path is on; the
    /// programs take exactly the connections from this address to the upstream.
    #[arg(long, value_name = "IPV4", default_value = "127.0.0.2")]
    pub ebpf_source: std::net::Ipv4Addr,
    /// Splice Upgrade tunnels client<->upstream in the kernel (sk_skb stream verdict). Off by
    /// default: `cargo xtask bench` measured it slower than the user-space copy here.
    #[arg(long, value_enum, default_value = "off")]
    pub ebpf_splice: Switch,
    /// cgroup2 directory the eBPF programs attach to.
    #[arg(long, value_name = "PATH", default_value = crate::ebpf::DEFAULT_CGROUP)]
    pub cgroup: PathBuf,
    /// Unix control socket for `httpd ctl` (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics on this separate address (never the public listener).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// After binding the ports and loading eBPF, run as this user (no capability kept).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Fault every webroot into memory when it is loaded, off the serving path.
    #[arg(long)]
    pub preload: bool,
    /// Diagnostics level on stderr (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// After SIGTERM or SIGINT, keep accepting this long while /readyz answers 503, so load
    /// balancers stop sending before connections are refused; then drain.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
}
