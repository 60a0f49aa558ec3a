//! The Date header, formatted once per second per worker.

use std::time::{SystemTime, UNIX_EPOCH};

pub struct DateCache {
    secs: u64,
    value: String,
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache {
            secs: u64::MAX,
            value: String::new(),
        }
    }
}

impl DateCache {
    /// The current IMF-fixdate.
    pub fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.value = httpdate::fmt_http_date(now);
        }
        &self.value
    }

    /// The IMF-fixdate of the last `now()` (the worker refreshes it once per turn of its
    /// loop; a connection's drive reads it without asking the clock again).
    pub fn current(&self) -> &str {
        &self.value
    }

    /// Seconds since the epoch of the last `now()`.
    pub fn secs(&self) -> u64 {
        self.secs
    }
}
