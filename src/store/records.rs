//! The stored records, postcard-encoded. Fields are append-only within a schema version;
//! any other change bumps `SCHEMA_VERSION` with a migration step in `migrate.rs`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mask::Masked;
use crate::model::{ErrorClass, Millis, Status};

use super::StoreError;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(StoreError::Encode)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(StoreError::Decode)
}

/// One group of the error dashboard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorGroup {
    pub flow: String,
    pub step: Option<String>,
    pub class: ErrorClass,
    /// The message with ids and numbers replaced, which defines the group.
    pub normalized: String,
    /// The latest member's own message (masked).
    pub sample_message: Masked,
    pub sample_id: u64,
    pub count: u64,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// Failing since the flow's last success.
    pub open: bool,
    /// Whether "started" was announced for the current open spell.
    pub announced: bool,
}

/// A secret in the store: its value sealed with the master key (context `secret:<name>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretRecord {
    pub sealed: Vec<u8>,
    pub set_at: Millis,
}

/// The head of one exchange: what listings and the status page read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub id: u64,
    pub flow: String,
    pub status: Status,
    pub request_id: String,
    pub external_id: Option<String>,
    pub key: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Attempts started so far (automatic and manual).
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    /// For `duplicate`: the exchange this one repeats.
    pub original_id: Option<u64>,
    /// Dry-run exchanges (shadow flows, the dry-run endpoint) never send anything mutating.
    pub dry_run: bool,
    pub steps: Vec<StepState>,
    pub last_error: Option<ErrorSummary>,
    /// Sequence number the next journal event gets.
    pub journal_next: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub done_at: Option<Millis>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorSummary {
    pub class: ErrorClass,
    pub step: Option<String>,
    pub message: Masked,
    pub at: Millis,
}

/// The run state of an exchange: the trigger and each finished step's output (JSON text),
/// with secret values stripped. Personal data stays: the targets need it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkState {
    pub trigger: String,
    pub outputs: Vec<Option<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalEvent {
    pub at: Millis,
    pub kind: EventKind,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum EventKind {
    Received {
        source: String,
        payload: Masked,
    },
    StatusChanged {
        from: Option<Status>,
        to: Status,
        reason: Option<Masked>,
    },
    Attempt(AttemptRecord),
    StepDone {
        index: u32,
        name: String,
        output: Masked,
    },
    Linked {
        system: String,
        entity: String,
        external_key: Masked,
        target_id: Masked,
    },
    Manual {
        action: String,
        by: String,
    },
    /// The exchange's result was handed over to a system that collects it (1C fetching its
    /// orders with `mode=query` and confirming with `mode=success`), after the run ended.
    Delivered {
        to: String,
        detail: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub number: u32,
    pub started_at: Millis,
    pub duration_ms: u64,
    /// `None` when the attempt succeeded.
    pub error: Option<ErrorSummary>,
    pub calls: Vec<CallRecord>,
}

/// One outbound request of an attempt, masked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallRecord {
    pub step: String,
    pub method: String,
    pub url: Masked,
    pub headers: Vec<(String, Masked)>,
    pub body: Option<Masked>,
    /// `false` when it was only recorded ("would send": shadow mode, dry run).
    pub sent: bool,
    pub status: Option<u16>,
    pub response: Option<Masked>,
    pub duration_ms: u64,
    pub error: Option<Masked>,
}
