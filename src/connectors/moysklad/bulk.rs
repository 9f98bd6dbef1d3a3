//! Bulk writes: `POST /entity/<type>` with an array creates (and, for items with `meta`,
//! updates) up to 1000 entities. A longer array is sent in parts of 1000; a part MoySklad
//! finds too large (`413`) is halved and sent again. The answer holds an entity or an
//! `{"errors": […]}` object per item, in order: an item that failed fails the step, named by
//! its place in the whole array.

use serde_json::Value;

use crate::connectors::CallError;
use crate::model::ErrorClass;

use super::errors::{class_of_code, errors_in};

/// Items MoySklad takes in one array.
pub const MAX_ITEMS: usize = 1000;

/// Items named in a step's error, beyond which only a count is given.
const NAMED: usize = 5;

/// An item's place in its part and its errors as `(code, text)`.
type Failed = (usize, Vec<(Option<i64>, String)>);

/// The parts a bulk array is first sent in: `(offset, items)`.
pub fn parts(items: Vec<Value>) -> Vec<(usize, Vec<Value>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut rest = items;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(MAX_ITEMS));
        let len = rest.len();
        out.push((offset, rest));
        offset += len;
        rest = tail;
    }
    out
}

/// The error of a bulk answer whose items failed (`offset`: where this part starts in the
/// whole array), or `None` when every item was written.
pub fn failures(offset: usize, items: &[Value], answer: &Value) -> Option<CallError> {
    let rows = answer.as_array()?;
    let failed: Vec<Failed> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get("errors").is_some() && r.get("meta").is_none())
        .map(|(i, r)| (i, errors_in(r)))
        .collect();
    if failed.is_empty() {
        return None;
    }
    // An item that waiting cannot fix decides the class; else the whole part was refused
    // for a retryable reason (a concurrent change, a limit).
    let classes: Vec<ErrorClass> = failed
        .iter()
        .map(|(_, errs)| {
            errs.iter()
                .find_map(|(c, _)| c.and_then(class_of_code))
                .unwrap_or(ErrorClass::Permanent)
        })
        .collect();
    let class = classes
        .iter()
        .copied()
        .find(|c| !c.is_retryable())
        .unwrap_or(classes[0]);
    let describe = |(i, errs): &Failed| {
        let key = items
            .get(*i)
            .and_then(|item| item.get("externalCode").or_else(|| item.get("name")))
            .and_then(Value::as_str)
            .map(|k| format!(" ({k})"))
            .unwrap_or_default();
        let text: Vec<String> = errs
            .iter()
            .map(|(c, t)| match c {
                Some(c) => format!("{c}: {t}"),
                None => t.clone(),
            })
            .collect();
        format!("item {}{key}: {}", offset + i, text.join("; "))
    };
    let named: Vec<String> = failed.iter().take(NAMED).map(describe).collect();
    let mut message = format!(
        "MoySklad refused {} of {} items: {}",
        failed.len(),
        rows.len(),
        named.join("; ")
    );
    if failed.len() > NAMED {
        message.push_str("; …");
    }
    Some(CallError::new(class, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_arrays_go_in_parts_of_a_thousand() {
        let items: Vec<Value> = (0..2500).map(|i| json!({"name": i})).collect();
        let parts = parts(items);
        let shape: Vec<(usize, usize)> = parts.iter().map(|(o, p)| (*o, p.len())).collect();
        assert_eq!(shape, [(0, 1000), (1000, 1000), (2000, 500)]);
        assert_eq!(parts[2].1[0]["name"], 2000);
    }

    #[test]
    fn failed_items_are_named_by_their_place() {
        let items = vec![
            json!({"name": "a", "externalCode": "A-1"}),
            json!({"name": "b"}),
        ];
        let ok =
            json!([{"meta": {"type": "counterparty"}, "name": "a"}, {"meta": {}, "name": "b"}]);
        assert!(failures(0, &items, &ok).is_none());
        let answer = json!([
            {"meta": {"type": "counterparty"}, "name": "a"},
            {"errors": [{"error": "Поле 'name' не может быть пустым", "code": 3000, "parameter": "name"}]}
        ]);
        let e = failures(1000, &items, &answer).expect("failed");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(
            e.message,
            "MoySklad refused 1 of 2 items: item 1001 (b): 3000: Поле 'name' не может быть пустым (parameter `name`)"
        );
        let busy = json!([{"errors": [{"error": "изменен", "code": 1065}]}]);
        assert_eq!(
            failures(0, &items, &busy).map(|e| e.class),
            Some(ErrorClass::Transient)
        );
    }
}
