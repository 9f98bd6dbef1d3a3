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

/// CPU time (ns) used so far by this process's threads, split into the group commit writer
/// (`obmen-writer`), threads whose name starts with `others` (the load generator), and the
/// rest. Read from /proc/self/task/*/schedstat; zeros where there is no /proc.
#[allow(dead_code, reason = "only the load test splits CPU by thread")]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSplit {
    pub writer: u64,
    pub generator: u64,
    pub rest: u64,
}

#[allow(dead_code, reason = "only the load test splits CPU by thread")]
pub fn cpu_split(generator_prefix: &str) -> CpuSplit {
    let mut split = CpuSplit::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return split;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let comm = comm.trim();
        if comm == "obmen-writer" {
            split.writer += ns;
        } else if comm.starts_with(generator_prefix) {
            split.generator += ns;
        } else {
            split.rest += ns;
        }
    }
    split
}
