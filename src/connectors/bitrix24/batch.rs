//! `batch`: Bitrix24 answers HTTP 200 even when commands fail, listing them in
//! `result_error`. A failed command fails the step, classified as the same error of a
//! single call would be, and named with its method.

use std::time::Duration;

use serde_json::Value;

use crate::connectors::CallError;
use crate::model::ErrorClass;

use super::{errors, ops};

/// Failed commands named in a step's error, beyond which only a count is given.
const NAMED: usize = 5;

/// The error of a batch whose commands failed, or `None` when all succeeded. `args` are the
/// batch's arguments as sent (`halt`, `cmd`), `result` the evened-out answer.
pub fn failure(args: &Value, result: &Value) -> Option<CallError> {
    let failed = result.get("result_error")?.as_object()?;
    if failed.is_empty() {
        return None;
    }
    let commands = args.get("cmd").and_then(Value::as_object);
    let method = |key: &str| {
        commands
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .map(|line| line.split('?').next().unwrap_or_default().to_owned())
    };
    let mut errors: Vec<Failed> = failed
        .iter()
        .map(|(key, e)| Failed::new(key, method(key), e, result))
        .collect();
    // In the order the commands were given (Bitrix24's answer keeps it too, but a
    // reordered answer must not change which error decides).
    if let Some(cmd) = commands {
        let position = |k: &str| cmd.keys().position(|c| c == k).unwrap_or(usize::MAX);
        errors.sort_by_key(|f| position(&f.key));
    }
    // A command that cannot succeed by waiting decides: retrying the batch would not help.
    // Otherwise the longest wait asked for.
    let decisive = errors
        .iter()
        .position(|f| !f.class.is_retryable())
        .or_else(|| (0..errors.len()).max_by_key(|&i| errors[i].wait.unwrap_or(Duration::ZERO)))?;
    let first = errors.remove(decisive);
    let mut message = first.describe();
    if !errors.is_empty() {
        let named: Vec<String> = errors.iter().take(NAMED).map(Failed::describe).collect();
        message.push_str(&format!(
            "; {} more failed: {}",
            errors.len(),
            named.join("; ")
        ));
        if errors.len() > NAMED {
            message.push_str("; …");
        }
    }
    let halted = halt(args);
    if let (true, Some(cmd)) = (halted, commands) {
        let answered =
            |k: &String| result["result"].get(k).is_some() || failed.contains_key(k.as_str());
        let skipped: Vec<&String> = cmd.keys().filter(|k| !answered(k)).collect();
        if !skipped.is_empty() {
            message.push_str(&format!(
                " (halt: {} later command{} not run)",
                skipped.len(),
                if skipped.len() == 1 { " was" } else { "s were" }
            ));
        }
    }
    // Retrying sends the whole batch again: a create that succeeded would be made twice.
    // No duplicates at the target, so a person decides (the created ids are named).
    let created = if first.class.is_retryable() {
        created(commands, &method, result, failed)
    } else {
        Vec::new()
    };
    if !created.is_empty() {
        message.push_str(&format!(
            "; not retried: the batch already created {} — sending it again would create \
             {} twice; check the target and retry by hand",
            created.join(", "),
            if created.len() == 1 { "it" } else { "them" }
        ));
        return Some(CallError::new(ErrorClass::Permanent, message));
    }
    let mut err = CallError::new(first.class, message);
    err.retry_after = first.wait;
    Some(err)
}

/// The creating commands (`*.add`) that succeeded, as "`key` (method) id N".
fn created(
    commands: Option<&serde_json::Map<String, Value>>,
    method_of: &dyn Fn(&str) -> Option<String>,
    result: &Value,
    failed: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let Some(cmd) = commands else {
        return Vec::new();
    };
    cmd.keys()
        .filter_map(|key| {
            let method = method_of(key)?;
            if !ops::is_create(&method) || failed.contains_key(key) {
                return None;
            }
            let answer = result.get("result")?.get(key)?;
            let id = created_id(answer)
                .map(|id| format!(" id {id}"))
                .unwrap_or_default();
            Some(format!("`{key}` ({method}){id}"))
        })
        .collect()
}

/// The new record's id: the bare result (`crm.*.add`) or its `id` (`crm.item.add` gives
/// `{item: {id}}`, `tasks.task.add` `{task: {id}}`).
fn created_id(answer: &Value) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    scalar(answer)
        .or_else(|| answer.get("id").and_then(scalar))
        .or_else(|| answer.get("ID").and_then(scalar))
        .or_else(|| answer.pointer("/item/id").and_then(scalar))
        .or_else(|| answer.pointer("/task/id").and_then(scalar))
}

/// `halt: 1` (or `true`, `"Y"`): Bitrix24 stops at the first failed command.
pub fn halt(args: &Value) -> bool {
    match args.get("halt") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "Y" | "y" | "true"),
        _ => false,
    }
}

struct Failed {
    key: String,
    method: Option<String>,
    code: String,
    description: String,
    class: ErrorClass,
    wait: Option<Duration>,
}

impl Failed {
    fn new(key: &str, method: Option<String>, e: &Value, result: &Value) -> Failed {
        let code = errors::code_of(e).unwrap_or_default();
        let reset = result
            .pointer(&format!("/result_time/{}/operating_reset_at", escape(key)))
            .and_then(Value::as_f64)
            .and_then(errors::wait_until);
        let (class, wait) = errors::class_of(None, &code, reset);
        Failed {
            key: key.to_owned(),
            method,
            code,
            description: e
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            class,
            wait,
        }
    }

    fn describe(&self) -> String {
        let code = if self.code.is_empty() {
            "(no code)"
        } else {
            &self.code
        };
        let method = self
            .method
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        format!(
            "batch command `{}`{method} failed: {code}: {}",
            self.key, self.description
        )
    }
}

/// A key as a JSON-pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    /// A batch's arguments as sent.
    fn args(halt: u8, keys: &[(&str, &str)]) -> Value {
        let cmd: Map<String, Value> = keys
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        serde_json::json!({"halt": halt, "cmd": cmd})
    }

    #[test]
    fn a_failed_command_fails_with_its_own_class_and_name() {
        let sent = args(
            0,
            &[
                ("a", "crm.deal.get?id=1"),
                ("b", "crm.deal.update?id=2&fields[TITLE]=x"),
            ],
        );
        let ok = json!({"result": {"a": {}, "b": true}, "result_error": {}});
        assert!(failure(&sent, &ok).is_none());
        let limited = json!({"result": {"a": {}}, "result_error": {"b": {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}}});
        let e = failure(&sent, &limited).expect("failed");
        assert_eq!(e.class, ErrorClass::RateLimited);
        assert_eq!(e.retry_after, Some(errors::QUERY_LIMIT_WAIT));
        assert!(
            e.message
                .starts_with("batch command `b` (crm.deal.update) failed: QUERY_LIMIT_EXCEEDED"),
            "{}",
            e.message
        );
        // A permanent failure decides over a retryable one, wherever it is.
        let both = json!({"result": {}, "result_error": {
            "a": {"error": "OPERATION_TIME_LIMIT", "error_description": "slow"},
            "b": {"error": "", "error_description": "Not found"}}});
        let e = failure(&sent, &both).expect("failed");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("`b` (crm.deal.update)"), "{}", e.message);
        assert!(e.message.contains("1 more failed: batch command `a`"));
    }

    #[test]
    fn a_create_that_succeeded_makes_a_retryable_failure_permanent() {
        let sent = args(
            0,
            &[
                ("deal", "crm.deal.add?fields[TITLE]=x"),
                ("item", "crm.item.add?entityTypeId=1038&fields[title]=y"),
                ("contact", "crm.contact.update?id=2&fields[NAME]=x"),
            ],
        );
        let limited = json!({"result": {"deal": 42, "item": {"item": {"id": 7}}},
            "result_error": {"contact": {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}}});
        let e = failure(&sent, &limited).expect("failed");
        assert_eq!(e.class, ErrorClass::Permanent, "{}", e.message);
        assert_eq!(e.retry_after, None);
        assert!(
            e.message.starts_with(
                "batch command `contact` (crm.contact.update) failed: QUERY_LIMIT_EXCEEDED"
            ),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(
                "already created `deal` (crm.deal.add) id 42, `item` (crm.item.add) id 7"
            ),
            "{}",
            e.message
        );
        // The add itself failed (nothing created): retrying is safe.
        let add_failed = json!({"result": {"contact": true},
            "result_error": {"deal": {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
                "item": {"error": "OPERATION_TIME_LIMIT", "error_description": "slow"}}});
        let e = failure(&sent, &add_failed).expect("failed");
        assert!(e.class.is_retryable(), "{:?}: {}", e.class, e.message);
        assert!(!e.message.contains("already created"), "{}", e.message);
    }

    #[test]
    fn halt_names_the_commands_that_did_not_run() {
        let sent = args(
            1,
            &[
                ("a", "crm.deal.get?id=1"),
                ("b", "crm.deal.get?id=2"),
                ("c", "x.y"),
            ],
        );
        let halted = json!({"result": {"a": {}}, "result_error": {"b": {"error": "", "error_description": "Not found"}}});
        let e = failure(&sent, &halted).expect("failed");
        assert!(
            e.message.ends_with("(halt: 1 later command was not run)"),
            "{}",
            e.message
        );
        assert!(halt(&json!({"halt": true})) && halt(&json!({"halt": "Y"})));
        assert!(!halt(&json!({"halt": 0})) && !halt(&json!({})));
    }
}
