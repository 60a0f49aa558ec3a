//! Prometheus text exposition on a listener of its own (`--metrics ADDR`), never the public one.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::control::Control;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics page.
pub fn render(c: &Control) -> String {
    let s = c.shared.stats.snapshot();
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "httpd_uptime_seconds",
        "gauge",
        "Seconds since start.",
        &one(s.uptime_secs.to_string()),
    );
    metric(
        "httpd_open_connections",
        "gauge",
        "Open client connections.",
        &one(c.shared.open.load(Ordering::Relaxed).to_string()),
    );
    let outcomes = [
        ("static_hit", s.static_hits),
        ("not_modified", s.not_modified),
        ("partial", s.partial),
        ("redirect", s.redirects),
        ("forwarded", s.forwarded),
    ];
    metric(
        "httpd_requests_total",
        "counter",
        "Requests by outcome.",
        &outcomes
            .iter()
            .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), v.to_string()))
            .collect::<Vec<_>>(),
    );
    metric(
        "httpd_errors_total",
        "counter",
        "Error responses by class.",
        &[
            ("{class=\"4xx\"}".to_string(), s.client_errors.to_string()),
            ("{class=\"5xx\"}".to_string(), s.server_errors.to_string()),
        ],
    );
    metric(
        "httpd_sent_bytes_total",
        "counter",
        "Body bytes sent.",
        &one(s.bytes_sent.to_string()),
    );
    metric(
        "httpd_upstream_connections",
        "gauge",
        "Upstream connections open, by state.",
        &[
            ("{state=\"open\"}".to_string(), s.upstream_open.to_string()),
            ("{state=\"idle\"}".to_string(), s.upstream_idle.to_string()),
        ],
    );
    metric(
        "httpd_tunnels_total",
        "counter",
        "Upgrade tunnels opened, and those spliced in the kernel (both ways, or upstream to client).",
        &[
            ("{mode=\"opened\"}".to_string(), s.tunnels.to_string()),
            (
                "{mode=\"spliced\"}".to_string(),
                s.tunnels_spliced.to_string(),
            ),
            (
                "{mode=\"half_spliced\"}".to_string(),
                s.tunnels_half_spliced.to_string(),
            ),
        ],
    );
    metric(
        "httpd_upstream_opened_total",
        "counter",
        "Upstream connections opened.",
        &one(s.upstream_opened.to_string()),
    );
    metric(
        "httpd_upstream_reused_total",
        "counter",
        "Exchanges on a pooled connection.",
        &one(s.upstream_reused.to_string()),
    );
    metric(
        "httpd_upstream_failures_total",
        "counter",
        "Upstream failures (502).",
        &one(s.upstream_failures.to_string()),
    );
    metric(
        "httpd_upstream_timeouts_total",
        "counter",
        "Upstream timeouts (504).",
        &one(s.upstream_timeouts.to_string()),
    );
    metric(
        "httpd_cold_reads_total",
        "counter",
        "Reads of webroot bytes not in the page cache, done off the event loop.",
        &one(s.cold_reads.to_string()),
    );
    metric(
        "httpd_cold_read_bytes_total",
        "counter",
        "Bytes read by cold reads.",
        &one(s.cold_bytes.to_string()),
    );
    metric(
        "httpd_cold_wait_seconds_total",
        "counter",
        "Time connections waited for cold reads (queued and reading).",
        &one(format!("{:.6}", s.cold_wait_us as f64 / 1e6)),
    );
    metric(
        "httpd_cold_reads_in_flight",
        "gauge",
        "Cold reads queued or running.",
        &one(s.cold_in_flight.to_string()),
    );
    let table = c.shared.registry.table();
    let mut hosts: Vec<_> = table.hosts().collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = |f: fn((u64, u64, u64)) -> u64| -> Vec<(String, String)> {
        hosts
            .iter()
            .map(|h| {
                (
                    format!("{{host=\"{}\"}}", label(&h.name)),
                    f(h.stats.snapshot()).to_string(),
                )
            })
            .collect()
    };
    metric(
        "httpd_host_requests_total",
        "counter",
        "Requests per host.",
        &rows(|t| t.0),
    );
    metric(
        "httpd_host_hits_total",
        "counter",
        "Static hits per host.",
        &rows(|t| t.1),
    );
    metric(
        "httpd_host_sent_bytes_total",
        "counter",
        "Body bytes sent per host.",
        &rows(|t| t.2),
    );
    o
}

/// Serves the metrics page on `addr`, on a thread of its own.
pub fn serve(addr: SocketAddr, control: Arc<Control>) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let bound = l.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = [0u8; 8192];
            let mut n = 0;
            while n < head.len() {
                match s.read(&mut head[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let body = render(&control);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(bound)
}
