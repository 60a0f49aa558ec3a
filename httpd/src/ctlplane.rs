//! The control plane: one thread running a tokio current-thread runtime, beside the mio
//! workers (the data plane), which never wait on it. On it: the metrics listener (hyper), the
//! control socket, signals, the vhosts and certificate watchers with their rescan timers, the
//! access logs' flush timer, and sd_notify with the systemd watchdog. File system work (scans,
//! reloads, log writes) runs on the runtime's blocking threads, so a slow disk delays no
//! scrape, command or signal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::control::Control;

/// The runtime and the signals, made first thing at start-up (a signal that arrives while
/// httpd starts is held, never fatal).
pub struct Plane {
    rt: tokio::runtime::Runtime,
    signals: Signals,
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    /// A writer is breaking the read lease of a webroot (vhosts::Registry::use_leases).
    io: Signal,
}

/// What the control plane runs, once the data plane is up.
pub struct Parts {
    pub control: Arc<Control>,
    pub metrics: Option<std::net::TcpListener>,
    pub control_socket: Option<std::os::unix::net::UnixListener>,
    /// The workers' wakers, in worker order.
    pub wakers: Vec<Arc<mio::Waker>>,
    pub vhosts: crate::dirwatch::DirWatch,
    pub certs: Option<(Arc<crate::tls::certs::CertStore>, crate::dirwatch::DirWatch)>,
    /// Period of the rescans that back up inotify.
    pub rescan: Duration,
    /// `--shutdown-delay`.
    pub shutdown_delay: Duration,
}

/// Builds the runtime and installs the signal handlers.
pub fn prepare() -> std::io::Result<Plane> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("control-blocking")
        .max_blocking_threads(8)
        .build()?;
    let signals = {
        let _in = rt.enter();
        Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            io: signal(SignalKind::io())?,
        }
    };
    Ok(Plane { rt, signals })
}

impl Plane {
    /// Starts the control plane's thread (after privileges are dropped: its blocking threads
    /// inherit the capability to take leases and nothing more).
    pub fn start(self, parts: Parts) -> std::io::Result<()> {
        let Plane { rt, signals } = self;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || rt.block_on(run(signals, parts)))?;
        Ok(())
    }
}

async fn run(mut sig: Signals, p: Parts) {
    let c = p.control.clone();
    if let Some(l) = p.metrics {
        tokio::spawn(crate::metrics::serve(l, c.clone()));
    }
    if let Some(l) = p.control_socket {
        tokio::spawn(crate::control::serve(l, c.clone()));
    }
    tokio::spawn(c.shared.registry.clone().watch_loop(p.vhosts, p.rescan));
    if let Some((store, w)) = p.certs {
        tokio::spawn(store.watch_loop(w, p.rescan));
    }
    if let Some(logs) = c.logs.clone() {
        tokio::spawn(flush_logs(logs));
    }
    if let Some(period) = watchdog_period() {
        tracing::info!("systemd watchdog: a ping every {period:?} while every worker's loop turns");
        tokio::spawn(watchdog(c.clone(), p.wakers.clone(), period));
    }
    let mut stopping = false;
    loop {
        let stop_signal = tokio::select! {
            _ = sig.term.recv() => libc::SIGTERM,
            _ = sig.int.recv() => libc::SIGINT,
            _ = sig.hup.recv() => {
                // Stopping: nothing to reload (and systemd is told STOPPING, not RELOADING).
                if !stopping {
                    tokio::spawn(reload(c.clone()));
                }
                continue;
            }
            _ = sig.usr1.recv() => {
                let c = c.clone();
                tokio::spawn(async move {
                    if let Ok(r) = tokio::task::spawn_blocking(move || c.reopen()).await {
                        tracing::info!("SIGUSR1: {}", r.trim());
                    }
                });
                continue;
            }
            _ = sig.io.recv() => {
                c.shared.registry.poke();
                continue;
            }
        };
        if stopping {
            tracing::warn!("signal {stop_signal} again: stopping now");
            if let Some(l) = c.logs.clone() {
                // At once means at once: a log disk that hangs gets a second, not more.
                let flush = tokio::task::spawn_blocking(move || l.flush_all());
                let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
            }
            std::process::exit(1);
        }
        stopping = true;
        c.set_draining();
        crate::sys::sd_notify("STOPPING=1");
        tracing::info!("signal {stop_signal}: draining and stopping (again to stop at once)");
        let (c, wakers, delay) = (c.clone(), p.wakers.clone(), p.shutdown_delay);
        tokio::spawn(async move {
            if !delay.is_zero() {
                tracing::info!("/readyz says draining; still accepting for {delay:?}");
                tokio::time::sleep(delay).await;
            }
            c.shared.stop.store(true, Ordering::Release);
            for w in &wakers {
                let _ = w.wake();
            }
        });
    }
}

/// SIGHUP: a reload, told to systemd (Type=notify-reload) as it goes.
async fn reload(c: Arc<Control>) {
    crate::sys::sd_notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        crate::sys::monotonic_usec()
    ));
    if let Ok(r) = tokio::task::spawn_blocking(move || c.reload()).await {
        tracing::info!("SIGHUP: {}", r.trim());
    }
    crate::sys::sd_notify("READY=1");
}

/// Writes out the access logs' buffers every `FLUSH_PERIOD`.
async fn flush_logs(logs: Arc<crate::accesslog::LogSet>) {
    let mut tick = tokio::time::interval(crate::accesslog::FLUSH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let l = logs.clone();
        let _ = tokio::task::spawn_blocking(move || l.flush_all()).await;
    }
}

/// The period of watchdog checks: a quarter of `WATCHDOG_USEC`, when systemd asks for pings
/// from this process.
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 4).max(Duration::from_millis(5)))
}

/// Pings systemd (`WATCHDOG=1`) every `period` while every running worker's loop has turned
/// since the last check. Each check wakes every worker, so an idle one turns before the next;
/// a wedged one does not, the pings stop, and systemd restarts the process. A worker that
/// ended (its connections drained at the stop) is not waited for; one that wedges while
/// draining stops the pings like any other.
async fn watchdog(c: Arc<Control>, wakers: Vec<Arc<mio::Waker>>, period: Duration) {
    let wake_all = || {
        for w in &wakers {
            let _ = w.wake();
        }
    };
    let mut last = c.shared.stats.turns();
    wake_all();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled: Option<usize> = None;
    loop {
        tick.tick().await;
        let now = c.shared.stats.turns();
        // None: the worker ended.
        let stuck = now
            .iter()
            .zip(&last)
            .position(|(a, b)| a.is_some() && a == b);
        match stuck {
            None => {
                if let Some(w) = stalled.take() {
                    tracing::info!("watchdog: worker {w} turns again; pinging systemd");
                }
                crate::sys::sd_notify("WATCHDOG=1");
            }
            Some(w) => {
                if stalled.is_none() {
                    tracing::error!(
                        "watchdog: worker {w} has not turned its loop for {period:?}; no ping \
                         to systemd until it does"
                    );
                }
                stalled = Some(w);
            }
        }
        wake_all();
        last = now;
    }
}
