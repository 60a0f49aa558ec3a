//! `httpd ctl top`: a live view refreshed every second. The server sends a frame a second on
//! the control socket (rates from two samples of the counters), each ending with a form feed
//! line; the client redraws the terminal with each one (or prints them one after another when
//! its output is not a terminal).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::control::Control;
use crate::stats::{Outcome, Snapshot};

/// Between two frames.
const PERIOD: Duration = Duration::from_secs(1);
/// Ends a frame on the wire.
const END: &str = "\x0c\n";
/// Hosts shown.
const TOP_HOSTS: usize = 5;

/// The counters at one moment.
struct Sample {
    at: Instant,
    s: Snapshot,
    open: usize,
    /// (name, requests, hits, bytes) per host.
    hosts: Vec<(String, u64, u64, u64)>,
}

fn sample(c: &Control) -> Sample {
    let table = c.shared.registry.table();
    Sample {
        at: Instant::now(),
        s: c.shared.stats.snapshot(),
        open: c.shared.open.load(Ordering::Relaxed),
        hosts: table
            .hosts()
            .map(|h| {
                let (r, hits, b) = h.stats.snapshot();
                (h.name.clone(), r, hits, b)
            })
            .collect(),
    }
}

/// Bytes per second, human sized.
fn bytes_rate(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}/s", UNITS[u])
}

fn ms(s: Option<f64>) -> String {
    match s {
        Some(v) if v < 0.001 => format!("<={:.0}us", v * 1e6),
        Some(v) => format!("<={:.1}ms", v * 1e3),
        None => "-".into(),
    }
}

/// One frame: what changed between `a` and `b`, per second.
fn frame(c: &Control, a: &Sample, b: &Sample) -> String {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let (sa, sb) = (&a.s, &b.s);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "httpd {}  up {}s  workers {}  {}  open connections {}",
        env!("CARGO_PKG_VERSION"),
        sb.uptime_secs,
        c.workers,
        c.not_ready().unwrap_or("ready"),
        b.open
    );
    let _ = write!(
        o,
        "requests/s {:>10.1} ",
        rate(sa.durations_count(), sb.durations_count())
    );
    for out in Outcome::ALL {
        let i = out as usize;
        let _ = write!(
            o,
            "  {} {:.1}",
            out.name(),
            rate(sa.durations[i].count(), sb.durations[i].count())
        );
    }
    o.push('\n');
    let _ = write!(o, "latency    ");
    for out in [Outcome::Static, Outcome::Forwarded, Outcome::Error] {
        let i = out as usize;
        let (x, y) = (&sa.durations[i], &sb.durations[i]);
        let _ = write!(
            o,
            "  {} p50 {} p99 {}",
            out.name(),
            ms(y.quantile_since(x, 0.5)),
            ms(y.quantile_since(x, 0.99))
        );
    }
    o.push('\n');
    let _ = writeln!(
        o,
        "sent       {:>12}  (bodies)",
        bytes_rate(rate(sa.bytes_sent, sb.bytes_sent))
    );
    let _ = writeln!(
        o,
        "upstream   open {}  idle {}  opened/s {:.1}  reused/s {:.1}  failures/s {:.1}  timeouts/s {:.1}  first byte p50 {} p99 {}",
        sb.upstream_open,
        sb.upstream_idle,
        rate(sa.upstream_opened, sb.upstream_opened),
        rate(sa.upstream_reused, sb.upstream_reused),
        rate(sa.upstream_failures, sb.upstream_failures),
        rate(sa.upstream_timeouts, sb.upstream_timeouts),
        ms(sb.upstream_ttfb.quantile_since(&sa.upstream_ttfb, 0.5)),
        ms(sb.upstream_ttfb.quantile_since(&sa.upstream_ttfb, 0.99)),
    );
    let _ = writeln!(
        o,
        "cold reads in flight {}  reads/s {:.1}  read {}",
        sb.cold_in_flight,
        rate(sa.cold_reads, sb.cold_reads),
        bytes_rate(rate(sa.cold_bytes, sb.cold_bytes))
    );
    let _ = writeln!(
        o,
        "tls        handshakes/s full {:.1} resumed {:.1}  failures/s {:.1}",
        rate(sa.tls_full, sb.tls_full),
        rate(sa.tls_resumed, sb.tls_resumed),
        rate(
            sa.tls_failures.iter().sum::<u64>(),
            sb.tls_failures.iter().sum::<u64>()
        ),
    );
    let mut hosts: Vec<(&str, f64, f64, f64)> = b
        .hosts
        .iter()
        .map(|(name, r, h, by)| {
            let before = a.hosts.iter().find(|x| x.0 == *name);
            let (r0, h0, b0) = before.map_or((*r, *h, *by), |x| (x.1, x.2, x.3));
            (name.as_str(), rate(r0, *r), rate(h0, *h), rate(b0, *by))
        })
        .collect();
    hosts.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(y.0)));
    let _ = writeln!(
        o,
        "\n{:<32} {:>10} {:>10} {:>14}",
        "HOST", "REQ/S", "HITS/S", "SENT"
    );
    for (name, r, h, by) in hosts.iter().take(TOP_HOSTS) {
        let _ = writeln!(o, "{name:<32} {r:>10.1} {h:>10.1} {:>14}", bytes_rate(*by));
    }
    o
}

/// Sends a frame every second until the client goes (or stops reading).
pub async fn stream(w: &mut tokio::net::unix::OwnedWriteHalf, c: &Control) {
    let mut prev = sample(c);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PERIOD, PERIOD);
    loop {
        tick.tick().await;
        let now = sample(c);
        let mut f = frame(c, &prev, &now);
        f.push_str(END);
        prev = now;
        match tokio::time::timeout(Duration::from_secs(5), w.write_all(f.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// `httpd ctl top`: shows frames until interrupted, or `frames` of them.
pub fn client(path: &Path, frames: Option<u64>) -> anyhow::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    s.write_all(b"top\n")?;
    let tty = std::io::stdout().is_terminal();
    let mut r = BufReader::new(s);
    let mut out = std::io::stdout().lock();
    let mut shown = 0;
    let mut f = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            if f.starts_with("error:") {
                anyhow::bail!("{}", f.trim());
            }
            return Ok(());
        }
        if line != END {
            f.push_str(&line);
            continue;
        }
        if tty {
            // Home, clear the screen, the frame.
            write!(out, "\x1b[H\x1b[2J{f}")?;
        } else {
            writeln!(out, "{f}")?;
        }
        out.flush()?;
        f.clear();
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}
