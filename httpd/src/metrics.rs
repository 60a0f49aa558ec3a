//! The metrics listener (`--metrics ADDR`, never a public listener): `GET /metrics` (the
//! prometheus-client crate's OpenMetrics or Prometheus text, by the Accept header), `/livez`
//! and `/readyz` for load balancers. Served by hyper on the control plane's runtime
//! (`ctlplane`): every client a task of its own, with a deadline, so a stalled scraper holds
//! nobody else up.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::control::Control;
use crate::stats::{COUNTERS, Outcome};

/// Longest a metrics client may take to send its head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a metrics connection lives (a scraper that never reads its answer included).
const CONN_TIMEOUT: Duration = Duration::from_secs(30);
/// Metrics connections at once; more are closed at accept.
pub const MAX_CLIENTS: usize = 256;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads the counters when a scrape encodes them.
struct Exposition(Arc<Control>);

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exposition")
    }
}

/// A metric name as prometheus-client wants it: without `_total` (added to counters) and
/// without its unit suffix (given as the unit).
fn split_name(name: &str, counter: bool) -> (&str, Option<Unit>) {
    let name = if counter {
        name.strip_suffix("_total").unwrap_or(name)
    } else {
        name
    };
    if let Some(n) = name.strip_suffix("_seconds") {
        (n, Some(Unit::Seconds))
    } else if let Some(n) = name.strip_suffix("_bytes") {
        (n, Some(Unit::Bytes))
    } else {
        (name, None)
    }
}

fn help(h: &str) -> &str {
    h.strip_suffix('.').unwrap_or(h)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let c = &self.0;
        let s = c.shared.stats.snapshot();
        let gauge = |enc: &mut DescriptorEncoder, name: &str, h: &str, v: i64| {
            let (n, unit) = split_name(name, false);
            enc.encode_descriptor(n, h, unit.as_ref(), MetricType::Gauge)?
                .encode_gauge(&v)
        };
        gauge(
            &mut enc,
            "httpd_uptime_seconds",
            "Seconds since start",
            s.uptime_secs as i64,
        )?;
        let open = c.shared.open.load(Ordering::Relaxed) as i64;
        gauge(
            &mut enc,
            "httpd_open_connections",
            "Open client connections",
            open,
        )?;
        let ready = i64::from(c.ready());
        gauge(
            &mut enc,
            "httpd_ready",
            "1 while /readyz answers 200",
            ready,
        )?;
        // The table's rows: consecutive rows of a name are one metric.
        let mut i = 0;
        while i < COUNTERS.len() {
            let first = &COUNTERS[i];
            let rows: Vec<_> = COUNTERS[i..]
                .iter()
                .take_while(|x| x.metric == first.metric)
                .collect();
            i += rows.len();
            let kind = if first.gauge {
                MetricType::Gauge
            } else {
                MetricType::Counter
            };
            let (n, unit) = split_name(first.metric, !first.gauge);
            let mut m = enc.encode_descriptor(n, help(first.help), unit.as_ref(), kind)?;
            for r in rows {
                let v = (r.value)(&s);
                let labels: Vec<(&str, &str)> = r.label.into_iter().collect();
                let mut fam = m.encode_family(&labels)?;
                match (r.gauge, r.unit) {
                    (true, _) => fam.encode_gauge(&v)?,
                    (false, crate::stats::Unit::Micros) => {
                        fam.encode_counter::<NoLabelSet, _, f64>(&(v as f64 / 1e6), None)?
                    }
                    (false, crate::stats::Unit::Count) => {
                        fam.encode_counter::<NoLabelSet, _, u64>(&(v.max(0) as u64), None)?
                    }
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "httpd_request_duration",
            "Requests by outcome, from the turn their head was complete to their answer's last byte handed to the kernel (tunnel: the tunnel's life)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for o in Outcome::ALL {
            let h = &s.durations[o as usize];
            let labels = [("outcome", o.name())];
            let buckets = h.buckets();
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum_us as f64 / 1e6,
                h.count(),
                &buckets,
                None,
            )?;
        }
        let h = &s.upstream_ttfb;
        enc.encode_descriptor(
            "httpd_upstream_first_byte",
            "Upstream time to first byte: from the request's last byte sent to the response's first byte read",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(h.sum_us as f64 / 1e6, h.count(), &h.buckets(), None)?;
        // Per host, by name.
        let table = c.shared.registry.table();
        let mut hosts: Vec<_> = table.hosts().collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        let snaps: Vec<_> = hosts.iter().map(|h| h.stats.snapshot()).collect();
        type Field = fn((u64, u64, u64)) -> u64;
        let per_host: [(&str, &str, Field); 3] = [
            ("httpd_host_requests_total", "Requests per host", |t| t.0),
            ("httpd_host_hits_total", "Static hits per host", |t| t.1),
            (
                "httpd_host_sent_bytes_total",
                "Body bytes sent per host",
                |t| t.2,
            ),
        ];
        for (name, h, f) in per_host {
            let (n, unit) = split_name(name, true);
            let mut m = enc.encode_descriptor(n, h, unit.as_ref(), MetricType::Counter)?;
            for (host, snap) in hosts.iter().zip(&snaps) {
                let labels = [("host", host.name.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&f(*snap), None)?;
            }
        }
        Ok(())
    }
}

/// The registry every scrape encodes: one collector over the live counters.
pub fn registry(control: Arc<Control>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Exposition(control)));
    r
}

/// Whether the client asked for OpenMetrics (else: the Prometheus text format 0.0.4).
fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|m| {
            let mut parts = m.split(';');
            let ty = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            ty.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        })
    })
}

/// The exposition in the format asked for, and its content type.
pub fn render(reg: &Registry, openmetrics: bool) -> (String, &'static str) {
    let mut body = String::with_capacity(16 * 1024);
    if openmetrics {
        let _ = prometheus_client::encoding::text::encode(&mut body, reg);
        (body, OPENMETRICS)
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, reg);
        (
            body,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request of the metrics listener.
pub fn respond(c: &Control, reg: &Registry, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/livez" | "/readyz") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /livez, /readyz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = match path {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match c.not_ready() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            ),
        },
        _ => {
            let (body, ty) = render(reg, wants_openmetrics(req.headers().get(ACCEPT)));
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(ty));
            r
        }
    };
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// Serves the metrics listener on the control plane's runtime until it ends.
pub async fn serve(l: std::net::TcpListener, control: Arc<Control>) {
    let l = match l
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(l))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics listener: {e}");
            return;
        }
    };
    let reg = Arc::new(registry(control.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let (sock, _) = match l.accept().await {
            Ok(a) => a,
            Err(_) => {
                // Out of descriptors and the like: back off, do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(sock); // too many at once: closed
            continue;
        };
        let (c, reg) = (control.clone(), reg.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = respond(&c, &reg, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
            let _ = tokio::time::timeout(CONN_TIMEOUT, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_format() {
        let om = |s: &'static str| wants_openmetrics(Some(&HeaderValue::from_static(s)));
        assert!(om(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(om("application/OpenMetrics-Text"));
        assert!(!om("text/plain; version=0.0.4"));
        assert!(!om("application/openmetrics-text; q=0"));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn names_lose_their_suffixes() {
        assert_eq!(split_name("httpd_requests_total", true).0, "httpd_requests");
        let (n, u) = split_name("httpd_sent_bytes_total", true);
        assert_eq!(
            (n, u.map(|u| u.as_str().to_string())),
            ("httpd_sent", Some("bytes".into()))
        );
        let (n, u) = split_name("httpd_open_connections", false);
        assert_eq!((n, u.is_none()), ("httpd_open_connections", true));
    }
}
