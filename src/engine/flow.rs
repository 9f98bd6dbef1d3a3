//! A flow as it runs: its trigger, dedup rules, validation, retry policy and steps, all
//! compiled and checked at config load.

use std::time::Duration;

use serde_json::Value;

use crate::mask::{MaskPath, Masked, Masker, personal_values};

use super::jq::Jq;
use super::retry::RetryPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    /// Runs completely but sends nothing mutating; exchanges end `dry_run`.
    Shadow,
}

#[derive(Debug)]
pub enum Trigger {
    Webhook {
        system: String,
    },
    Manual,
    Schedule {
        cron: String,
        schedule: Box<cron::Schedule>,
        tz: chrono_tz::Tz,
    },
    /// 1C calls `/1c/exchange/{flow}` (CommerceML 2 exchange); each item of an uploaded
    /// file is one trigger.
    CommerceMl(CommerceMl),
}

#[derive(Clone, Debug)]
pub struct CommerceMl {
    pub user: String,
    pub password: crate::mask::Secret,
    pub exchange: crate::connectors::onec::commerceml::session::ExchangeType,
    pub file_limit: u64,
    /// Bytes one session may hold uploaded at once (all its files).
    pub upload_limit: u64,
    /// Items one `mode=import` request accepts at most (it also stops after 2 s).
    pub import_batch: usize,
    /// `init` answers `zip=yes`: 1C sends one archive, unpacked at the first `mode=import`.
    pub zip: bool,
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Webhook { .. } => "webhook",
            Trigger::Manual => "manual",
            Trigger::Schedule { .. } => "schedule",
            Trigger::CommerceMl(_) => "commerceml",
        }
    }
}

/// A compiled JSON Schema.
pub struct Schema(pub jsonschema::Validator);

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Every violation as `pointer: message`.
    pub fn errors(&self, value: &Value) -> Vec<String> {
        self.0
            .iter_errors(value)
            .map(|e| {
                let ptr = e.instance_path().as_str().to_owned();
                format!("{}: {e}", if ptr.is_empty() { "/".to_owned() } else { ptr })
            })
            .collect()
    }
}

#[derive(Debug)]
pub struct Flow {
    pub name: String,
    pub mode: Mode,
    pub trigger: Trigger,
    /// jq on the trigger payload; default `.id`.
    pub external_id: Jq,
    /// jq on the trigger payload; default: the external_id.
    pub key: Option<Jq>,
    pub dedup_window: Duration,
    pub schema: Option<Schema>,
    pub retry: RetryPolicy,
    pub max_body: usize,
    /// `{map name: {from: to}}`, the `$__maps` of every jq program of the flow.
    pub status_maps: Value,
    /// Paths into the trigger payload that hold personal data (`mask = [...]`).
    pub mask: Vec<MaskPath>,
    pub steps: Vec<Step>,
    /// The alert flow (`<name>:alerts`) that delivers this flow's failure notices.
    pub on_failure: Option<String>,
    /// The notice types (`exchange.failed`, `errors.started`, `errors.stopped`) it gets.
    pub notices: Vec<String>,
}

/// Every notice type a flow's `on_failure` can send.
pub const NOTICES: [&str; 3] = ["exchange.failed", "errors.started", "errors.stopped"];

/// The name of a flow's alert flow; `:` is not allowed in flow names, so it cannot clash.
pub fn alert_flow_name(flow: &str) -> String {
    format!("{flow}:alerts")
}

#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    /// The step runs only when this is true; otherwise it is done with output `null`.
    pub when: Option<Jq>,
    /// Name under which later steps see this step's output.
    pub output_as: Option<String>,
    pub schema: Option<Schema>,
}

#[derive(Debug)]
pub enum StepKind {
    Filter(Jq),
    Map(Jq),
    Call {
        system: String,
        op: String,
        args: Option<Jq>,
    },
    /// Looks a record up (`lookup`, the search by the `match` fields of `args`);
    /// `missing` says what happens when there is none.
    Find {
        lookup: Lookup,
        args: Option<Jq>,
        missing: Missing,
    },
    /// Looks the record `args` makes up, then updates it or creates it.
    Upsert {
        lookup: Lookup,
        args: Jq,
    },
    /// Queues the order `args` makes in the outbox of the sale flow `flow`, for 1C's next
    /// `mode=query` (replacing an undelivered one with the same `id`).
    ToOnec {
        flow: String,
        args: Jq,
    },
}

/// Where a find or an upsert looks a record up: the ID map by `link` (an upsert without one:
/// the exchange's external_id), then a search in `system.entity` by `match_fields`; `id`
/// reads the target's id from a hit or a create answer.
#[derive(Debug)]
pub struct Lookup {
    pub system: String,
    pub entity: String,
    pub match_fields: Vec<String>,
    pub link: Option<Jq>,
    pub id: Jq,
}

/// What a `find` step does when no record matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The step's output says `found: false`; later steps decide.
    Continue,
    /// The exchange ends `skipped`, like a filter that said no.
    Skip,
    /// A `transient` error: retried under the flow's retry policy (the record may not be
    /// there *yet*, e.g. an offer whose product another exchange is still creating).
    Retry,
    /// The exchange ends `rejected`: the input names a record that does not exist.
    Reject,
}

impl Missing {
    pub const NAMES: [&'static str; 4] = ["continue", "skip", "retry", "reject"];

    pub fn parse(text: &str) -> Option<Missing> {
        match text {
            "continue" => Some(Missing::Continue),
            "skip" => Some(Missing::Skip),
            "retry" => Some(Missing::Retry),
            "reject" => Some(Missing::Reject),
            _ => None,
        }
    }
}

impl StepKind {
    pub fn label(&self) -> &'static str {
        match self {
            StepKind::Filter(_) => "filter",
            StepKind::Map(_) => "map",
            StepKind::Call { .. } => "call",
            StepKind::Find { .. } => "find",
            StepKind::Upsert { .. } => "upsert",
            StepKind::ToOnec { .. } => "to_1c",
        }
    }
}

impl Flow {
    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name.clone()).collect()
    }

    /// The masker for one exchange of this flow: `base` (the secrets) plus the personal
    /// data its trigger holds at the flow's mask paths.
    pub fn masker_for(&self, base: &Masker, trigger: &Value) -> Masker {
        if self.mask.is_empty() {
            return base.clone();
        }
        base.with_personal(personal_values(&self.mask, trigger))
    }

    /// A trigger payload as the journal keeps it: personal fields partially masked in place
    /// (however short), then every secret and personal value masked in the text.
    pub fn masked_payload(&self, masker: &Masker, payload: &Value) -> Masked {
        if self.mask.is_empty() {
            return masker.json(payload);
        }
        let mut copy = payload.clone();
        self.mask.iter().for_each(|p| p.mask_in(&mut copy));
        masker.json(&copy)
    }
}
