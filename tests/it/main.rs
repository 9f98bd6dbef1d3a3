//! Integration tests on real parts: obmen serving on loopback with its redb file in a temp
//! dir, and a fake CRM target with a ledger of what it received.

mod bad_input;
mod dedup;
mod delivery;
mod retry;
mod secrets;
mod shadow;
mod support;
mod upsert;
