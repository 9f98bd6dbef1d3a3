//! Method names a flow may call, which of them change data, the upsert entities, and the
//! phone/e-mail normalisation for duplicate search.

use serde_json::{Map, Value, json};

use crate::connectors::CallError;
use crate::model::ErrorClass;

/// Method families a flow may call (`call = "b24.crm.deal.get"`); the rest of the name is
/// checked for shape only, since Bitrix24 adds methods with every release.
const FAMILIES: &[&str] = &[
    "crm.",
    "user.",
    "telephony.",
    "event.",
    "catalog.",
    "department.",
    "im.",
    "imopenlines.",
    "disk.",
    "tasks.",
    "task.",
    "lists.",
    "sale.",
    "entity.",
    "calendar.",
    "sonet_group.",
    "bizproc.",
];

/// Methods outside the families.
const SINGLE: &[&str] = &[
    "batch",
    "profile",
    "methods",
    "scope",
    "app.info",
    "server.time",
];

/// The last segments of methods that only read.
const READING: &[&str] = &[
    "get",
    "list",
    "fields",
    "current",
    "search",
    "findbycomm",
    "time",
    "info",
    "getlist",
    "count",
];

/// Commands one `batch` call may carry.
pub const BATCH_MAX: usize = 50;

/// Entities an upsert may name besides `crm.item.<type>`. `crm.product` (the CRM catalog's
/// products) has the same `list`/`add`/`update` shape as the CRM records: found by a
/// `crm.product.list` filter (e.g. `XML_ID`), created from `fields`, the new id the `result`.
pub const ENTITIES: &[&str] = &[
    "crm.lead",
    "crm.deal",
    "crm.contact",
    "crm.company",
    "crm.product",
];

/// The `entityTypeId` of a smart-process entity name, `crm.item.<entityTypeId>`
/// (`crm.item.1038`; 1 lead, 2 deal, 3 contact, 4 company and 31 invoice work too).
pub fn item_type(entity: &str) -> Option<u64> {
    let id = entity.strip_prefix("crm.item.")?;
    if id.is_empty() || id.len() > 9 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|n| *n > 0)
}

/// Whether an upsert may name `entity`.
pub fn is_entity(entity: &str) -> bool {
    ENTITIES.contains(&entity) || item_type(entity).is_some()
}

/// The method and arguments that create a record of `entity`.
pub fn create(entity: &str, record: &Value) -> (String, Value) {
    match item_type(entity) {
        Some(t) => (
            "crm.item.add".into(),
            json!({"entityTypeId": t, "fields": record}),
        ),
        None => (format!("{entity}.add"), json!({ "fields": record })),
    }
}

/// The method and arguments that change record `id` of `entity`.
pub fn update(entity: &str, id: &str, record: &Value) -> (String, Value) {
    match item_type(entity) {
        Some(t) => (
            "crm.item.update".into(),
            json!({"entityTypeId": t, "id": id, "fields": record}),
        ),
        None => (
            format!("{entity}.update"),
            json!({ "id": id, "fields": record }),
        ),
    }
}

/// Whether `name` is a Bitrix24 method a flow may call.
pub fn is_method(name: &str) -> bool {
    let shaped = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
    let lower = name.to_ascii_lowercase();
    shaped
        && (SINGLE.contains(&lower.as_str())
            || FAMILIES
                .iter()
                .any(|f| lower.starts_with(f) && lower.len() > f.len()))
}

/// `crm.deal.add`, `tasks.task.add`, `crm.item.add`…: Bitrix24's creating methods (their
/// answer is the new record's id).
pub fn is_create(method: &str) -> bool {
    method.to_ascii_lowercase().ends_with(".add")
}

/// Whether calling `method` may change data (shadow mode does not send those).
pub fn is_mutating(method: &str) -> bool {
    let lower = method.to_ascii_lowercase();
    if matches!(lower.as_str(), "profile" | "methods" | "scope") {
        return false;
    }
    let last = lower.rsplit('.').next().unwrap_or_default();
    !READING.contains(&last)
}

/// Arguments a method cannot do without, checked before sending: the call would fail at
/// Bitrix24 anyway, with a less helpful message.
pub fn check_args(method: &str, args: &Value) -> Result<(), CallError> {
    let input = |m: String| Err(CallError::new(ErrorClass::Input, m));
    match method.to_ascii_lowercase().as_str() {
        "batch" => match args.get("cmd").and_then(Value::as_object).map(Map::len) {
            Some(1..=BATCH_MAX) => Ok(()),
            Some(n @ 1..) => input(format!(
                "a batch takes at most {BATCH_MAX} commands, this one has {n}"
            )),
            _ => input("a batch needs `cmd`: an object of commands".into()),
        },
        "crm.timeline.comment.add" => {
            if args.get("FIELDS").is_some() {
                return input(
                    "`crm.timeline.comment.add` takes lower-case `fields` (crm 23.100.0 and later)"
                        .into(),
                );
            }
            let field = |name: &str| args.get("fields").and_then(|f| f.get(name));
            let missing: Vec<&str> = ["ENTITY_ID", "ENTITY_TYPE", "COMMENT"]
                .into_iter()
                .filter(|name| match field(name) {
                    Some(Value::String(s)) => s.trim().is_empty(),
                    Some(Value::Number(_)) => false,
                    _ => true,
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                input(format!(
                    "`crm.timeline.comment.add` needs `fields.{}`",
                    missing.join("`, `fields.")
                ))
            }
        }
        _ => Ok(()),
    }
}

/// `CONTACT` for `crm.contact`; `None` for entities the duplicate search does not know.
pub fn duplicate_type(entity: &str) -> Option<&'static str> {
    match entity {
        "crm.lead" => Some("LEAD"),
        "crm.contact" => Some("CONTACT"),
        "crm.company" => Some("COMPANY"),
        _ => None,
    }
}

/// Digits only, with the trunk prefix `8` of 11-digit Russian/Kazakh numbers made `7`:
/// `+7 (701) 000-00-05`, `87010000005` and `77010000005` are one number.
pub fn normalize_phone(raw: &str) -> String {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix('8') {
        Some(rest) if digits.len() == 11 => format!("7{rest}"),
        _ => digits,
    }
}

pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The values of a match field: a string, a list of strings, or a multifield
/// (`[{"VALUE": "...", "VALUE_TYPE": "WORK"}]`).
pub fn values_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Array(items) => items.iter().flat_map(values_of).collect(),
        Value::Object(o) => o.get("VALUE").map(values_of).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The search for an upsert: `crm.duplicate.findbycomm` when the only match field is
/// `PHONE` or `EMAIL` and the entity has duplicate search, else `crm.<e>.list` with the
/// fields as an exact filter. Returns the method and its arguments.
pub fn find(entity: &str, criteria: &Map<String, Value>) -> (String, Value) {
    if let (1, Some(kind)) = (criteria.len(), duplicate_type(entity)) {
        let (field, value) = criteria
            .iter()
            .next()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .unwrap_or_default();
        let normalize: Option<fn(&str) -> String> = match field.as_str() {
            "PHONE" => Some(normalize_phone),
            "EMAIL" => Some(normalize_email),
            _ => None,
        };
        if let Some(normalize) = normalize {
            let mut values: Vec<String> = values_of(value)
                .iter()
                .map(|v| normalize(v))
                .filter(|v| !v.is_empty())
                .collect();
            values.dedup();
            values.truncate(20);
            return (
                "crm.duplicate.findbycomm".into(),
                json!({"type": field, "values": values, "entity_type": kind}),
            );
        }
    }
    if let Some(t) = item_type(entity) {
        // camelCase fields; a filter key without a prefix is an exact match.
        return (
            "crm.item.list".into(),
            json!({"entityTypeId": t, "filter": criteria, "select": ["id"]}),
        );
    }
    (
        format!("{entity}.list"),
        json!({"filter": criteria, "select": ["ID"]}),
    )
}

/// The records of a search answer (already unwrapped from `result`), each with a
/// lower-case `id` so that the upsert's default `id = ".id"` reads it.
pub fn records(entity: &str, answer: Value) -> Option<Vec<Value>> {
    let with_id = |mut record: Value| {
        if let Value::Object(o) = &mut record
            && let Some(id) = o.get("ID").or_else(|| o.get("id")).cloned()
        {
            o.insert("id".into(), id);
        }
        record
    };
    match answer {
        // `crm.<e>.list`; an empty duplicate search is `[]` too.
        Value::Array(items) => Some(items.into_iter().map(with_id).collect()),
        // `crm.item.list`: `{"items": […]}`, each with its `id`.
        Value::Object(mut o) if item_type(entity).is_some() => match o.remove("items") {
            Some(Value::Array(items)) => Some(items.into_iter().map(with_id).collect()),
            _ => None,
        },
        // `crm.duplicate.findbycomm`: `{"CONTACT": [275, 2297]}`.
        Value::Object(mut o) => {
            let kind = duplicate_type(entity)?;
            match o.remove(kind) {
                Some(Value::Array(ids)) => Some(
                    ids.into_iter()
                        .map(|id| json!({"id": id, "ID": id}))
                        .collect(),
                ),
                _ => Some(Vec::new()),
            }
        }
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        for ok in [
            "crm.deal.get",
            "crm.duplicate.findbycomm",
            "crm.timeline.comment.add",
            "crm.status.list",
            "telephony.externalcall.attachRecord",
            "user.get",
            "batch",
        ] {
            assert!(is_method(ok), "{ok}");
        }
        for bad in [
            "crm.",
            "deal.get",
            "crm..get",
            "crm.deal.get?x=1",
            "",
            "crm/deal",
        ] {
            assert!(!is_method(bad), "{bad}");
        }
        assert!(!is_mutating("crm.deal.get"));
        assert!(!is_mutating("crm.duplicate.findbycomm"));
        assert!(is_mutating("crm.deal.update"));
        assert!(is_mutating("batch"));
    }

    #[test]
    fn phones_and_duplicate_search() {
        assert_eq!(normalize_phone("+7 (701) 000-00-05"), "77010000005");
        assert_eq!(normalize_phone("8 701 000 00 05"), "77010000005");
        let criteria = json!({"PHONE": [{"VALUE": "+7 701 000-00-05", "VALUE_TYPE": "WORK"}]});
        let (method, args) = find("crm.contact", criteria.as_object().expect("object"));
        assert_eq!(method, "crm.duplicate.findbycomm");
        assert_eq!(
            args,
            json!({"type": "PHONE", "values": ["77010000005"], "entity_type": "CONTACT"})
        );
        let criteria = json!({"ORIGIN_ID": "x-1"});
        let (method, args) = find("crm.deal", criteria.as_object().expect("object"));
        assert_eq!(method, "crm.deal.list");
        assert_eq!(args["filter"]["ORIGIN_ID"], "x-1");
        let found = records("crm.contact", json!({"CONTACT": [275, 2297]})).expect("records");
        assert_eq!(found[0]["id"], 275);
        assert!(
            records("crm.contact", json!([]))
                .expect("records")
                .is_empty()
        );
        let listed = records("crm.deal", json!([{"ID": "7"}])).expect("records");
        assert_eq!(listed[0]["id"], "7");
    }

    #[test]
    fn smart_process_items() {
        assert_eq!(item_type("crm.item.1038"), Some(1038));
        for bad in [
            "crm.item",
            "crm.item.",
            "crm.item.x1",
            "crm.item.0",
            "crm.items.1",
        ] {
            assert_eq!(item_type(bad), None, "{bad}");
        }
        assert!(is_entity("crm.item.2") && is_entity("crm.lead") && !is_entity("crm.item"));
        let criteria = json!({"xmlId": "deal-5"});
        let (method, args) = find("crm.item.1038", criteria.as_object().expect("object"));
        assert_eq!(method, "crm.item.list");
        assert_eq!(
            args,
            json!({"entityTypeId": 1038, "filter": {"xmlId": "deal-5"}, "select": ["id"]})
        );
        let found = records("crm.item.1038", json!({"items": [{"id": 12}]})).expect("records");
        assert_eq!(found[0]["id"], 12);
        assert!(records("crm.item.1038", json!({"CONTACT": [1]})).is_none());
        let (method, args) = create("crm.item.1038", &json!({"title": "x"}));
        assert_eq!(method, "crm.item.add");
        assert_eq!(args["entityTypeId"], 1038);
        let (method, args) = update("crm.item.1038", "12", &json!({"title": "y"}));
        assert_eq!(
            (method.as_str(), &args["id"]),
            ("crm.item.update", &json!("12"))
        );
    }
}
