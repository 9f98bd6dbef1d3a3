//! Full catalogs and `mode=deactivate`. A catalog file with `СодержитТолькоИзменения`
//! `false` (or absent) lists every product 1C has; one that lists fewer than the last full
//! catalog means the others are gone from 1C, which no item of the file says. While such
//! files are imported, the product Ids of the session's full catalogs are kept (per
//! catalog `Ид`, in the data file: `store::onec`); at `mode=deactivate` each Id the flow's
//! last full catalog had and this one lacks becomes one exchange with `deleted: true`, and
//! the session's Ids become the flow's last full catalog. Change-only files are never
//! kept, so they deactivate nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::map;

/// What a session's full catalog files named, and how far `mode=deactivate` got.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FullCatalogs {
    pub catalogs: Vec<FullCatalog>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FullCatalog {
    /// `Каталог/Ид` ("" when the file has none).
    pub id: String,
    /// The root's `ДатаФормирования` of the (first) file.
    pub formed_at: Option<String>,
    /// Product Ids kept (distinct).
    pub items: u64,
    /// `mode=deactivate`: the last Id of the flow's catalog looked at.
    pub cursor: Option<String>,
    /// Ids deactivated so far.
    pub deactivated: u64,
    /// Deactivated, and the session's Ids are now the flow's catalog.
    pub done: bool,
}

impl FullCatalogs {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<FullCatalogs> {
        postcard::from_bytes(bytes).ok()
    }

    /// The catalog `id`, added when new.
    pub fn catalog(&mut self, id: &str, formed_at: Option<&str>) -> &mut FullCatalog {
        let at = match self.catalogs.iter().position(|c| c.id == id) {
            Some(at) => at,
            None => {
                self.catalogs.push(FullCatalog {
                    id: id.to_owned(),
                    formed_at: formed_at.filter(|d| !d.is_empty()).map(str::to_owned),
                    ..FullCatalog::default()
                });
                self.catalogs.len() - 1
            }
        };
        &mut self.catalogs[at]
    }
}

impl FullCatalog {
    /// What the reason and the key name the catalog by: its date, else the session.
    pub fn label(&self, session: &str) -> String {
        self.formed_at
            .clone()
            .unwrap_or_else(|| format!("session {session}"))
    }
}

/// The trigger payload of a product absent from a full catalog: the same fields as an
/// item's, `deleted: true`, a `reason`, and a key that a repeated run finds again.
pub fn absent_payload(item_id: &str, catalog: &FullCatalog, session: &str) -> Value {
    let label = catalog.label(session);
    let mut out = map::envelope(&map::Envelope {
        kind: "product",
        id: Some(item_id),
        version: None,
        deleted: true,
        schema_version: None,
        file: None,
        only_changes: Some(false),
        catalog_id: (!catalog.id.is_empty()).then_some(catalog.id.as_str()),
        content_hash: None,
        exchange_key: format!("deactivate:{item_id}:{label}"),
    });
    // Right after `deleted`, where it always was.
    let reason = format!("absent from the full catalog of {label}");
    out.shift_insert(4, "reason".into(), reason.into());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_names_the_catalog_and_keys_by_it() {
        let mut all = FullCatalogs::default();
        all.catalog("cat-1", Some("2026-01-15T10:00:00")).items = 3;
        all.catalog("cat-1", Some("ignored")).items += 1;
        assert_eq!(all.catalogs.len(), 1);
        assert_eq!(all.catalogs[0].items, 4);
        let p = absent_payload("p7", &all.catalogs[0], "s1");
        assert_eq!(p["deleted"], true);
        assert_eq!(
            p["reason"],
            "absent from the full catalog of 2026-01-15T10:00:00"
        );
        assert_eq!(p["exchange_key"], "deactivate:p7:2026-01-15T10:00:00");
        assert_eq!(p["catalog_id"], "cat-1");
        let back = FullCatalogs::decode(&all.encode()).expect("round trip");
        assert_eq!(back, all);
        let undated = all.catalog("", Some(""));
        assert_eq!(undated.label("s1"), "session s1");
    }
}
