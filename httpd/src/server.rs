//! Start-up and shutdown: vhosts, logs, eBPF, listeners, workers, signals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::accesslog::LogSet;
use std::sync::Mutex;

use crate::cli::{Args, EbpfMode};
use crate::control::Control;
use crate::ebpf::{Fastpath, Programs};
use crate::vhosts::Registry;
use crate::worker::{Limits, Shared, Worker};

/// Period of the vhosts rescan that backs up inotify.
const RESCAN: Duration = Duration::from_secs(1);

pub fn run(mut args: Args) -> Result<()> {
    // Handlers first: a SIGHUP or SIGUSR1 during start-up is queued, never fatal.
    let plane = crate::ctlplane::prepare().context("control plane")?;
    // Room for every connection and its upstream socket.
    let nofile = crate::sys::raise_nofile();
    let cap = (nofile.saturating_sub(128) / 2).max(64) as usize;
    if args.max_connections > cap {
        tracing::warn!(
            "--max-connections {} lowered to {cap} (open file limit {nofile})",
            args.max_connections
        );
        args.max_connections = cap;
    }
    let Some(vhosts_dir) = args.vhosts_dir.clone() else {
        bail!("VHOSTS_DIR is required");
    };
    if !vhosts_dir.is_dir() {
        bail!("{}: not a directory", vhosts_dir.display());
    }
    let logs = match &args.log_dir {
        Some(d) => Some(
            LogSet::new(
                d,
                crate::accesslog::LogOptions {
                    format: args.log_format,
                    referer: args.log_referer,
                    agent: args.log_agent,
                },
            )
            .with_context(|| format!("log directory {}", d.display()))?,
        ),
        None => None,
    };
    let registry = Registry::new(&vhosts_dir, logs.clone());
    registry.preload.store(args.preload, Ordering::Relaxed);
    registry.random_access.store(
        args.io == crate::out::IoModel::AsyncSendfile,
        Ordering::Relaxed,
    );
    // HTTPD_NO_LEASES (tests only): show that even without leases a write in place cannot
    // fault httpd (bodies reach sockets through syscalls only).
    if std::env::var_os("HTTPD_NO_LEASES").is_none() {
        registry.use_leases(libc::SIGIO);
    }
    let file = match &args.config {
        Some(path) => {
            let f = crate::config::load(path)?;
            registry.set_settings(crate::config::host_settings(&f)?);
            f
        }
        None => crate::config::FileConfig::default(),
    };
    let hosts = registry.rescan();
    tracing::info!("{hosts} virtual host(s) from {}", vhosts_dir.display());

    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let systemd = crate::listen::from_systemd(workers).context("socket activation")?;
    let from_systemd = systemd.is_some();
    let (mut listeners, mut bound) = match systemd {
        Some(l) => {
            tracing::info!("using {} socket(s) from systemd", l.1.len());
            l
        }
        None => crate::listen::bind_all(&args.listen, workers).context("cannot listen")?,
    };
    let plain = bound.len();
    if !args.listen_tls.is_empty() {
        let (tls_listeners, tls_bound) =
            crate::listen::bind_all(&args.listen_tls, workers).context("cannot listen (TLS)")?;
        for (w, more) in listeners.iter_mut().zip(tls_listeners) {
            w.extend(more);
        }
        bound.extend(tls_bound);
    }
    let certs = tls_certs(&args, &file)?;
    let plain_addrs = if from_systemd {
        bound[..plain].to_vec()
    } else {
        args.listen.clone()
    };
    let infos = listener_infos(&args, &file, &bound, &plain_addrs, certs.as_ref())?;
    check_host_listeners(&file, &infos)?;
    let https_port = infos
        .iter()
        .find(|l| l.tls.is_some())
        .map(|l| l.bound.port());

    let (ebpf, ebpf_state) = start_ebpf(&args, &bound)?;
    let source = ebpf.as_ref().and_then(|p| p.fastpath).map(|f| f.source);
    let splicer = ebpf.as_ref().and_then(|p| p.splicer.clone());

    let stats = crate::stats::StatsSet::new(workers);
    let cold = match args.io {
        crate::out::IoModel::AsyncSendfile => Some(
            crate::cold::Pool::start(usize::from(args.io_threads), stats.others())
                .context("starting the cold-send threads")?,
        ),
        _ => None,
    };
    let shared = Arc::new(Shared {
        registry,
        stats,
        limits: Limits {
            io: args.io,
            inactivity: args.inactivity_timeout,
            header_timeout: args.header_timeout,
            max_connections: args.max_connections,
            drain: args.drain_timeout,
            // Always present: hosts may have an upstream of their own (configuration file).
            upstream: Some(crate::forward::Upstream {
                addr: args
                    .upstream
                    .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                timeout: args.upstream_timeout,
                source,
                enabled: args.upstream.is_some(),
            }),
        },
        open: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        splicer,
        cold,
        listeners: infos,
        https_port,
    });
    let mut handles = Vec::new();
    let mut wakers = Vec::new();
    for (i, ls) in listeners.into_iter().enumerate() {
        let w = Worker::new()?;
        wakers.push(w.waker.clone());
        let sh = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    let r = w.run(ls, sh.clone(), i);
                    // The watchdog waits for running workers only.
                    sh.stats.worker(i).ended.store(true, Ordering::Release);
                    r
                })?,
        );
    }
    for l in &shared.listeners {
        tracing::info!(
            "listening on {}{}{} ({workers} workers, io {:?})",
            l.bound,
            if l.tls.is_some() { " (TLS)" } else { "" },
            if l.proxy.is_some() {
                " (PROXY protocol)"
            } else {
                ""
            },
            args.io
        );
    }

    let control = Arc::new(Control {
        shared: shared.clone(),
        logs: logs.clone(),
        ebpf: Mutex::new(ebpf),
        ebpf_state,
        workers,
        config: args.config.clone(),
        reloading: Mutex::new(()),
        certs: certs.clone(),
        state: Default::default(),
    });
    // Bound now, served by the control plane once it runs.
    let control_socket = match &args.control {
        Some(path) => {
            let l = crate::control::bind(path)
                .with_context(|| format!("control socket {}", path.display()))?;
            tracing::info!("control socket {}", path.display());
            Some(l)
        }
        None => None,
    };
    let metrics = match args.metrics {
        Some(addr) => {
            let l =
                std::net::TcpListener::bind(addr).with_context(|| format!("metrics on {addr}"))?;
            let bound = l.local_addr()?;
            tracing::info!("metrics on http://{bound}/metrics");
            tracing::info!("health checks on http://{bound}/livez and /readyz");
            Some(l)
        }
        None => None,
    };

    if let Some(user) = &args.user {
        let (uid, gid) = crate::sys::lookup_user(user).with_context(|| format!("--user {user}"))?;
        // The new user must still be able to rotate, reopen and create logs.
        if let Some(l) = &logs {
            l.chown_all(uid, gid).context("giving the logs to --user")?;
        }
        crate::sys::drop_privileges(uid, gid).with_context(|| format!("--user {user}"))?;
        tracing::info!("running as {user} (uid {uid}, gid {gid})");
    }
    // After the drop: the control plane's threads inherit this thread's CAP_LEASE (and
    // nothing else).
    shared.registry.set_wakers(wakers.clone());
    let vhosts = shared
        .registry
        .watch()
        .with_context(|| format!("watching {}", vhosts_dir.display()))?;
    let cert_watch = match &certs {
        Some(c) => Some((c.clone(), c.watch().context("watching the certificates")?)),
        None => None,
    };
    plane
        .start(crate::ctlplane::Parts {
            control: control.clone(),
            metrics,
            control_socket,
            wakers,
            vhosts,
            certs: cert_watch,
            rescan: RESCAN,
            shutdown_delay: args.shutdown_delay,
        })
        .context("starting the control plane")?;

    control.set_ready();
    crate::sys::sd_notify("READY=1");

    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(anyhow::Error::from(e)),
            Err(_) => failed = Some(anyhow::anyhow!("a worker panicked")),
        }
    }
    if let Some(l) = &logs {
        l.flush_all();
    }
    let ebpf = control.ebpf.lock().ok().and_then(|mut g| g.take());
    if let Some(p) = &ebpf
        && p.fastpath.is_some()
    {
        match p.counters() {
            Ok(c) => tracing::info!("eBPF fast path counters: {c}"),
            Err(e) => tracing::warn!("eBPF counters: {e}"),
        }
    }
    drop(ebpf);
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// The certificate store, when there is a TLS listener: loaded once now (a listener without
/// any certificate refuses every handshake, so that is an error at start-up).
fn tls_certs(
    args: &Args,
    file: &crate::config::FileConfig,
) -> Result<Option<Arc<crate::tls::certs::CertStore>>> {
    if args.listen_tls.is_empty() {
        return Ok(None);
    }
    let configured = crate::config::host_certs(file);
    if args.tls_certs.is_none() && configured.is_empty() {
        bail!("--listen-tls needs certificates: --tls-certs DIR or tls_cert/tls_key per host");
    }
    if let Some(d) = &args.tls_certs
        && !d.is_dir()
    {
        bail!("--tls-certs {}: not a directory", d.display());
    }
    let store = Arc::new(crate::tls::certs::CertStore::new(
        args.tls_certs.clone(),
        configured,
        crate::tls::provider(),
    ));
    let n = store.rescan();
    if n == 0 {
        bail!(
            "no usable TLS certificate in {} (HOST.crt + HOST.key, PEM)",
            args.tls_certs
                .as_ref()
                .map_or("the configuration".into(), |d| d.display().to_string())
        );
    }
    tracing::info!("{n} TLS certificate(s): {}", store.names().join(", "));
    Ok(Some(store))
}

/// What each bound listener is for: the first ones plain (configured as `plain`; systemd's
/// sockets stand for themselves), then the TLS ones; the PROXY protocol where the command
/// line or the file's `[listeners]` ask for it.
fn listener_infos(
    args: &Args,
    file: &crate::config::FileConfig,
    bound: &[std::net::SocketAddr],
    plain: &[std::net::SocketAddr],
    certs: Option<&Arc<crate::tls::certs::CertStore>>,
) -> Result<Vec<crate::listen::ListenerInfo>> {
    let tls = match certs {
        Some(c) => Some(crate::tls::server_config(c.clone()).context("TLS configuration")?),
        None => None,
    };
    let configured: Vec<std::net::SocketAddr> = plain
        .iter()
        .chain(args.listen_tls.iter())
        .copied()
        .collect();
    let mut out = Vec::new();
    for (i, &b) in bound.iter().enumerate() {
        let addr = configured.get(i).copied().unwrap_or(b);
        let named = |a: &std::net::SocketAddr| *a == addr || *a == b;
        let section = file
            .listeners
            .iter()
            .find(|(a, _)| named(a))
            .map(|(_, l)| l);
        let proxy =
            args.proxy_protocol.iter().any(named) || section.is_some_and(|l| l.proxy_protocol);
        let trusted = match section.and_then(|l| l.proxy_trusted.as_deref()) {
            Some(v) => crate::config::nets(v)?,
            None => args.proxy_trusted.clone(),
        };
        out.push(crate::listen::ListenerInfo {
            addr,
            bound: b,
            tls: if i >= plain.len() { tls.clone() } else { None },
            proxy: proxy.then(|| trusted.into()),
        });
    }
    for a in &args.proxy_protocol {
        if !out.iter().any(|l| l.is(*a)) {
            bail!("--proxy-protocol {a}: not one of the listeners");
        }
    }
    for a in file.listeners.keys() {
        if !out.iter().any(|l| l.is(*a)) {
            bail!("listeners.\"{a}\": not one of the listeners");
        }
    }
    Ok(out)
}

/// Every listener a host names must exist.
fn check_host_listeners(
    file: &crate::config::FileConfig,
    infos: &[crate::listen::ListenerInfo],
) -> Result<()> {
    for (name, h) in &file.hosts {
        for a in &h.listeners {
            if !infos.iter().any(|l| l.is(*a)) {
                bail!("hosts.{name:?}.listeners: {a} is not one of the listeners");
            }
        }
    }
    Ok(())
}

fn start_ebpf(args: &Args, bound: &[std::net::SocketAddr]) -> Result<(Option<Programs>, String)> {
    if args.ebpf == EbpfMode::Off {
        tracing::info!("eBPF off (--ebpf off)");
        return Ok((None, "off (--ebpf off)".into()));
    }
    let ports: Vec<u16> = bound.iter().map(|a| a.port()).collect();
    // The fast path needs an IPv4 loopback upstream: only then are both ends on this host.
    let fastpath = match args.upstream {
        Some(std::net::SocketAddr::V4(up)) if up.ip().is_loopback() => Some(Fastpath {
            source: args.ebpf_source,
            upstream: up,
        }),
        _ => None,
    };
    if fastpath.is_some() && args.ebpf_source == std::net::Ipv4Addr::LOCALHOST {
        tracing::warn!(
            "--ebpf-source 127.0.0.1 is the source of every loopback connection: the fast path \
             takes other clients of the upstream too, and no tunnel is spliced; use another \
             127/8 address"
        );
    }
    let splice = args.ebpf_splice == crate::cli::Switch::On && fastpath.is_some();
    match Programs::attach(&args.cgroup, &ports, fastpath, splice) {
        Ok(p) => {
            let state = match fastpath {
                Some(fp) => format!(
                    "on: sock_ops on {}, sk_msg fast path for {} -> {}, tunnel splice {}",
                    args.cgroup.display(),
                    fp.source,
                    fp.upstream,
                    if splice { "on" } else { "off" }
                ),
                None => format!(
                    "on: sock_ops on {} (no fast path: no IPv4 loopback upstream)",
                    args.cgroup.display()
                ),
            };
            tracing::info!("eBPF {state}");
            if splice {
                tracing::warn!(
                    "tunnel splice: a spliced tunnel delivers bytes twice when its sender \
                     retransmits a segment that partly overlaps what arrived (a kernel defect \
                     seen on Linux 6.18; httpd then resets it; ARCHITECTURE.md, \"The tunnel \
                     splice\"): keep it off where every byte matters"
                );
            }
            Ok((Some(p), state))
        }
        Err(e) if args.ebpf == EbpfMode::Auto => {
            tracing::warn!("eBPF off: {e}");
            Ok((None, format!("off: {e}")))
        }
        Err(e) => Err(e).context("--ebpf on"),
    }
}
