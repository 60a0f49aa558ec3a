//! Prometheus text exposition on a listener of its own (`--metrics ADDR`), never the public one.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::control::Control;
use crate::stats::{COUNTERS, Unit};

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
    // The process-wide counters, from the one table: consecutive rows of a name are one
    // metric, whose first row gives its help and type.
    let mut i = 0;
    while i < COUNTERS.len() {
        let first = &COUNTERS[i];
        let rows: Vec<(String, String)> = COUNTERS[i..]
            .iter()
            .take_while(|x| x.metric == first.metric)
            .map(|x| {
                let labels = x
                    .label
                    .map_or_else(String::new, |(k, v)| format!("{{{k}=\"{v}\"}}"));
                let v = (x.value)(&s);
                let v = match x.unit {
                    Unit::Count => v.to_string(),
                    Unit::Micros => format!("{:.6}", v as f64 / 1e6),
                };
                (labels, v)
            })
            .collect();
        i += rows.len();
        let kind = if first.gauge { "gauge" } else { "counter" };
        metric(first.metric, kind, first.help, &rows);
    }
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
