//! The words of SPEC §1–2 as types: exchange statuses, error classes, ids and clocks.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch; every stored time uses it.
pub type Millis = u64;

pub fn now_ms() -> Millis {
    let now = std::time::SystemTime::now();
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// How many ids one millisecond can hold: an id is `created_ms * IDS_PER_MS + n`, so ids sort
/// by creation time and a time range maps to an id range without reading records.
pub const IDS_PER_MS: u64 = 1024;

pub fn id_floor_for(ms: Millis) -> u64 {
    ms.saturating_mul(IDS_PER_MS)
}

pub fn id_time(id: u64) -> Millis {
    id / IDS_PER_MS
}

/// The exchange statuses of SPEC §2. Stored by variant index: append, never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    Queued,
    Running,
    Succeeded,
    Retrying,
    Failed,
    Rejected,
    Duplicate,
    Skipped,
    DryRun,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Received,
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Retrying,
        Status::Failed,
        Status::Rejected,
        Status::Duplicate,
        Status::Skipped,
        Status::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Duplicate => "duplicate",
            Status::Skipped => "skipped",
            Status::DryRun => "dry_run",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The index key used by the status tables.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.get(usize::from(code)).copied()
    }

    /// Waiting for the queue or a worker: what crash recovery and `/metrics` queue depth count.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Status::Received | Status::Queued | Status::Running | Status::Retrying
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error classes recorded on every failed attempt (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    RateLimited,
    Auth,
    Permanent,
    Config,
    /// The input itself is wrong (schema, mapping, unmapped status): the exchange is `rejected`.
    Input,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::Transient,
        ErrorClass::RateLimited,
        ErrorClass::Auth,
        ErrorClass::Permanent,
        ErrorClass::Config,
        ErrorClass::Input,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Config => "config",
            ErrorClass::Input => "input",
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<ErrorClass> {
        ErrorClass::ALL.get(usize::from(code)).copied()
    }

    /// Only these are retried automatically; the rest wait for a person.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::RateLimited)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for st in Status::ALL {
            assert_eq!(Status::from_code(st.code()), Some(st));
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        assert_eq!(Status::parse("nope"), None);
    }

    #[test]
    fn ids_carry_their_time() {
        let ms = 1_764_000_000_123;
        assert_eq!(id_time(id_floor_for(ms) + 5), ms);
    }
}
