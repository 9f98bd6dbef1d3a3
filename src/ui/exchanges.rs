//! The exchange list (the API's filters, paged) and one exchange's detail: its timeline of
//! received → attempts (masked requests and answers) → status changes → manual actions,
//! its step checkpoints and ID-map links, and for admins a Retry form.

use maud::{Markup, html};
use serde_json::Value;

use crate::engine::Engine;
use crate::model::Status;
use crate::store::StoreError;
use crate::store::query::{self, Filter};
use crate::store::records::{AttemptRecord, CallRecord, EventKind, ExchangeRecord, JournalEvent};

use super::i18n::{self, Lang};
use super::layout;
use super::session::PageUser;

/// The list page's query string (the same names as the API).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListParams {
    pub flow: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub key: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<u64>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub fn list(engine: &Engine, user: &PageUser, p: &ListParams) -> Result<Markup, StoreError> {
    let lang = user.lang;
    let store = &engine.store;
    let filter = Filter {
        flow: nonempty(&p.flow).map(str::to_owned),
        status: nonempty(&p.status).and_then(Status::parse),
        since: nonempty(&p.since).and_then(|t| crate::http::api::parse_time(t).ok()),
        until: nonempty(&p.until).and_then(|t| crate::http::api::parse_time(t).ok()),
        key_hash: nonempty(&p.key).map(|k| store.lookup_hash(k)),
        q: nonempty(&p.q).map(|q| (q.to_owned(), store.lookup_hash(q))),
        limit: 50,
        cursor: p.cursor,
    };
    let page = query::list(&store.read()?, &filter)?;
    let next = page.next_cursor.map(|c| next_link(p, c));
    let body = html! {
        form.filters method="get" action="/exchanges" {
            label { (i18n::FLOW.get(lang)) select name="flow" {
                option value="" { (i18n::ANY.get(lang)) }
                @for name in engine.flows.keys() { option value=(name) selected[p.flow.as_deref() == Some(name)] { (name) } }
            } }
            label { (i18n::STATUS.get(lang)) select name="status" {
                option value="" { (i18n::ANY.get(lang)) }
                @for s in Status::ALL { option value=(s.as_str()) selected[p.status.as_deref() == Some(s.as_str())] { (i18n::status(s, lang)) } }
            } }
            label { (i18n::SINCE.get(lang)) input name="since" placeholder="24h" value=(p.since.clone().unwrap_or_default()); }
            label { (i18n::UNTIL.get(lang)) input name="until" placeholder="2026-11-27T00:00:00Z" value=(p.until.clone().unwrap_or_default()); }
            label { (i18n::KEY.get(lang)) input name="key" value=(p.key.clone().unwrap_or_default()); }
            label.wide { "id" input name="q" placeholder=(i18n::SEARCH.get(lang)) value=(p.q.clone().unwrap_or_default()); }
            button type="submit" { (i18n::FILTER.get(lang)) }
        }
        @if page.items.is_empty() { p.note { (i18n::NOTHING.get(lang)) } }
        @else { div.table-wrap { table.exchanges {
            thead { tr {
                th { "id" } th { (i18n::FLOW.get(lang)) } th { (i18n::STATUS.get(lang)) } th { "external id" }
                th { (i18n::CREATED.get(lang)) } th { (i18n::ATTEMPTS.get(lang)) } th { (i18n::LAST_ERROR.get(lang)) }
            } }
            tbody { @for r in &page.items { tr {
                td { a href=(format!("/exchanges/{}", r.id)) { (r.id) } }
                td { (r.flow) } td { (layout::badge(r.status, lang)) }
                td { (r.external_id.as_deref().unwrap_or("—")) }
                td { (layout::time(Some(r.created_at), lang)) } td { (r.attempts) }
                td.msg { @if let Some(e) = &r.last_error { (i18n::class(e.class, lang)) ": " (e.message.as_str()) } }
            } } }
        } } }
        @if let Some(href) = next { p { a.button href=(href) { (i18n::NEXT_PAGE.get(lang)) " →" } } }
    };
    Ok(layout::page(user, i18n::EXCHANGES.get(lang), &body))
}

fn next_link(p: &ListParams, cursor: u64) -> String {
    let mut q = vec![format!("cursor={cursor}")];
    for (k, v) in [
        ("flow", &p.flow),
        ("status", &p.status),
        ("since", &p.since),
        ("until", &p.until),
        ("key", &p.key),
        ("q", &p.q),
    ] {
        if let Some(v) = nonempty(v) {
            q.push(format!("{k}={}", crate::mask::url_encode(v)));
        }
    }
    format!("/exchanges?{}", q.join("&"))
}

pub fn detail(engine: &Engine, user: &PageUser, id: u64) -> Result<Option<Markup>, StoreError> {
    let lang = user.lang;
    let txn = engine.store.read()?;
    let Some(rec) = query::exchange(&txn, id)? else {
        return Ok(None);
    };
    let journal = query::journal(&txn, id)?;
    let links = query::links(&txn, id)?;
    let body = html! {
        (summary(&rec, lang))
        @if user.is_admin() && !rec.status.is_pending() && rec.status != Status::Duplicate { (retry_form(&rec, user)) }
        h2 { (i18n::STEPS.get(lang)) }
        ol.steps { @for (i, s) in rec.steps.iter().enumerate() { li {
            b { (s.name) } " — " @if s.done_at.is_some() { span.done { (i18n::DONE.get(lang)) } } @else { span { (i18n::NOT_DONE.get(lang)) } }
            @if let Some(out) = step_output(&journal, i) { pre { (out) } }
        } } }
        @if !links.is_empty() {
            h2 { (i18n::LINKS.get(lang)) }
            ul { @for [system, entity, key, target] in &links { li { (system) "." (entity) ": " (key) " → " b { (target) } } } }
        }
        h2 { (i18n::TIMELINE.get(lang)) }
        ol.timeline { @for e in &chronological(&journal) { (event(e, lang)) } }
    };
    Ok(Some(layout::page(
        user,
        &format!("{} {}", rec.flow, rec.id),
        &body,
    )))
}

/// The journal in the order things happened: an attempt is recorded when it ends, but it
/// belongs where it started, before the steps it completed.
fn chronological(journal: &[JournalEvent]) -> Vec<&JournalEvent> {
    let mut events: Vec<&JournalEvent> = journal.iter().collect();
    events.sort_by_key(|e| match &e.kind {
        EventKind::Attempt(a) => a.started_at,
        _ => e.at,
    });
    events
}

fn summary(rec: &ExchangeRecord, lang: Lang) -> Markup {
    html! { dl.summary {
        dt { (i18n::STATUS.get(lang)) } dd { (layout::badge(rec.status, lang)) }
        dt { "request_id" } dd { code { (rec.request_id) } }
        dt { "external id" } dd { (rec.external_id.as_deref().unwrap_or("—")) }
        dt { (i18n::KEY.get(lang)) } dd { (rec.key.as_deref().unwrap_or("—")) }
        dt { (i18n::CREATED.get(lang)) } dd { (layout::time(Some(rec.created_at), lang)) }
        dt { (i18n::ATTEMPTS.get(lang)) } dd { (rec.attempts) }
        @if let Some(o) = rec.original_id { dt { (i18n::DUPLICATE_OF.get(lang)) } dd { a href=(format!("/exchanges/{o}")) { (o) } } }
        @if let (Some(e), true) = (&rec.last_error, matches!(rec.status, Status::Failed | Status::Rejected | Status::Retrying)) {
            dt { (i18n::LAST_ERROR.get(lang)) } dd.error { (i18n::class(e.class, lang)) " · " (e.step.as_deref().unwrap_or("")) ": " (e.message.as_str()) }
        }
    } }
}

fn retry_form(rec: &ExchangeRecord, user: &PageUser) -> Markup {
    let finished = matches!(
        rec.status,
        Status::Succeeded | Status::Skipped | Status::DryRun
    );
    html! { form.retry method="post" action=(format!("/exchanges/{}/retry", rec.id)) {
        input type="hidden" name="csrf" value=(user.csrf.clone().unwrap_or_default());
        @if finished { label { input type="checkbox" name="force" value="true"; " " (i18n::FORCE.get(user.lang)) } }
        button type="submit" { (i18n::RETRY.get(user.lang)) }
    } }
}

fn step_output(journal: &[JournalEvent], index: usize) -> Option<String> {
    journal.iter().rev().find_map(|e| match &e.kind {
        EventKind::StepDone {
            index: i, output, ..
        } if *i as usize == index => Some(pretty(output.as_str())),
        _ => None,
    })
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_owned())
}

fn event(e: &JournalEvent, lang: Lang) -> Markup {
    let at = layout::time(Some(e.at), lang);
    html! { li {
        span.at { (at) } " "
        @match &e.kind {
            EventKind::Received { source, payload } => { b { (i18n::RECEIVED.get(lang)) } " (" (source) ")" pre { (pretty(payload.as_str())) } }
            EventKind::StatusChanged { from, to, reason } => {
                b { (i18n::STATUS_CHANGE.get(lang)) } " "
                @if let Some(f) = from { (layout::badge(*f, lang)) " → " } (layout::badge(*to, lang))
                @if let Some(r) = reason { div.reason { (r.as_str()) } }
            }
            EventKind::Attempt(a) => (attempt(a, lang)),
            EventKind::StepDone { name, .. } => { b { (i18n::STEP_DONE.get(lang)) } " " (name) }
            EventKind::Linked { system, entity, external_key, target_id } => {
                b { (i18n::LINKED.get(lang)) } " " (system) "." (entity) " " (external_key.as_str()) " → " (target_id.as_str())
            }
            EventKind::Manual { action, by } => { b { (i18n::MANUAL.get(lang)) } " " (action) " · " (by) }
            EventKind::Delivered { to, detail } => { b { (i18n::DELIVERED.get(lang)) } " " (to) " · " (detail) }
        }
    } }
}

fn attempt(a: &AttemptRecord, lang: Lang) -> Markup {
    html! {
        b { (i18n::ATTEMPT.get(lang)) " " (a.number) } " · " (i18n::DURATION.get(lang)) " " (a.duration_ms) " ms"
        @if let Some(e) = &a.error {
            div.error { span class=(format!("class c-{}", e.class.as_str())) { (i18n::class(e.class, lang)) } " " (e.step.as_deref().unwrap_or("")) ": " (e.message.as_str()) }
        }
        @for c in &a.calls { (call(c, lang)) }
    }
}

fn call(c: &CallRecord, lang: Lang) -> Markup {
    html! { details.call {
        summary {
            code { (c.method) " " (c.url.as_str()) } " "
            @match c.status { Some(s) => span class=(if s < 400 { "http ok" } else { "http bad" }) { (s) }, None => {} }
            @if !c.sent { " " em { (i18n::WOULD_SEND.get(lang)) } }
            " " (c.duration_ms) " ms"
        }
        @for (k, v) in &c.headers { div.h { code { (k) ": " (v.as_str()) } } }
        @if let Some(b) = &c.body { pre { (pretty(b.as_str())) } }
        @if let Some(r) = &c.response { pre.response { (pretty(r.as_str())) } }
        @if let Some(e) = &c.error { div.error { (e.as_str()) } }
    } }
}
