//! Every redb table of the data file, with its key and value layout. Values are postcard
//! records from `records.rs`; keys are typed tuples so that ranges sort the way they read.

use redb::TableDefinition;

/// key = name, value = raw bytes. Holds `schema_version` (u32 LE) and `last_id` (u64 LE).
pub const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// key = exchange id, value = `ExchangeRecord`: the current head of one exchange.
pub const EXCHANGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("exchanges");

/// key = exchange id, value = `WorkState`: what a worker needs to run it (trigger payload
/// and step outputs, secrets already stripped). Kept apart so listings never decode it.
pub const WORK: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("work");

/// key = (exchange id, seq), value = `JournalEvent`. Append-only: never updated or removed.
pub const JOURNAL: TableDefinition<'_, (u64, u32), &[u8]> = TableDefinition::new("journal");

/// The queue. key = (due at ms, exchange id), value = (). Present while waiting to run.
pub const DUE: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("due");

/// Dedup and the key and external-id indexes in one table (schema 3), so that the rows of
/// one exchange sit side by side: these keys are hashes, and a commit writes one page per
/// place they land, not three. key = (lookup hash, tag, exchange id), value = (scope, ms):
/// - `LOOKUP_OWNER`: the exchange that owns this idempotency key in `scope` (the flow, or
///   `flow#shadow`) since `ms` — a later trigger inside the window is its duplicate;
/// - `LOOKUP_KEY` / `LOOKUP_EXTERNAL`: an exchange with this idempotency key / external id
///   (value `("", 0)`).
pub const LOOKUPS: TableDefinition<'_, (&str, u8, u64), (&str, u64)> =
    TableDefinition::new("lookups");
pub const LOOKUP_OWNER: u8 = 0;
pub const LOOKUP_KEY: u8 = 1;
pub const LOOKUP_EXTERNAL: u8 = 2;

/// The ID map. key = (system, entity, lookup hash of the external key), value = id in that
/// system. Keys, external ids and dedup keys are stored only as lookup hashes (see
/// `cipher::LookupKey`): they may hold personal data.
pub const IDMAP: TableDefinition<'_, (&str, &str, &str), &str> = TableDefinition::new("idmap");

/// key = (exchange id, n), value = (system, entity, external key, target id) of a link an
/// exchange recorded, so its detail can show it.
pub const LINKS: TableDefinition<'_, (u64, u32), (&str, &str, &str, &str)> =
    TableDefinition::new("links");

/// Listing indexes, value = (). key = (flow, id) / (flow, status, id) / (request id, id).
/// A status across flows merges the flows' ranges (there are few flows, and every status
/// change of every exchange would otherwise update one more index). Keys and external ids
/// are indexed in `LOOKUPS`.
pub const BY_FLOW: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("by_flow");
pub const BY_FLOW_STATUS: TableDefinition<'_, (&str, u8, u64), ()> =
    TableDefinition::new("by_flow_status");
pub const BY_REQUEST: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("by_request");

/// key = (flow, status code), value = number of exchanges in that status now.
pub const COUNTS: TableDefinition<'_, (&str, u8), u64> = TableDefinition::new("counts");

/// key = (flow, creation hour since epoch, status code), value = exchanges created in that
/// hour that are in that status now. Windows (24 h, 7 d) sum a few keys instead of scanning.
pub const HOURLY: TableDefinition<'_, (&str, u64, u8), u64> = TableDefinition::new("hourly");

/// key = (flow, error class code), value = failed attempts of that class, ever.
pub const ATTEMPT_ERRORS: TableDefinition<'_, (&str, u8), u64> =
    TableDefinition::new("attempt_errors");

/// key = (flow, 0 = last success | 1 = last error), value = (time ms, exchange id).
pub const FLOW_LAST: TableDefinition<'_, (&str, u8), (u64, u64)> =
    TableDefinition::new("flow_last");

/// key = flow, value = the schedule cursor (JSON text) for incremental polling.
pub const CURSORS: TableDefinition<'_, &str, &str> = TableDefinition::new("cursors");

/// key = secret name, value = `SecretRecord` (the value sealed with the master key).
pub const SECRETS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("secrets");

/// The error dashboard. key = (flow, group id), value = `ErrorGroup`: failures grouped by
/// (flow, step, error class, normalised message), updated when an exchange fails or is
/// rejected, so the dashboard reads a few rows instead of the journal.
pub const ERROR_GROUPS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("error_groups");

/// key = (group id, exchange id), value = (): the exchanges of a group, for "retry all".
pub const GROUP_MEMBERS: TableDefinition<'_, (&str, u64), ()> =
    TableDefinition::new("group_members");

/// key = (flow, group id), value = (): the groups failing now (`ErrorGroup::open`), so
/// that a success closes them without reading every group the flow ever had (schema 2).
pub const OPEN_GROUPS: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("open_groups");

/// 1C CommerceML exchange sessions (`store/onec.rs`). key = lookup hash of the session
/// cookie, value = the session (postcard bytes of `commerceml::session::Session`).
pub const ONEC_SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("onec_sessions");

/// How far `mode=import` has read an uploaded file. key = (session id, file name), value =
/// postcard bytes of `commerceml::session::ImportState` (the parser's resumable cursor).
pub const ONEC_IMPORTS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("onec_imports");

/// Orders waiting for 1C's `mode=query`. key = (sale flow, order Ид), value = postcard
/// `OutboxRow` (exchange id, version seq, the order JSON sealed with the master key).
pub const ONEC_OUTBOX: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("onec_outbox");
