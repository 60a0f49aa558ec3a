//! Counters for `httpd ctl status`, `httpd ctl top` and the metrics endpoint: a block of
//! relaxed atomics per worker (each written by its worker alone, so no cache line moves between
//! cores on the serving path; one more block for the other threads), summed when read; latency
//! histograms in the same blocks; per-host counters that survive webroot swaps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The counters of one worker (or of the other threads). Aligned so two blocks never share a
/// cache line.
#[repr(align(128))]
pub struct Stats {
    pub static_hits: AtomicU64,
    pub not_modified: AtomicU64,
    pub partial: AtomicU64,
    pub redirects: AtomicU64,
    pub forwarded: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub upstream_opened: AtomicU64,
    pub upstream_reused: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    /// Upstream connections open now (in use or idle).
    pub upstream_open: AtomicI64,
    /// Idle pooled upstream connections now.
    pub upstream_idle: AtomicI64,
    /// Upgrades answered 101 (tunnels opened).
    pub tunnels: AtomicU64,
    /// Tunnels handed to the kernel splice: both directions, and upstream-to-client only.
    pub tunnels_spliced: AtomicU64,
    pub tunnels_half_spliced: AtomicU64,
    /// Cold sends done by the cold-send threads (`--io async-sendfile`), the bytes they sent,
    /// and the time connections waited for them (queued and sending), in microseconds.
    pub cold_reads: AtomicU64,
    pub cold_bytes: AtomicU64,
    pub cold_wait_us: AtomicU64,
    /// Cold reads queued or running now.
    pub cold_in_flight: AtomicI64,
    /// Failed exchanges by class (`forward::ErrorClass`).
    pub proxy_errors: [AtomicU64; ErrorClass::ALL.len()],
    /// TLS handshakes completed in full, resumed, and failed by reason.
    pub tls_full: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub tls_failures: [AtomicU64; TlsFailure::ALL.len()],
    /// Connections closed on a PROXY protocol listener: untrusted source, bad header.
    pub proxy_refused: AtomicU64,
    /// Requests not meant for the upstream answered here with an error (4xx, 5xx), and with
    /// anything else not counted above.
    pub local_errors: AtomicU64,
    pub other: AtomicU64,
    /// Turns of the worker's event loop (the watchdog's sign of life), and whether the loop
    /// ended (the stop's drain is over for it).
    pub turns: AtomicU64,
    pub ended: std::sync::atomic::AtomicBool,
    /// Request durations by outcome (`Outcome`), and the upstream's time to first byte.
    pub durations: [Histogram; Outcome::ALL.len()],
    pub upstream_ttfb: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            static_hits: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            partial: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            upstream_opened: AtomicU64::new(0),
            upstream_reused: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            upstream_timeouts: AtomicU64::new(0),
            upstream_open: AtomicI64::new(0),
            upstream_idle: AtomicI64::new(0),
            tunnels: AtomicU64::new(0),
            tunnels_spliced: AtomicU64::new(0),
            tunnels_half_spliced: AtomicU64::new(0),
            cold_reads: AtomicU64::new(0),
            cold_bytes: AtomicU64::new(0),
            cold_wait_us: AtomicU64::new(0),
            cold_in_flight: AtomicI64::new(0),
            proxy_errors: Default::default(),
            tls_full: AtomicU64::new(0),
            tls_resumed: AtomicU64::new(0),
            tls_failures: Default::default(),
            proxy_refused: AtomicU64::new(0),
            local_errors: AtomicU64::new(0),
            other: AtomicU64::new(0),
            turns: AtomicU64::new(0),
            ended: std::sync::atomic::AtomicBool::new(false),
            durations: Default::default(),
            upstream_ttfb: Histogram::default(),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub uptime_secs: u64,
    pub static_hits: u64,
    pub not_modified: u64,
    pub partial: u64,
    pub redirects: u64,
    pub forwarded: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub bytes_sent: u64,
    pub upstream_opened: u64,
    pub upstream_reused: u64,
    pub upstream_failures: u64,
    pub upstream_timeouts: u64,
    pub upstream_open: i64,
    pub upstream_idle: i64,
    pub tunnels: u64,
    pub tunnels_spliced: u64,
    pub tunnels_half_spliced: u64,
    pub cold_reads: u64,
    pub cold_bytes: u64,
    pub cold_wait_us: u64,
    pub cold_in_flight: i64,
    pub proxy_errors: [u64; ErrorClass::ALL.len()],
    pub tls_full: u64,
    pub tls_resumed: u64,
    pub tls_failures: [u64; TlsFailure::ALL.len()],
    pub proxy_refused: u64,
    pub local_errors: u64,
    pub other: u64,
    pub durations: [HistogramSnapshot; Outcome::ALL.len()],
    pub upstream_ttfb: HistogramSnapshot,
}

impl Stats {
    /// Counts one answered request.
    pub fn request(&self, status: u16, bytes: u64, forwarded: bool) {
        if forwarded {
            add(&self.forwarded, 1);
        } else {
            match status {
                200 => add(&self.static_hits, 1),
                206 => add(&self.partial, 1),
                304 => add(&self.not_modified, 1),
                301 | 308 => add(&self.redirects, 1),
                400..=599 => add(&self.local_errors, 1),
                _ => add(&self.other, 1),
            }
        }
        match status {
            400..=499 => add(&self.client_errors, 1),
            500..=599 => add(&self.server_errors, 1),
            _ => {}
        }
        add(&self.bytes_sent, bytes);
    }

    /// This block's counters (uptime 0: see [`StatsSet::snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            uptime_secs: 0,
            static_hits: get(&self.static_hits),
            not_modified: get(&self.not_modified),
            partial: get(&self.partial),
            redirects: get(&self.redirects),
            forwarded: get(&self.forwarded),
            client_errors: get(&self.client_errors),
            server_errors: get(&self.server_errors),
            bytes_sent: get(&self.bytes_sent),
            upstream_opened: get(&self.upstream_opened),
            upstream_reused: get(&self.upstream_reused),
            upstream_failures: get(&self.upstream_failures),
            upstream_timeouts: get(&self.upstream_timeouts),
            upstream_open: self.upstream_open.load(Ordering::Relaxed),
            upstream_idle: self.upstream_idle.load(Ordering::Relaxed),
            tunnels: get(&self.tunnels),
            tunnels_spliced: get(&self.tunnels_spliced),
            tunnels_half_spliced: get(&self.tunnels_half_spliced),
            cold_reads: get(&self.cold_reads),
            cold_bytes: get(&self.cold_bytes),
            cold_wait_us: get(&self.cold_wait_us),
            cold_in_flight: self.cold_in_flight.load(Ordering::Relaxed),
            proxy_errors: std::array::from_fn(|i| get(&self.proxy_errors[i])),
            tls_full: get(&self.tls_full),
            tls_resumed: get(&self.tls_resumed),
            tls_failures: std::array::from_fn(|i| get(&self.tls_failures[i])),
            proxy_refused: get(&self.proxy_refused),
            local_errors: get(&self.local_errors),
            other: get(&self.other),
            durations: std::array::from_fn(|i| self.durations[i].snapshot()),
            upstream_ttfb: self.upstream_ttfb.snapshot(),
        }
    }

    /// Counts a turn of the worker loop.
    pub fn turn(&self) {
        add(&self.turns, 1);
    }

    /// Records how long a request took: from the loop turn in which its head was complete to
    /// its answer's last byte handed to the kernel.
    pub fn observe(&self, outcome: Outcome, took: Duration) {
        self.durations[outcome as usize].observe(took);
    }

    /// Counts an exchange that failed, by class; an upstream failure other than a timeout is
    /// also one of `upstream_failures` (502), a timeout one of `upstream_timeouts` (504).
    pub fn proxy_failed(&self, class: ErrorClass) {
        add(&self.proxy_errors[class.index()], 1);
        if class == ErrorClass::Timeout {
            add(&self.upstream_timeouts, 1);
        } else if class.upstream_failure() {
            add(&self.upstream_failures, 1);
        }
    }
}

impl Snapshot {
    /// Adds another block's counters to these.
    fn merge(&mut self, o: &Snapshot) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            static_hits,
            not_modified,
            partial,
            redirects,
            forwarded,
            client_errors,
            server_errors,
            bytes_sent,
            upstream_opened,
            upstream_reused,
            upstream_failures,
            upstream_timeouts,
            upstream_open,
            upstream_idle,
            tunnels,
            tunnels_spliced,
            tunnels_half_spliced,
            cold_reads,
            cold_bytes,
            cold_wait_us,
            cold_in_flight,
            tls_full,
            tls_resumed,
            proxy_refused,
            local_errors,
            other
        );
        for (a, b) in self.proxy_errors.iter_mut().zip(o.proxy_errors) {
            *a += b;
        }
        for (a, b) in self.tls_failures.iter_mut().zip(o.tls_failures) {
            *a += b;
        }
        for (a, b) in self.durations.iter_mut().zip(&o.durations) {
            a.merge(b);
        }
        self.upstream_ttfb.merge(&o.upstream_ttfb);
    }

    /// Requests observed by the duration histograms, every outcome (each request counted
    /// above is one observation).
    pub fn durations_count(&self) -> u64 {
        self.durations.iter().map(HistogramSnapshot::count).sum()
    }
}

/// Every block of counters: one per worker, then one for the other threads (cold reads).
pub struct StatsSet {
    pub started: Instant,
    parts: Vec<Arc<Stats>>,
}

impl StatsSet {
    pub fn new(workers: usize) -> StatsSet {
        StatsSet {
            started: Instant::now(),
            parts: (0..=workers).map(|_| Arc::new(Stats::default())).collect(),
        }
    }

    /// Worker `i`'s block.
    pub fn worker(&self, i: usize) -> Arc<Stats> {
        self.parts[i.min(self.parts.len() - 1)].clone()
    }

    /// The other threads' block.
    pub fn others(&self) -> Arc<Stats> {
        self.parts[self.parts.len() - 1].clone()
    }

    /// The sum of every block.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            ..Snapshot::default()
        };
        for p in &self.parts {
            total.merge(&p.snapshot());
        }
        total
    }

    /// Each worker's loop turns so far (None: its loop ended).
    pub fn turns(&self) -> Vec<Option<u64>> {
        self.parts[..self.parts.len() - 1]
            .iter()
            .map(|p| (!p.ended.load(Ordering::Acquire)).then(|| get(&p.turns)))
            .collect()
    }
}

/// What a request's duration is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered here from a webroot (200, 206, 304, redirects; anything else below 400).
    Static,
    /// Answered by the upstream.
    Forwarded,
    /// Answered here with an error: 4xx, 5xx, and the upstream's failures (502, 504).
    Error,
    /// An upgrade (101): the duration is the tunnel's life.
    Tunnel,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Static,
        Outcome::Forwarded,
        Outcome::Error,
        Outcome::Tunnel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Static => "static",
            Outcome::Forwarded => "forwarded",
            Outcome::Error => "error",
            Outcome::Tunnel => "tunnel",
        }
    }

    /// The outcome of an exchange with the upstream that is over: forwarded once something of
    /// the upstream's response went to the client; else an error (a 502/504 answered here, or
    /// the client gone first: 499).
    pub fn exchange(sent_client: bool) -> Outcome {
        if sent_client {
            Outcome::Forwarded
        } else {
            Outcome::Error
        }
    }

    /// The outcome of a response answered here (not by the upstream).
    pub fn local(status: u16) -> Outcome {
        if status >= 400 {
            Outcome::Error
        } else {
            Outcome::Static
        }
    }
}

/// Upper bounds of the histograms' buckets, in microseconds (50 us to 60 s; +Inf after).
pub const BUCKETS_US: [u64; 19] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A latency histogram one thread writes: a count per bucket (not cumulative; the last is
/// +Inf) and the sum in microseconds. An observation is a search of 19 bounds and two relaxed
/// increments: no lock, no allocation.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative; the last is +Inf.
    pub counts: [u64; BUCKETS_US.len() + 1],
    pub sum_us: u64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&b| b < us);
        add(&self.counts[i], 1);
        add(&self.sum_us, us);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| get(&self.counts[i])),
            sum_us: get(&self.sum_us),
        }
    }
}

impl HistogramSnapshot {
    fn merge(&mut self, o: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_us += o.sum_us;
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// (upper bound in seconds, count) per bucket, not cumulative, +Inf last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let le = BUCKETS_US.get(i).map_or(f64::INFINITY, |&b| b as f64 / 1e6);
                (le, c)
            })
            .collect()
    }

    /// The upper bound (seconds) of the bucket holding quantile `q` of what was observed
    /// since `before` (None: nothing observed, or beyond the last bound).
    pub fn quantile_since(&self, before: &HistogramSnapshot, q: f64) -> Option<f64> {
        let d: Vec<u64> = self
            .counts
            .iter()
            .zip(before.counts)
            .map(|(a, b)| a.saturating_sub(b))
            .collect();
        let total: u64 = d.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut n = 0;
        for (i, c) in d.iter().enumerate() {
            n += c;
            if n >= rank {
                return BUCKETS_US.get(i).map(|&b| b as f64 / 1e6);
            }
        }
        None
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not TLS, or broken TLS (junk, a bad message, a record that does not decrypt).
    Protocol,
    /// No certificate for the name asked (and no `__default__`).
    NoCertificate,
    /// Nothing in common: versions, cipher suites, groups or ALPN protocols.
    Incompatible,
    /// The client refused (an alert: say, it does not trust the certificate).
    Alert,
    /// The client closed, or the header timeout passed, before the handshake ended.
    Incomplete,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 5] = [
        TlsFailure::Protocol,
        TlsFailure::NoCertificate,
        TlsFailure::Incompatible,
        TlsFailure::Alert,
        TlsFailure::Incomplete,
    ];
}

impl Stats {
    /// Counts a completed handshake.
    pub fn tls_handshake(&self, resumed: bool) {
        add(
            if resumed {
                &self.tls_resumed
            } else {
                &self.tls_full
            },
            1,
        );
    }

    /// Counts a failed handshake.
    pub fn tls_failed(&self, why: TlsFailure) {
        add(&self.tls_failures[why as usize], 1);
    }
}

/// What failures are counted by (status, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Connect,
    Timeout,
    UpstreamReset,
    BadResponseHead,
    BadResponseBody,
    UpstreamClosedEarly,
    BadRequestBody,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::UpstreamReset,
        ErrorClass::BadResponseHead,
        ErrorClass::BadResponseBody,
        ErrorClass::UpstreamClosedEarly,
        ErrorClass::BadRequestBody,
    ];

    /// Its name in status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::UpstreamReset => "upstream_reset",
            ErrorClass::BadResponseHead => "bad_response_head",
            ErrorClass::BadResponseBody => "bad_response_body",
            ErrorClass::UpstreamClosedEarly => "upstream_closed_early",
            ErrorClass::BadRequestBody => "bad_request_body",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Counted as an upstream failure (502) too: every class of the upstream's side but the
    /// timeout (counted as a 504).
    fn upstream_failure(self) -> bool {
        !matches!(self, ErrorClass::Timeout | ErrorClass::BadRequestBody)
    }
}

/// How a counter is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Microseconds: milliseconds in the status text, seconds in metrics.
    Micros,
}

/// One counter, as the status text, the status JSON and the metrics page show it: the one
/// table all three are generated from.
pub struct Counter {
    /// The status text line it is on (`"requests"`; `"io"` starts with the I/O model).
    pub line: &'static str,
    /// Its words on that line.
    pub text: &'static str,
    /// JSON: the object it is in (`""`: the top level) and its key.
    pub group: &'static str,
    pub key: &'static str,
    /// Metrics: name, label (name, value), whether a gauge, help (the first of a name's rows
    /// gives its help and type).
    pub metric: &'static str,
    pub label: Option<(&'static str, &'static str)>,
    pub gauge: bool,
    pub help: &'static str,
    pub unit: Unit,
    pub value: fn(&Snapshot) -> i64,
}

macro_rules! counter {
    ($line:literal, $text:literal, $group:literal . $key:literal, $metric:literal $( { $ln:literal = $lv:literal } )?, $kind:ident, $help:literal, |$s:ident| $v:expr $(, $unit:ident)?) => {
        Counter {
            line: $line,
            text: $text,
            group: $group,
            key: $key,
            metric: $metric,
            label: counter!(@label $( $ln, $lv )?),
            gauge: counter!(@gauge $kind),
            help: $help,
            unit: counter!(@unit $( $unit )?),
            value: |$s: &Snapshot| $v as i64,
        }
    };
    (@label) => { None };
    (@label $ln:literal, $lv:literal) => { Some(($ln, $lv)) };
    (@gauge gauge) => { true };
    (@gauge counter) => { false };
    (@unit) => { Unit::Count };
    (@unit $u:ident) => { Unit::$u };
}

/// Every process-wide counter, in the order they are shown.
pub const COUNTERS: &[Counter] = &[
    counter!("requests", "static hit", "requests"."static_hit", "httpd_requests_total"{"outcome"="static_hit"}, counter, "Requests by outcome.", |s| s.static_hits),
    counter!("requests", "304", "requests"."not_modified", "httpd_requests_total"{"outcome"="not_modified"}, counter, "", |s| s.not_modified),
    counter!("requests", "206", "requests"."partial", "httpd_requests_total"{"outcome"="partial"}, counter, "", |s| s.partial),
    counter!("requests", "redirect", "requests"."redirect", "httpd_requests_total"{"outcome"="redirect"}, counter, "", |s| s.redirects),
    counter!("requests", "forwarded", "requests"."forwarded", "httpd_requests_total"{"outcome"="forwarded"}, counter, "", |s| s.forwarded),
    counter!("requests", "error", "requests"."error", "httpd_requests_total"{"outcome"="error"}, counter, "", |s| s.local_errors),
    counter!("requests", "other", "requests"."other", "httpd_requests_total"{"outcome"="other"}, counter, "", |s| s.other),
    counter!("requests", "4xx", "requests"."client_error", "httpd_errors_total"{"class"="4xx"}, counter, "Error responses by class.", |s| s.client_errors),
    counter!("requests", "5xx", "requests"."server_error", "httpd_errors_total"{"class"="5xx"}, counter, "", |s| s.server_errors),
    counter!("requests", "bytes sent", ""."bytes_sent", "httpd_sent_bytes_total", counter, "Body bytes sent.", |s| s.bytes_sent),
    counter!("upstream", "open", "upstream"."open", "httpd_upstream_connections"{"state"="open"}, gauge, "Upstream connections open, by state.", |s| s.upstream_open),
    counter!("upstream", "idle", "upstream"."idle", "httpd_upstream_connections"{"state"="idle"}, gauge, "", |s| s.upstream_idle),
    counter!("upstream", "opened", "upstream"."opened", "httpd_upstream_opened_total", counter, "Upstream connections opened.", |s| s.upstream_opened),
    counter!("upstream", "reused", "upstream"."reused", "httpd_upstream_reused_total", counter, "Exchanges on a pooled connection.", |s| s.upstream_reused),
    counter!("upstream", "failures", "upstream"."failures", "httpd_upstream_failures_total", counter, "Upstream failures (502).", |s| s.upstream_failures),
    counter!("upstream", "timeouts", "upstream"."timeouts", "httpd_upstream_timeouts_total", counter, "Upstream timeouts (504).", |s| s.upstream_timeouts),
    counter!("failed exchanges", "connect", "failed_exchanges"."connect", "httpd_failed_exchanges_total"{"class"="connect"}, counter, "Forwarded exchanges that failed, by class.", |s| s.proxy_errors[0]),
    counter!("failed exchanges", "timeout", "failed_exchanges"."timeout", "httpd_failed_exchanges_total"{"class"="timeout"}, counter, "", |s| s.proxy_errors[1]),
    counter!("failed exchanges", "upstream reset", "failed_exchanges"."upstream_reset", "httpd_failed_exchanges_total"{"class"="upstream_reset"}, counter, "", |s| s.proxy_errors[2]),
    counter!("failed exchanges", "bad response head", "failed_exchanges"."bad_response_head", "httpd_failed_exchanges_total"{"class"="bad_response_head"}, counter, "", |s| s.proxy_errors[3]),
    counter!("failed exchanges", "bad response body", "failed_exchanges"."bad_response_body", "httpd_failed_exchanges_total"{"class"="bad_response_body"}, counter, "", |s| s.proxy_errors[4]),
    counter!("failed exchanges", "upstream closed early", "failed_exchanges"."upstream_closed_early", "httpd_failed_exchanges_total"{"class"="upstream_closed_early"}, counter, "", |s| s.proxy_errors[5]),
    counter!("failed exchanges", "bad request body", "failed_exchanges"."bad_request_body", "httpd_failed_exchanges_total"{"class"="bad_request_body"}, counter, "", |s| s.proxy_errors[6]),
    counter!("tunnels", "opened", "tunnels"."opened", "httpd_tunnels_total"{"mode"="opened"}, counter, "Upgrade tunnels opened, and those spliced in the kernel (both ways, or upstream to client).", |s| s.tunnels),
    counter!("tunnels", "spliced", "tunnels"."spliced", "httpd_tunnels_total"{"mode"="spliced"}, counter, "", |s| s.tunnels_spliced),
    counter!("tunnels", "half-spliced", "tunnels"."half_spliced", "httpd_tunnels_total"{"mode"="half_spliced"}, counter, "", |s| s.tunnels_half_spliced),
    counter!("io", "cold reads", "cold_reads"."reads", "httpd_cold_reads_total", counter, "Reads of webroot bytes not in the page cache, done off the event loop.", |s| s.cold_reads),
    counter!("io", "bytes", "cold_reads"."bytes", "httpd_cold_read_bytes_total", counter, "Bytes read by cold reads.", |s| s.cold_bytes),
    counter!("io", "waited", "cold_reads"."wait_us", "httpd_cold_wait_seconds_total", counter, "Time connections waited for cold reads (queued and reading).", |s| s.cold_wait_us, Micros),
    counter!("io", "in flight", "cold_reads"."in_flight", "httpd_cold_reads_in_flight", gauge, "Cold reads queued or running.", |s| s.cold_in_flight),
    counter!("tls", "full handshakes", "tls"."full", "httpd_tls_handshakes_total"{"kind"="full"}, counter, "TLS handshakes completed, full or resumed.", |s| s.tls_full),
    counter!("tls", "resumed", "tls"."resumed", "httpd_tls_handshakes_total"{"kind"="resumed"}, counter, "", |s| s.tls_resumed),
    counter!("tls failures", "protocol", "tls_failures"."protocol", "httpd_tls_failures_total"{"reason"="protocol"}, counter, "TLS handshakes that failed, by reason.", |s| s.tls_failures[0]),
    counter!("tls failures", "no certificate", "tls_failures"."no_certificate", "httpd_tls_failures_total"{"reason"="no_certificate"}, counter, "", |s| s.tls_failures[1]),
    counter!("tls failures", "incompatible", "tls_failures"."incompatible", "httpd_tls_failures_total"{"reason"="incompatible"}, counter, "", |s| s.tls_failures[2]),
    counter!("tls failures", "alert", "tls_failures"."alert", "httpd_tls_failures_total"{"reason"="alert"}, counter, "", |s| s.tls_failures[3]),
    counter!("tls failures", "incomplete", "tls_failures"."incomplete", "httpd_tls_failures_total"{"reason"="incomplete"}, counter, "", |s| s.tls_failures[4]),
    counter!("proxy protocol", "refused", "proxy_protocol"."refused", "httpd_proxy_protocol_refused_total", counter, "Connections closed on a PROXY protocol listener: untrusted source or no valid header.", |s| s.proxy_refused),
];

/// Counters of one host name, kept across webroot replacements.
#[derive(Default, Debug)]
pub struct HostStats {
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub bytes: AtomicU64,
}

impl HostStats {
    pub fn request(&self, hit: bool, bytes: u64) {
        add(&self.requests, 1);
        if hit {
            add(&self.hits, 1);
        }
        add(&self.bytes, bytes);
    }

    pub fn snapshot(&self) -> (u64, u64, u64) {
        (get(&self.requests), get(&self.hits), get(&self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds are inclusive (Prometheus' `le`); past the last one is +Inf.
    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_micros(900));
        h.observe(Duration::from_secs(61));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[4], 1, "900 us: le 1 ms");
        assert_eq!(s.counts[BUCKETS_US.len()], 1, "+Inf");
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 50 + 51 + 900 + 61_000_000);
        let b = s.buckets();
        assert_eq!(b.len(), BUCKETS_US.len() + 1);
        assert_eq!(b[0], (0.00005, 1));
        assert!(b[BUCKETS_US.len()].0.is_infinite());
        let none = HistogramSnapshot::default();
        assert_eq!(s.quantile_since(&none, 0.5), Some(0.0001));
        assert_eq!(s.quantile_since(&none, 0.75), Some(0.001));
        assert_eq!(s.quantile_since(&none, 1.0), None, "beyond the last bound");
        assert_eq!(s.quantile_since(&s, 0.5), None, "nothing new");
    }

    /// The set sums every worker's block and the others'.
    #[test]
    fn the_set_sums_its_blocks() {
        let set = StatsSet::new(2);
        set.worker(0).request(200, 10, false);
        set.worker(1).request(200, 5, false);
        set.worker(1).request(502, 0, true);
        set.worker(1).request(404, 0, false);
        set.others().cold_in_flight.fetch_add(3, Ordering::Relaxed);
        set.worker(0)
            .observe(Outcome::Static, Duration::from_micros(10));
        set.worker(1)
            .observe(Outcome::Static, Duration::from_micros(10));
        set.worker(1).turn();
        let s = set.snapshot();
        assert_eq!(
            (s.static_hits, s.forwarded, s.local_errors, s.bytes_sent),
            (2, 1, 1, 15)
        );
        assert_eq!(s.durations_count(), 2);
        assert_eq!(s.cold_in_flight, 3);
        assert_eq!(s.durations[Outcome::Static as usize].count(), 2);
        assert_eq!(set.turns(), vec![Some(0), Some(1)], "workers only");
        set.worker(0).ended.store(true, Ordering::Release);
        assert_eq!(set.turns(), vec![None, Some(1)]);
    }

    /// The table the status text, the JSON and the metrics come from: each metric's rows
    /// together, its first row with help; each failed-exchange row reads its own class.
    #[test]
    fn counter_table_is_consistent() {
        let mut seen = std::collections::BTreeSet::new();
        let mut prev = "";
        for c in COUNTERS {
            if c.metric != prev {
                assert!(seen.insert(c.metric), "{} split in two", c.metric);
                assert!(!c.help.is_empty(), "{} has no help", c.metric);
                prev = c.metric;
            }
        }
        let stats = Stats::default();
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            stats.proxy_errors[i].fetch_add(i as u64 + 1, Ordering::Relaxed);
            let row = COUNTERS
                .iter()
                .find(|c| c.group == "failed_exchanges" && c.key == class.name())
                .expect("a row per class");
            assert_eq!(
                (row.value)(&stats.snapshot()),
                i as i64 + 1,
                "{}",
                class.name()
            );
        }
    }
}
