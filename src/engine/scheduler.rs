//! Schedule triggers: each tick of a flow's cron (in its time zone) becomes an exchange
//! whose external id is the tick time, so a tick fired twice around a restart is one
//! exchange. The payload carries the flow's stored cursor for incremental polling.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::store::query;

use super::Engine;
use super::flow::{Flow, Trigger};
use super::intake::Event;

/// Longest sleep before the next tick is computed again (clock changes, DST).
const RECHECK: Duration = Duration::from_secs(60);

impl Engine {
    /// Next tick of a schedule flow, if it has one.
    pub fn next_tick(flow: &Flow) -> Option<chrono::DateTime<Utc>> {
        let Trigger::Schedule { schedule, tz, .. } = &flow.trigger else {
            return None;
        };
        schedule
            .after(&Utc::now().with_timezone(tz))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Runs one flow's schedule until shutdown.
    pub async fn schedule(self: Arc<Self>, flow: Arc<Flow>) {
        loop {
            let Some(tick) = Self::next_tick(&flow) else {
                tracing::warn!(flow = %flow.name, "the schedule has no future run");
                return;
            };
            let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            let sleep = wait.min(RECHECK);
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(sleep) => {}
            }
            if sleep < wait {
                continue;
            }
            self.fire(&flow, tick).await;
        }
    }

    async fn fire(&self, flow: &Flow, tick: chrono::DateTime<Utc>) {
        let cursor = self
            .store
            .read()
            .and_then(|r| query::cursor(&r, &flow.name))
            .ok()
            .flatten();
        let payload = json!({"id": format!("tick:{}", tick.to_rfc3339()), "scheduled_at": tick.to_rfc3339(), "cursor": cursor});
        let event = Event {
            source: "schedule",
            payload,
            request_id: None,
        };
        if let Err(e) = self.accept(flow, event).await {
            tracing::error!(flow = %flow.name, error = %e, "cannot record a scheduled run");
        }
    }
}
