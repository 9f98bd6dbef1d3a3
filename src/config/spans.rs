//! Where a key path sits in the TOML source, so that every config error names its line.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

/// Converts serde_ignored's leaf-to-root path into root-first segments.
pub fn from_ignored(p: &serde_ignored::Path<'_>, out: &mut Vec<PathSeg>) {
    use serde_ignored::Path;
    match p {
        Path::Root => {}
        Path::Seq { parent, index } => {
            from_ignored(parent, out);
            out.push(PathSeg::Index(*index));
        }
        Path::Map { parent, key } => {
            from_ignored(parent, out);
            if key != "$__serde_spanned_private_value" {
                out.push(PathSeg::Key(key.clone()));
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => from_ignored(parent, out),
    }
}

fn walk<'a>(
    root: &'a DeValue<'a>,
    path: &[PathSeg],
) -> Option<(&'a DeValue<'a>, Option<Range<usize>>)> {
    let mut cur = root;
    let mut span = None;
    for seg in path {
        let next: &Spanned<DeValue<'_>> = match seg {
            PathSeg::Key(k) => cur.get(k.as_str())?,
            PathSeg::Index(i) => cur.get(*i)?,
        };
        span = Some(next.span());
        cur = next.get_ref();
    }
    Some((cur, span))
}

/// Byte span of the value at `path`.
pub fn span_of(src: &str, path: &[PathSeg]) -> Option<Range<usize>> {
    let root = DeValue::Table(DeTable::parse(src).ok()?.into_inner());
    walk(&root, path)?.1
}

/// Byte span of the key itself (the last segment must be a key).
pub fn key_span_of(src: &str, path: &[PathSeg]) -> Option<Range<usize>> {
    let (PathSeg::Key(last), parent) = path.split_last()? else {
        return None;
    };
    let root = DeValue::Table(DeTable::parse(src).ok()?.into_inner());
    let (DeValue::Table(t), _) = walk(&root, parent)? else {
        return None;
    };
    let (k, _) = t.get_key_value(last.as_str())?;
    Some(k.span())
}

/// `["flows", 2, "steps"]` -> `flows[2].steps`
pub fn fmt_path(p: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            PathSeg::Key(k) if s.is_empty() => s.push_str(k),
            PathSeg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Byte offset -> 1-based (line, column in chars).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, src[line_start..offset].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[server]\nlisten = \"x\"\n\n[[flows]]\nname = \"a\"\n\n[[flows]]\nname = \"b\"\nsteps = [ { map = \".\" }, { call = \"x\" } ]\n";

    #[test]
    fn finds_keys_in_arrays_of_tables_and_inline_arrays() {
        let at = |p: &[PathSeg]| key_span_of(SRC, p).map(|r| line_col(SRC, r.start));
        assert_eq!(at(&[key("server"), key("listen")]), Some((2, 1)));
        assert_eq!(
            at(&[key("flows"), PathSeg::Index(1), key("name")]),
            Some((8, 1))
        );
        assert_eq!(
            at(&[
                key("flows"),
                PathSeg::Index(1),
                key("steps"),
                PathSeg::Index(1),
                key("call")
            ])
            .map(|p| p.0),
            Some(9)
        );
        assert_eq!(
            fmt_path(&[key("flows"), PathSeg::Index(1), key("steps")]),
            "flows[1].steps"
        );
    }
}
