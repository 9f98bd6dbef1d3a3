//! In-memory runtime measurements that are not in the store: outbound call latency per
//! system, as a Prometheus histogram. Counts by status come from the store's counters.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in milliseconds.
pub const BUCKETS_MS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Cumulative counts per bucket bound, as Prometheus wants them.
    pub buckets: [u64; BUCKETS_MS.len()],
    pub count: u64,
    pub sum_ms: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    calls: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn observe_call(&self, system: &str, ms: u64) {
        let Ok(mut calls) = self.calls.lock() else {
            return;
        };
        let h = calls.entry(system.to_owned()).or_default();
        for (slot, bound) in h.buckets.iter_mut().zip(BUCKETS_MS) {
            if ms <= bound {
                *slot += 1;
            }
        }
        h.count += 1;
        h.sum_ms += ms;
    }

    pub fn calls(&self) -> BTreeMap<String, Histogram> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
