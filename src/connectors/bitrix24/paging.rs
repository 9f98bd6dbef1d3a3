//! Several pages of a list method in one call (`max_pages`, `all_pages`). Bitrix24 pages hold
//! 50 records: with `start` the next page starts 50 further; in the fast mode (`start: -1`,
//! no counting, for large exports) the next page is the records after the last id seen
//! (`order: {ID: "ASC"}`, `filter: {">ID": <last id>}`; `id` for `crm.item.list`).

use serde_json::{Value, json};

use crate::connectors::CallError;
use crate::model::ErrorClass;

/// Records per page of every list method.
pub const PAGE: usize = 50;

/// Whether a method reads pages (`crm.deal.list`, `crm.item.list`, `tasks.task.list`, …).
pub fn is_list(method: &str) -> bool {
    let lower = method.to_ascii_lowercase();
    lower.ends_with(".list") || lower.ends_with(".getlist")
}

fn start_of(args: &Value) -> i64 {
    match args.get("start") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// The id field the fast mode pages by: `ID`, or `id` for the camelCase `crm.item.*`.
fn id_field(args: &Value) -> Option<&'static str> {
    let order = args.get("order")?.as_object()?;
    let (field, dir) = order.iter().next()?;
    let asc = dir.as_str().is_some_and(|d| d.eq_ignore_ascii_case("ASC"));
    match field.as_str() {
        "ID" if asc => Some("ID"),
        "id" if asc => Some("id"),
        _ => None,
    }
}

/// Checks, before sending, that a call asking for several pages can be paged.
pub fn check(method: &str, args: &Value) -> Result<(), CallError> {
    if !is_list(method) {
        return Err(CallError::new(
            ErrorClass::Input,
            format!("`all_pages`/`max_pages` apply to list methods, not `{method}`"),
        ));
    }
    if start_of(args) == -1 && id_field(args).is_none() {
        return Err(CallError::new(
            ErrorClass::Input,
            "paging with `start: -1` needs `order: {ID: \"ASC\"}` (`{id: \"ASC\"}` for crm.item.list) and a `>ID` filter",
        ));
    }
    Ok(())
}

/// The records of one page (the step's output of a list call): the list itself, or the one
/// list inside an object (`{"items": […]}` of `crm.item.list`, `{"tasks": […]}`).
pub fn rows(page: &Value) -> Option<&Vec<Value>> {
    match page {
        Value::Array(rows) => Some(rows),
        Value::Object(o) => {
            let mut lists = o.values().filter_map(Value::as_array);
            let first = lists.next();
            if lists.next().is_some() { None } else { first }
        }
        _ => None,
    }
}

/// Appends the records of `page` to `into` (both shaped as [`rows`] reads them).
pub fn append(into: &mut Value, page: Value) {
    let more: Vec<Value> = match page {
        Value::Array(rows) => rows,
        Value::Object(o) => o
            .into_iter()
            .find_map(|(_, v)| match v {
                Value::Array(rows) => Some(rows),
                _ => None,
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    match into {
        Value::Array(rows) => rows.extend(more),
        Value::Object(o) => {
            if let Some(Value::Array(rows)) = o.values_mut().find(|v| v.is_array()) {
                rows.extend(more);
            }
        }
        _ => {}
    }
}

/// The arguments of the page after `page` (read with `args`), or `None` after the last one.
pub fn next_args(args: &Value, page: &Value) -> Result<Option<Value>, CallError> {
    let Some(rows) = rows(page) else {
        return Err(CallError::new(
            ErrorClass::Permanent,
            "the Bitrix24 list answer holds no list of records to page through",
        ));
    };
    if rows.len() < PAGE {
        return Ok(None);
    }
    let mut next = args.clone();
    let start = start_of(args);
    if start == -1 {
        let field = id_field(args).unwrap_or("ID");
        let Some(last) = rows.last().and_then(|r| r.get(field)).cloned() else {
            return Err(CallError::new(
                ErrorClass::Input,
                format!("paging with `start: -1` needs `{field}` in `select`"),
            ));
        };
        if !next.get("filter").is_some_and(Value::is_object) {
            next["filter"] = json!({});
        }
        let filter = &mut next["filter"];
        if let Value::Object(f) = filter {
            f.remove(&format!(">={field}"));
            f.insert(format!(">{field}"), last);
        }
    } else {
        let step = i64::try_from(PAGE).unwrap_or(50);
        next["start"] = json!(start.max(0) + step);
    }
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(from: u64, n: u64, field: &str) -> Value {
        Value::Array(
            (from..from + n)
                .map(|i| json!({field: i.to_string()}))
                .collect(),
        )
    }

    #[test]
    fn start_pages_move_by_fifty_and_stop_short() {
        let args = json!({"filter": {"STAGE_ID": "WON"}});
        let next = next_args(&args, &page(1, 50, "ID"))
            .expect("ok")
            .expect("more");
        assert_eq!(next["start"], 50);
        let next = next_args(&next, &page(51, 50, "ID"))
            .expect("ok")
            .expect("more");
        assert_eq!(next["start"], 100);
        assert_eq!(next["filter"]["STAGE_ID"], "WON");
        assert!(
            next_args(&next, &page(101, 12, "ID"))
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn fast_mode_moves_the_id_filter() {
        let args =
            json!({"start": -1, "order": {"ID": "ASC"}, "filter": {">ID": 0}, "select": ["ID"]});
        check("crm.deal.list", &args).expect("pageable");
        let next = next_args(&args, &page(1, 50, "ID"))
            .expect("ok")
            .expect("more");
        assert_eq!(next["filter"][">ID"], "50");
        assert_eq!(next["start"], -1);
        let items = json!({"items": (1..=50).map(|i| json!({"id": i})).collect::<Vec<_>>()});
        let args = json!({"entityTypeId": 1038, "start": -1, "order": {"id": "ASC"}});
        let next = next_args(&args, &items).expect("ok").expect("more");
        assert_eq!(next["filter"][">id"], 50);
        // Ordered otherwise, the last id says nothing about what is left.
        let bad = json!({"start": -1, "order": {"DATE_MODIFY": "ASC"}});
        assert!(check("crm.deal.list", &bad).is_err());
        assert!(check("crm.deal.get", &json!({})).is_err());
        let no_id = json!({"start": -1, "order": {"ID": "ASC"}, "select": ["TITLE"]});
        let rows = Value::Array((0..50).map(|_| json!({"TITLE": "x"})).collect());
        assert!(next_args(&no_id, &rows).is_err());
    }

    #[test]
    fn pages_join_in_their_shape() {
        let mut all = page(1, 2, "ID");
        append(&mut all, page(3, 2, "ID"));
        assert_eq!(all.as_array().map(Vec::len), Some(4));
        let mut items = json!({"items": [{"id": 1}]});
        append(&mut items, json!({"items": [{"id": 2}]}));
        assert_eq!(items, json!({"items": [{"id": 1}, {"id": 2}]}));
    }
}
