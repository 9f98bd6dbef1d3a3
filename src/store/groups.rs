//! Error groups for the dashboard: a failure's (flow, step, class, normalised message)
//! names its group; ids and numbers are stripped from the message so that "order 1042 not
//! found" and "order 977 not found" are one problem.

use redb::ReadableTable;
use sha2::{Digest as _, Sha256};

use super::records::{ErrorGroup, ErrorSummary, ExchangeRecord, decode, encode};
use super::{StoreError, Tx};

/// Digits become `#`; long tokens that mix letters and digits (ids, hashes) become `*`.
/// An HTTP status code stays: a 422 and a 500 are different problems.
pub fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut previous = "";
    for token in message.split_inclusive(|c: char| !c.is_alphanumeric()) {
        let (word, sep) = match token.char_indices().last() {
            Some((i, c)) if !c.is_alphanumeric() => (&token[..i], &token[i..]),
            _ => (token, ""),
        };
        let digits = word.chars().filter(char::is_ascii_digit).count();
        let status_code = previous == "HTTP" && digits == 3 && word.len() == 3;
        if !word.is_empty() {
            previous = word;
        }
        if status_code {
            out.push_str(word);
        } else if digits > 0 && word.len() >= 8 && digits < word.len() {
            out.push('*');
        } else {
            out.extend(
                word.chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c }),
            );
        }
        out.push_str(sep);
    }
    collapse_hashes(&out)
}

fn collapse_hashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == '#' && out.ends_with('#')) {
            out.push(c);
        }
    }
    out
}

pub fn group_id(flow: &str, err: &ErrorSummary) -> String {
    let mut h = Sha256::new();
    h.update(flow.as_bytes());
    h.update([0]);
    h.update(err.step.as_deref().unwrap_or("").as_bytes());
    h.update([0, err.class.code()]);
    h.update(normalize(err.message.as_str()).as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Counts an exchange that just failed or was rejected into its group.
pub fn record(txn: &Tx<'_>, rec: &ExchangeRecord, err: &ErrorSummary) -> Result<(), StoreError> {
    let id = group_id(&rec.flow, err);
    let mut groups = txn.error_groups()?;
    let existing = groups
        .get((rec.flow.as_str(), id.as_str()))?
        .map(|v| v.value().to_vec());
    let group = match existing {
        Some(bytes) => {
            let mut g: ErrorGroup = decode(&bytes)?;
            g.count += 1;
            g.last_seen = err.at;
            g.sample_id = rec.id;
            g.sample_message = err.message.clone();
            g.open = true;
            g
        }
        None => ErrorGroup {
            flow: rec.flow.clone(),
            step: err.step.clone(),
            class: err.class,
            normalized: normalize(err.message.as_str()),
            sample_message: err.message.clone(),
            sample_id: rec.id,
            count: 1,
            first_seen: err.at,
            last_seen: err.at,
            open: true,
            announced: false,
        },
    };
    groups.insert((rec.flow.as_str(), id.as_str()), encode(&group)?.as_slice())?;
    txn.open_groups()?
        .insert((rec.flow.as_str(), id.as_str()), ())?;
    txn.group_members()?.insert((id.as_str(), rec.id), ())?;
    Ok(())
}

/// A change the flow's failure digest reports.
#[derive(Clone, Debug)]
pub enum Digest {
    /// A group began failing (first time, or again after a success).
    Started(ErrorGroup),
    /// The flow succeeded after these groups' failures.
    Stopped(Vec<ErrorGroup>),
}

/// After an exchange ends: announces a group that just opened, or closes the flow's open
/// groups when it succeeded.
pub fn digest(txn: &Tx<'_>, rec: &ExchangeRecord) -> Result<Option<Digest>, StoreError> {
    use crate::model::Status;
    match (rec.status, &rec.last_error) {
        (Status::Failed | Status::Rejected, Some(err)) => {
            let id = group_id(&rec.flow, err);
            let mut groups = txn.error_groups()?;
            let found = groups
                .get((rec.flow.as_str(), id.as_str()))?
                .map(|v| v.value().to_vec());
            let Some(bytes) = found else { return Ok(None) };
            let mut g: ErrorGroup = decode(&bytes)?;
            if !g.open || g.announced {
                return Ok(None);
            }
            g.announced = true;
            groups.insert((rec.flow.as_str(), id.as_str()), encode(&g)?.as_slice())?;
            Ok(Some(Digest::Started(g)))
        }
        (Status::Succeeded, _) => close_open(txn, &rec.flow),
        _ => Ok(None),
    }
}

fn close_open(txn: &Tx<'_>, flow: &str) -> Result<Option<Digest>, StoreError> {
    let ids: Vec<String> = {
        let open = txn.open_groups()?;
        open.range((flow, "")..=(flow, "\u{10FFFF}"))?
            .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
            .collect::<Result<_, _>>()?
    };
    if ids.is_empty() {
        return Ok(None);
    }
    let mut groups = txn.error_groups()?;
    let mut open = txn.open_groups()?;
    let mut stopped = Vec::new();
    for id in ids {
        open.remove((flow, id.as_str()))?;
        let found = groups.get((flow, id.as_str()))?.map(|v| v.value().to_vec());
        let Some(bytes) = found else { continue };
        let mut g: ErrorGroup = decode(&bytes)?;
        let was_announced = g.announced;
        g.open = false;
        g.announced = false;
        groups.insert((flow, id.as_str()), encode(&g)?.as_slice())?;
        if was_announced {
            stopped.push(g);
        }
    }
    Ok((!stopped.is_empty()).then_some(Digest::Stopped(stopped)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_numbers_do_not_split_groups() {
        assert_eq!(
            normalize("order 1042 not found"),
            normalize("order 977 not found")
        );
        assert_eq!(
            normalize("HTTP 422: lead a1b2c3d4e5 exists"),
            "HTTP 422: lead * exists"
        );
        assert_ne!(normalize("HTTP 422: bad"), normalize("HTTP 500: bad"));
        assert_ne!(
            normalize("order 1 not found"),
            normalize("contact 1 not found")
        );
        assert_eq!(normalize("ёлка 12"), "ёлка #");
    }
}
