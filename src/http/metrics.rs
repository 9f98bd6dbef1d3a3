//! `/metrics` in Prometheus text format, read from the store's counters (no journal scan)
//! and the in-memory latency histograms.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::metrics::BUCKETS_MS;
use crate::model::{Status, now_ms};
use crate::store::query;

use super::AppState;
use super::auth::Viewer;
use super::error::ApiError;

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain")),
    security(("bearer" = [])))]
pub async fn metrics(
    _viewer: Viewer,
    State(s): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let text = render(&s)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

fn render(s: &AppState) -> Result<String, ApiError> {
    let txn = s.engine.store.read()?;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# HELP obmen_exchanges Exchanges by flow and current status.\n# TYPE obmen_exchanges gauge"
    );
    for flow in s.engine.flows.keys() {
        let counts = query::counts(&txn, flow)?;
        for (status, n) in Status::ALL.iter().zip(counts) {
            let _ = writeln!(
                w,
                "obmen_exchanges{{flow=\"{flow}\",status=\"{status}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        w,
        "# HELP obmen_attempt_errors_total Failed attempts by flow and error class.\n# TYPE obmen_attempt_errors_total counter"
    );
    for (flow, class, n) in query::attempt_errors(&txn)? {
        let _ = writeln!(
            w,
            "obmen_attempt_errors_total{{flow=\"{flow}\",class=\"{class}\"}} {n}"
        );
    }
    let q = query::queue_stats(&txn)?;
    let oldest = q
        .oldest_due
        .map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0);
    let _ = writeln!(
        w,
        "# HELP obmen_queue_depth Exchanges waiting in the queue.\n# TYPE obmen_queue_depth gauge\nobmen_queue_depth {}",
        q.waiting
    );
    let _ = writeln!(
        w,
        "# HELP obmen_running Exchanges being worked on.\n# TYPE obmen_running gauge\nobmen_running {}",
        q.running
    );
    let _ = writeln!(
        w,
        "# HELP obmen_queue_oldest_age_seconds How long the oldest due exchange has waited.\n# TYPE obmen_queue_oldest_age_seconds gauge\nobmen_queue_oldest_age_seconds {oldest:.3}"
    );
    let _ = writeln!(
        w,
        "# HELP obmen_outbound_latency_seconds Outbound call latency by system.\n# TYPE obmen_outbound_latency_seconds histogram"
    );
    for (system, h) in s.engine.metrics.calls() {
        for (bound, n) in BUCKETS_MS.iter().zip(h.buckets) {
            let _ = writeln!(
                w,
                "obmen_outbound_latency_seconds_bucket{{system=\"{system}\",le=\"{}\"}} {n}",
                *bound as f64 / 1000.0
            );
        }
        let _ = writeln!(
            w,
            "obmen_outbound_latency_seconds_bucket{{system=\"{system}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            w,
            "obmen_outbound_latency_seconds_sum{{system=\"{system}\"}} {}",
            h.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(
            w,
            "obmen_outbound_latency_seconds_count{{system=\"{system}\"}} {}",
            h.count
        );
    }
    let (commits, writes) = s.engine.store.write_stats();
    let _ = writeln!(
        w,
        "# HELP obmen_store_commits_total Durable commits of the journal (one fsync each).\n# TYPE obmen_store_commits_total counter\nobmen_store_commits_total {commits}"
    );
    let _ = writeln!(
        w,
        "# HELP obmen_store_writes_total Writes applied; writes / commits is the group-commit batch size.\n# TYPE obmen_store_writes_total counter\nobmen_store_writes_total {writes}"
    );
    let size = std::fs::metadata(s.engine.store.path())
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = writeln!(
        w,
        "# HELP obmen_journal_bytes Size of the data file.\n# TYPE obmen_journal_bytes gauge\nobmen_journal_bytes {size}"
    );
    Ok(out)
}
