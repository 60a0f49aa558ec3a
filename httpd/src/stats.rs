//! Counters for `httpd ctl status` and the Prometheus endpoint: process-wide atomics (relaxed
//! increments, no locks on the serving path) and per-host counters that survive webroot swaps.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Process-wide counters.
pub struct Stats {
    pub started: Instant,
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
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
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
                301 => add(&self.redirects, 1),
                _ => {}
            }
        }
        match status {
            400..=499 => add(&self.client_errors, 1),
            500..=599 => add(&self.server_errors, 1),
            _ => {}
        }
        add(&self.bytes_sent, bytes);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs(),
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
        }
    }
}

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
