//! The CommerceML 2 exchange where 1C is the client ("обмен с сайтом"): 1C calls
//! `/1c/exchange/{flow}?type=catalog|sale&mode=…` (the endpoint is `http/onec.rs`).
//! Uploaded files are read as a stream ([`xml`]), each item becomes the trigger payload of
//! one exchange ([`map`]), and orders waiting for 1C are written as a CommerceML document
//! ([`write`]). With `zip = true` 1C sends one archive, unpacked by [`unzip`]; full catalogs
//! are remembered ([`snapshot`]) so that `mode=deactivate` can name the items they lost.
//! docs/connectors/1c.md describes the protocol and the payloads.

pub mod map;
pub mod session;
pub mod snapshot;
pub mod unzip;
pub mod write;
pub mod xml;
