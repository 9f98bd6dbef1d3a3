//! Helpers shared by the benchmarks (`loadtest`, `pagebench`): memory readings and latency
//! percentiles.

use std::time::Duration;

/// A field of /proc/self/status in kB (`VmRSS`, `VmHWM`); 0 where there is no /proc.
pub fn proc_status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
