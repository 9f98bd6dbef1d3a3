//! The overview (one row per flow, health at a glance) and the error dashboard (failures
//! grouped into problems). Both read counters and groups, never the journal.

use maud::{Markup, html};

use crate::engine::Engine;
use crate::engine::flow::Flow;
use crate::model::{Millis, Status, now_ms};
use crate::store::query;
use crate::store::{StoreError, records::ErrorGroup};

use super::i18n::{self, Lang};
use super::layout;
use super::session::PageUser;

/// How long an exchange may wait in the queue before the flow counts as degraded.
const STUCK_AFTER_MS: u64 = 15 * 60 * 1000;
const DAY_MS: u64 = 86_400_000;
/// Error groups shown on one page, most recently seen first.
const MAX_GROUPS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Failing,
}

/// The rules, also in docs/STATUS_PAGE.md: failing when the latest outcome in the last 24 h
/// is a failure (an error newer than the last success); degraded when anything failed,
/// was rejected or is retrying in the last 24 h, or the oldest waiting exchange waits
/// longer than 15 minutes; healthy otherwise.
pub fn health(
    day: &[u64; 10],
    last: [Option<(Millis, u64)>; 2],
    oldest_waiting: Option<Millis>,
    now: Millis,
) -> Health {
    let bad = day[Status::Failed.code() as usize] + day[Status::Rejected.code() as usize];
    let error_newer = match last {
        [ok, Some((err, _))] => {
            ok.is_none_or(|(ok, _)| err > ok) && now.saturating_sub(err) < DAY_MS
        }
        _ => false,
    };
    if bad > 0 && error_newer {
        return Health::Failing;
    }
    let stuck = oldest_waiting.is_some_and(|t| now.saturating_sub(t) > STUCK_AFTER_MS);
    if bad > 0 || day[Status::Retrying.code() as usize] > 0 || stuck {
        return Health::Degraded;
    }
    Health::Healthy
}

fn health_badge(h: Health, lang: Lang) -> Markup {
    let (class, label) = match h {
        Health::Healthy => ("ok", i18n::HEALTHY.get(lang)),
        Health::Degraded => ("warn", i18n::DEGRADED.get(lang)),
        Health::Failing => ("bad", i18n::FAILING.get(lang)),
    };
    html! { span class=(format!("health {class}")) { (label) } }
}

struct FlowRow {
    health: Health,
    day: [u64; 10],
    week: [u64; 10],
    last: [Option<(Millis, u64)>; 2],
    waiting: u64,
    oldest: Option<Millis>,
    hourly: Vec<u64>,
    next: Option<String>,
}

fn flow_row(engine: &Engine, flow: &Flow, now: Millis) -> Result<FlowRow, StoreError> {
    let txn = engine.store.read()?;
    let day = query::counts_since(&txn, &flow.name, now.saturating_sub(DAY_MS))?;
    let week = query::counts_since(&txn, &flow.name, now.saturating_sub(7 * DAY_MS))?;
    let last = query::flow_last(&txn, &flow.name)?;
    let (waiting, oldest) = query::flow_waiting(&txn, &flow.name)?;
    let hourly = query::hourly_totals(&txn, &flow.name, now, 24)?;
    let next = next_run(flow);
    Ok(FlowRow {
        health: health(&day, last, oldest, now),
        day,
        week,
        last,
        waiting,
        oldest,
        hourly,
        next,
    })
}

/// The next scheduled run in the flow's own time zone, which is how its cron reads.
fn next_run(flow: &Flow) -> Option<String> {
    let crate::engine::flow::Trigger::Schedule { tz, .. } = &flow.trigger else {
        return None;
    };
    let at = Engine::next_tick(flow)?.with_timezone(tz);
    Some(format!("{} {}", at.format("%Y-%m-%d %H:%M"), tz.name()))
}

/// The overview. With `public` (no token, status_page.public) only health and counts.
pub fn overview(engine: &Engine, user: &PageUser, public: bool) -> Result<Markup, StoreError> {
    let lang = user.lang;
    let now = now_ms();
    let mut rows = Vec::new();
    for flow in engine.flows.values() {
        rows.push((flow, flow_row(engine, flow, now)?));
    }
    let body = html! {
        @if public { p.note { (i18n::PUBLIC_NOTE.get(lang)) } }
        div.table-wrap { table.flows {
            thead { tr {
                th { (i18n::FLOW.get(lang)) } th { (i18n::STATE.get(lang)) } th { (i18n::LAST_24H.get(lang)) }
                th { (i18n::LAST_7D.get(lang)) } th { (i18n::LAST_SUCCESS.get(lang)) } th { (i18n::LAST_ERROR.get(lang)) }
                th { (i18n::NEXT_RUN.get(lang)) } th { (i18n::QUEUE.get(lang)) } th { (i18n::PER_HOUR.get(lang)) }
            } }
            tbody { @for (flow, r) in &rows { tr {
                td.name { @if public { (flow.name) } @else { a href=(format!("/exchanges?flow={}", flow.name)) { (flow.name) } } }
                td { (health_badge(r.health, lang)) }
                td { (layout::counts(&r.day, lang)) }
                td { (layout::counts(&r.week, lang)) }
                td { (layout::time(r.last[0].map(|l| l.0), lang)) }
                td { @match (r.last[1], public) {
                    (Some((t, id)), false) => a href=(format!("/exchanges/{id}")) { (layout::time(Some(t), lang)) },
                    (other, _) => (layout::time(other.map(|l| l.0), lang)),
                } }
                td { (r.next.clone().unwrap_or_else(|| "—".into())) }
                td { (r.waiting) @if let Some(o) = r.oldest { " (" (i18n::OLDEST.get(lang)) " " (layout::age(o)) ")" } }
                td { (layout::sparkline(&r.hourly, i18n::PER_HOUR.get(lang))) }
            } } }
        } }
    };
    Ok(layout::page(user, i18n::OVERVIEW.get(lang), &body))
}

/// The error dashboard: groups with count, first/last seen, an example, and for admins a
/// "retry all" form.
pub fn errors(engine: &Engine, user: &PageUser, flow: Option<&str>) -> Result<Markup, StoreError> {
    let lang = user.lang;
    let mut groups: Vec<(String, ErrorGroup)> = query::error_groups(&engine.store.read()?, flow)?;
    // The most recent problems; a flood of distinct messages must not make the page huge.
    let hidden = groups.len().saturating_sub(MAX_GROUPS);
    groups.truncate(MAX_GROUPS);
    let body = html! {
        @if hidden > 0 { p.note { (hidden) " " (i18n::MORE_GROUPS.get(lang)) } }
        @if groups.is_empty() { p.note { (i18n::NO_ERRORS.get(lang)) } }
        @else { div.table-wrap { table.errors {
            thead { tr {
                th { (i18n::FLOW.get(lang)) } th { (i18n::STEP.get(lang)) } th { (i18n::CLASS.get(lang)) }
                th { (i18n::MESSAGE.get(lang)) } th { (i18n::COUNT.get(lang)) } th { (i18n::FIRST_SEEN.get(lang)) }
                th { (i18n::LAST_SEEN.get(lang)) } th { (i18n::SAMPLE.get(lang)) }
                @if user.is_admin() { th {} }
            } }
            tbody { @for (id, g) in &groups { tr {
                td { (g.flow) } td { (g.step.as_deref().unwrap_or("—")) }
                td { span class=(format!("class c-{}", g.class.as_str())) { (i18n::class(g.class, lang)) } }
                td.msg { div { (g.normalized) } small { (g.sample_message.as_str()) } }
                td { (g.count) } td { (layout::time(Some(g.first_seen), lang)) } td { (layout::time(Some(g.last_seen), lang)) }
                td { a href=(format!("/exchanges/{}", g.sample_id)) { (g.sample_id) } }
                @if user.is_admin() { td { form method="post" action=(format!("/errors/{id}/retry")) {
                    input type="hidden" name="csrf" value=(user.csrf.clone().unwrap_or_default());
                    button type="submit" { (i18n::RETRY_ALL.get(lang)) }
                } } }
            } } }
        } } }
    };
    Ok(layout::page(user, i18n::ERRORS.get(lang), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_rules() {
        let now = 10 * DAY_MS;
        let mut day = [0; 10];
        assert_eq!(health(&day, [None, None], None, now), Health::Healthy);
        assert_eq!(
            health(&day, [None, None], Some(now - STUCK_AFTER_MS - 1), now),
            Health::Degraded
        );
        day[Status::Failed.code() as usize] = 1;
        let ok_then_err = [Some((now - 100, 1)), Some((now - 50, 2))];
        assert_eq!(health(&day, ok_then_err, None, now), Health::Failing);
        let err_then_ok = [Some((now - 50, 1)), Some((now - 100, 2))];
        assert_eq!(health(&day, err_then_ok, None, now), Health::Degraded);
    }
}
