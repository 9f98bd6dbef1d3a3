//! Intake: a trigger becomes an exchange. Validation, the external id and idempotency key
//! are computed here; the store then dedups, journals and queues it in one durable commit.

use serde_json::Value;

use crate::model::{ErrorClass, Status, now_ms};
use crate::store::ops::{self, NewExchange};
use crate::store::records::{ErrorSummary, WorkState};
use crate::store::{StoreError, Tx};

use super::Engine;
use super::flow::{Flow, Mode};
use super::jq::JqFailure;

/// A trigger event as it arrives: webhook, manual run, schedule tick.
#[derive(Debug)]
pub struct Event {
    pub source: &'static str,
    pub payload: Value,
    pub request_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Accepted {
    pub id: u64,
    pub status: Status,
    pub request_id: String,
    pub original_id: Option<u64>,
    /// Why the input was rejected, when it was (masked).
    pub errors: Vec<String>,
}

/// What intake decided before anything is stored; dry runs show it without storing.
pub struct Decided {
    pub request_id: String,
    pub external_id: Option<String>,
    pub key: Option<String>,
    pub errors: Vec<String>,
}

/// A caller's `X-Request-Id` is kept when it is a sane token; otherwise one is generated.
pub fn request_id(given: Option<&str>) -> String {
    match given {
        Some(id) if valid_request_id(id) => id.to_owned(),
        _ => uuid_v7(now_ms()),
    }
}

/// A UUIDv7 (RFC 9562): the creation time in ms, then randomness. Ids made in order sort in
/// order, so the request-id index grows at its end instead of at random places.
fn uuid_v7(now_ms: u64) -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub fn decide(flow: &Flow, payload: &Value, given_request_id: Option<&str>) -> Decided {
    let mut errors = Vec::new();
    if let Some(schema) = &flow.schema {
        errors.extend(
            schema
                .errors(payload)
                .into_iter()
                .map(|e| format!("schema: {e}")),
        );
    }
    let (external_id, key) = ids(flow, payload, &mut errors);
    Decided {
        request_id: request_id(given_request_id),
        external_id,
        key,
        errors,
    }
}

/// The external id and the idempotency key of a trigger, raw (the journal keeps them
/// masked); what goes wrong is added to `errors`.
pub fn ids(
    flow: &Flow,
    payload: &Value,
    errors: &mut Vec<String>,
) -> (Option<String>, Option<String>) {
    let external_id = text(
        flow.external_id.first(payload.clone(), &flow.status_maps),
        "external_id",
        errors,
    );
    let key = match &flow.key {
        Some(jq) => text(jq.first(payload.clone(), &flow.status_maps), "key", errors),
        None => external_id.clone(),
    };
    (external_id, key)
}

fn text(
    result: Result<Option<Value>, JqFailure>,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<String> {
    match result {
        Ok(Some(Value::String(s))) => Some(s),
        Ok(None | Some(Value::Null)) => None,
        Ok(Some(v @ (Value::Number(_) | Value::Bool(_)))) => Some(v.to_string()),
        Ok(Some(_)) => {
            errors.push(format!(
                "{what}: the expression must give a string or a number"
            ));
            None
        }
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            None
        }
    }
}

/// Shadow runs keep their own keys: going live must not turn real events into duplicates.
pub fn dedup_scope(flow: &Flow) -> String {
    match flow.mode {
        Mode::Live => flow.name.clone(),
        Mode::Shadow => format!("{}#shadow", flow.name),
    }
}

impl Engine {
    /// Journals a webhook that failed verification as a `rejected` exchange with the reason
    /// and a masked excerpt of what was sent. It keeps no input: nothing can run it.
    pub async fn record_refusal(
        &self,
        flow: &Flow,
        reason: &str,
        body: &[u8],
        given_request_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.record_refused(flow, "webhook (refused)", reason, body, given_request_id)
            .await
    }

    /// [`Engine::record_refusal`] for any source (`source` names it in the journal).
    pub async fn record_refused(
        &self,
        flow: &Flow,
        source: &str,
        reason: &str,
        body: &[u8],
        given_request_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let text = String::from_utf8_lossy(body);
        let masker = match serde_json::from_slice::<Value>(body) {
            Ok(parsed) => flow.masker_for(&self.masker, &parsed),
            Err(_) => self.masker.clone(),
        };
        let excerpt = masker.excerpt(&text, 2048).into_string();
        let summary = ErrorSummary {
            class: ErrorClass::Auth,
            step: None,
            message: masker.text(reason),
            at: now,
        };
        let new = NewExchange {
            flow: flow.name.clone(),
            request_id: request_id(given_request_id),
            external_id: None,
            key: None,
            raw_key: None,
            raw_external_id: None,
            dedup_scope: String::new(),
            dedup_window_ms: 0,
            dry_run: false,
            source: source.to_owned(),
            payload: masker.json(&Value::String(excerpt)),
            work: WorkState::default(),
            steps: flow.step_names(),
            rejected: Some(summary),
            now,
        };
        let created = self
            .store
            .write(move |txn| ops::create_exchange(txn, new))
            .await?;
        Ok(created.id)
    }

    /// Journals a trigger as a new exchange and queues it (or records it as rejected or
    /// duplicate). Returns only after the durable commit.
    pub async fn accept(&self, flow: &Flow, event: Event) -> Result<Accepted, StoreError> {
        let (new, accepted) = self.prepare(flow, &event);
        let created = self
            .store
            .write(move |txn| ops::create_exchange(txn, new))
            .await?;
        if created.status == Status::Queued {
            self.wake.notify_one();
        }
        Ok(accepted.created(&created))
    }

    /// Journals many triggers of one flow in one durable commit. `guard` runs first in the
    /// same transaction: when it answers `false` (a compare-and-set lost), nothing is
    /// written and `None` comes back; `after` then sees the statuses of what was created,
    /// still in the transaction. Items of one batch dedup against each other too.
    pub async fn accept_batch<G, A>(
        &self,
        flow: &Flow,
        events: &[Event],
        guard: G,
        after: A,
    ) -> Result<Option<Vec<Accepted>>, StoreError>
    where
        G: FnOnce(&Tx<'_>) -> Result<bool, StoreError> + Send + 'static,
        A: FnOnce(&Tx<'_>, &[Status]) -> Result<(), StoreError> + Send + 'static,
    {
        let (news, pending): (Vec<_>, Vec<_>) =
            events.iter().map(|e| self.prepare(flow, e)).unzip();
        let created = self
            .store
            .write(move |txn| {
                if !guard(txn)? {
                    return Ok(None);
                }
                let created = news
                    .into_iter()
                    .map(|n| ops::create_exchange(txn, n))
                    .collect::<Result<Vec<_>, _>>()?;
                let statuses: Vec<Status> = created.iter().map(|c| c.status).collect();
                after(txn, &statuses)?;
                Ok(Some(created))
            })
            .await?;
        let Some(created) = created else {
            return Ok(None);
        };
        if created.iter().any(|c| c.status == Status::Queued) {
            self.wake.notify_one();
        }
        Ok(Some(
            pending
                .into_iter()
                .zip(created)
                .map(|(p, c)| p.created(&c))
                .collect(),
        ))
    }

    /// Journals input that could not be read into triggers at all (a broken upload) as a
    /// rejected exchange with the reason and a masked description; nothing can run it.
    pub async fn record_unreadable(
        &self,
        flow: &Flow,
        source: &str,
        description: &Value,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let new = NewExchange {
            flow: flow.name.clone(),
            request_id: request_id(None),
            external_id: None,
            key: None,
            raw_key: None,
            raw_external_id: None,
            dedup_scope: String::new(),
            dedup_window_ms: 0,
            dry_run: false,
            source: source.to_owned(),
            payload: self.masker.json(description),
            work: WorkState::default(),
            steps: flow.step_names(),
            rejected: Some(ops::input_error(self.masker.text(reason), now)),
            now,
        };
        let created = self
            .store
            .write(move |txn| ops::create_exchange(txn, new))
            .await?;
        Ok(created.id)
    }

    /// The new exchange for a trigger, and what to answer once it is stored.
    fn prepare(&self, flow: &Flow, event: &Event) -> (NewExchange, Pending) {
        let d = decide(flow, &event.payload, event.request_id.as_deref());
        let now = now_ms();
        // Secrets and this trigger's personal data; the work copy keeps the personal data.
        let masker = flow.masker_for(&self.masker, &event.payload);
        let masked_errors: Vec<String> = d
            .errors
            .iter()
            .map(|e| masker.text(e).into_string())
            .collect();
        let rejected = (!masked_errors.is_empty())
            .then(|| ops::input_error(masker.text(&masked_errors.join("; ")), now));
        let mut work = event.payload.clone();
        self.masker.strip_secrets(&mut work);
        let new = NewExchange {
            flow: flow.name.clone(),
            request_id: d.request_id.clone(),
            external_id: d.external_id.as_ref().map(|e| masker.text(e).into_string()),
            key: d.key.as_ref().map(|k| masker.text(k).into_string()),
            raw_key: d.key,
            raw_external_id: d.external_id.clone(),
            dedup_scope: dedup_scope(flow),
            dedup_window_ms: u64::try_from(flow.dedup_window.as_millis()).unwrap_or(u64::MAX),
            dry_run: flow.mode == Mode::Shadow,
            source: event.source.to_owned(),
            payload: flow.masked_payload(&masker, &event.payload),
            work: WorkState {
                trigger: work.to_string(),
                outputs: Vec::new(),
            },
            steps: flow.step_names(),
            rejected,
            now,
        };
        let pending = Pending {
            request_id: d.request_id,
            errors: masked_errors,
        };
        (new, pending)
    }
}

/// What intake answers about a trigger once its exchange is created.
struct Pending {
    request_id: String,
    errors: Vec<String>,
}

impl Pending {
    fn created(self, c: &ops::Created) -> Accepted {
        Accepted {
            id: c.id,
            status: c.status,
            request_id: self.request_id,
            original_id: c.original_id,
            errors: self.errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_uuid_v7_in_time_order() {
        let early = uuid_v7(1_700_000_000_000);
        let late = uuid_v7(1_700_000_000_001);
        assert!(early < late, "{early} < {late}");
        assert_eq!(early.len(), 36);
        assert_eq!(&early[14..15], "7", "version 7: {early}");
        assert!(
            matches!(&early[19..20], "8" | "9" | "a" | "b"),
            "variant: {early}"
        );
        assert_eq!(&early[..13], "018bcfe5-6800", "48-bit ms timestamp first");
        assert_ne!(uuid_v7(1), uuid_v7(1), "random after the time");
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(request_id(Some("abc-123:x")), "abc-123:x");
        assert_eq!(request_id(Some("bad id\n")).len(), 36);
        assert_eq!(request_id(None).len(), 36);
    }
}
