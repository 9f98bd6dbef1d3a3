//! Integration tests on real parts: obmen serving on loopback with its redb file in a temp
//! dir, and a fake CRM target with a ledger of what it received.

mod alerts;
mod auth_matrix;
mod bad_input;
mod dedup;
mod delivery;
mod find;
mod inbound;
mod pages;
mod personal;
mod retry;
mod secrets;
mod shadow;
mod signing;
mod support;
mod upsert;
