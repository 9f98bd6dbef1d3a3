//! jq through jaq: compile a program once (with the standard library and obmen's own
//! definitions such as `status("map")`), run it many times on serde_json values.

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data::JustLut};
use jaq_json::{Map, Num, Val};
use serde_json::Value;

/// Data kind: plain `Val`s, only the look-up table as global data
/// (no `input`/`inputs` support, which would need a custom `DataT`).
type D = JustLut<Val>;

/// A compiled jq program. Owns all its data (no borrow of source/arena),
/// and is `Send + Sync + 'static` (checked at the bottom of this file).
pub type Filter = jaq_core::Filter<D>;

/// Native functions we refuse to expose (`env` would leak the process
/// environment, e.g. secrets, to user-written programs). Empty it if you want it.
const BLOCKED_FUNS: &[&str] = &["env"];

/// Runtime error of a jq program.
#[derive(Debug, Clone, PartialEq)]
pub enum JqError {
    /// jaq-internal error (type error, bad index, ...), only a message.
    Message(String),
    /// `error(v)` raised by the program; `v` is the raw payload (any JSON value).
    Value(Value),
    /// `halt` / `halt_error` was called with this exit code.
    Halt(i32),
}

impl std::fmt::Display for JqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(m) => f.write_str(m),
            Self::Value(Value::String(s)) => f.write_str(s),
            Self::Value(v) => write!(f, "{v} (not a string)"),
            Self::Halt(code) => write!(f, "halt with exit code {code}"),
        }
    }
}
impl std::error::Error for JqError {}

/// Compile `code` with the jaq standard library and the given global
/// variables (names must start with `$`, e.g. `"$__maps"`).
pub fn compile(code: &str, global_vars: &[&str]) -> Result<Filter, String> {
    compile_with_defs("", code, global_vars)
}

/// Like [`compile`], but with user definitions (`def f: ...;` ...) prepended.
/// Error positions are reported relative to the part (defs or program) they occur in.
pub fn compile_with_defs(defs: &str, code: &str, global_vars: &[&str]) -> Result<Filter, String> {
    if let Some(bad) = global_vars.iter().find(|v| !v.starts_with('$')) {
        return Err(format!("global variable name must start with '$': {bad}"));
    }
    // one source string; the newline keeps a trailing `#` comment in defs harmless
    let src = if defs.is_empty() {
        code.to_owned()
    } else {
        format!("{defs}\n{code}")
    };
    let prefix_len = if defs.is_empty() { 0 } else { defs.len() + 1 };
    let pos = |part: &str| position(&src, part, defs, prefix_len);

    let std_defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs::<D>()
        .chain(jaq_std::funs::<D>())
        .chain(jaq_json::funs::<D>())
        .filter(|(name, _, _)| !BLOCKED_FUNS.contains(name));

    // The arena only lives during compilation; the Filter owns everything it needs.
    let arena = Arena::default();
    let loader = Loader::new(std_defs);
    let modules = loader
        .load(
            &arena,
            File {
                code: src.as_str(),
                path: (),
            },
        )
        .map_err(|errs| {
            let mut msgs = Vec::new();
            for (_file, err) in errs {
                match err {
                    load::Error::Io(es) => {
                        for (path, e) in es {
                            msgs.push(format!("cannot load module {path:?}: {e}"));
                        }
                    }
                    load::Error::Lex(es) => {
                        for (expect, found) in es {
                            msgs.push(format!(
                                "syntax error: expected {} {}",
                                expect.as_str(),
                                pos(found)
                            ));
                        }
                    }
                    load::Error::Parse(es) => {
                        for (expect, found) in es {
                            let found_s = if found.is_empty() {
                                "end of input".to_owned()
                            } else {
                                format!("{found:?}")
                            };
                            msgs.push(format!(
                                "syntax error: expected {}, found {found_s} {}",
                                expect.as_str(),
                                pos(found)
                            ));
                        }
                    }
                }
            }
            msgs.join("; ")
        })?;

    Compiler::default()
        .with_funs(funs)
        .with_global_vars(global_vars.iter().copied())
        .compile(modules)
        .map_err(|errs| {
            let mut msgs = Vec::new();
            for (_file, es) in errs {
                for (name, undef) in es {
                    let what = match undef {
                        jaq_core::compile::Undefined::Filter(arity) => {
                            format!("filter {name}/{arity}")
                        }
                        other => format!("{} {name}", other.as_str()),
                    };
                    msgs.push(format!("undefined {what} {}", pos(name)));
                }
            }
            msgs.join("; ")
        })
}

/// "at line L, column C" (1-based, column in chars) of a slice of `src`,
/// relative to the defs or the program part.
fn position(src: &str, part: &str, defs: &str, prefix_len: usize) -> String {
    // all slices reported by jaq point into the source string
    let start = part.as_ptr() as usize;
    let base = src.as_ptr() as usize;
    if start < base || start > base + src.len() {
        return String::new(); // e.g. an error in jaq's own std defs
    }
    let off = load::span(src, part).start;
    let (text, off, where_) = if off < prefix_len && !defs.is_empty() {
        (defs, off.min(defs.len()), "in defs ")
    } else {
        (&src[prefix_len..], off - prefix_len, "")
    };
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("({where_}at line {line}, column {col})")
}

/// Run a compiled filter. `vars` must be in the same order as the
/// `global_vars` names given to [`compile`].
pub fn run(filter: &Filter, input: Value, vars: Vec<Value>) -> Result<Vec<Value>, JqError> {
    run_val(
        filter,
        json_to_val(input),
        vars.into_iter().map(json_to_val),
    )
}

/// Same as [`run`], but with already converted `Val`s (useful to convert a big,
/// constant variable such as `$__maps` only once; `Val` is `Rc`-based unless
/// jaq-json's `sync` feature is on, so it then cannot be shared across threads).
pub fn run_val(
    filter: &Filter,
    input: Val,
    vars: impl IntoIterator<Item = Val>,
) -> Result<Vec<Value>, JqError> {
    // A Ctx is cheap (a pointer to the LUT + a list of vars); make one per run.
    let ctx = Ctx::<D>::new(&filter.lut, Vars::new(vars));
    let mut out = Vec::new();
    for r in filter.id.run((ctx, input)) {
        match r {
            Ok(v) => out.push(val_to_json(&v)),
            // Do NOT use jaq_core::unwrap_valr here: on `halt` it calls process::exit!
            Err(exn) => {
                return Err(match exn.get_err() {
                    Ok(err) => {
                        let v = err.clone().into_val();
                        // `error(v)` stores v as is; internal errors are message parts
                        if jaq_core::Error::new(v.clone()) == err {
                            JqError::Value(val_to_json(&v))
                        } else {
                            JqError::Message(err.to_string())
                        }
                    }
                    Err(exn) => match exn.get_halt() {
                        Ok(code) => JqError::Halt(code),
                        Err(exn) => JqError::Message(format!("unexpected jaq exception: {exn:?}")),
                    },
                });
            }
        }
    }
    Ok(out)
}

/// serde_json -> jaq value.
pub fn json_to_val(v: Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Num(Num::from_integral(i))
            } else if let Some(u) = n.as_u64() {
                Val::Num(Num::from_integral(u))
            } else {
                Val::Num(Num::Float(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Val::from(s),
        Value::Array(a) => a.into_iter().map(json_to_val).collect(),
        Value::Object(o) => Val::obj(
            o.into_iter()
                .map(|(k, v)| (Val::from(k), json_to_val(v)))
                .collect::<Map>(),
        ),
    }
}

/// jaq value -> serde_json.
pub fn val_to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(val_to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(), // jaq allows non-string keys
                    };
                    (k, val_to_json(v))
                })
                .collect(),
        ),
    }
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number), // NaN/inf -> null
        // big integers / decimal literals kept verbatim by jaq: let serde_json parse the text
        // (becomes f64 unless serde_json's `arbitrary_precision` feature is on)
        other => other
            .to_string()
            .parse::<serde_json::Number>()
            .map_or(Value::Null, Value::Number),
    }
}

// Compile-time proof that a compiled filter can be shared across tokio tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Filter>();
};

/// obmen's own jq definitions. `status("name")` looks a value up in the flow's status map
/// and raises a marked error when the value is not there: an unmapped status is never
/// passed through or guessed.
const OBMEN_DEFS: &str = r#"def status($m): . as $v | ($v | tostring) as $k | if ($__maps | has($m)) and ($__maps[$m] | has($k)) then $__maps[$m][$k] else error({"obmen_unmapped": $m, "value": $v}) end;"#;
const GLOBALS: &[&str] = &["$__maps"];

/// Why a jq program produced no usable value.
#[derive(Clone, Debug, PartialEq)]
pub enum JqFailure {
    Unmapped { map: String, value: Value },
    Error(String),
}

impl std::fmt::Display for JqFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JqFailure::Unmapped { map, value } => {
                write!(f, "status map `{map}` has no entry for {value}")
            }
            JqFailure::Error(e) => f.write_str(e),
        }
    }
}

/// A compiled jq program of the config, cheap to clone and shared across tasks.
#[derive(Clone)]
pub struct Jq {
    filter: std::sync::Arc<Filter>,
    source: std::sync::Arc<str>,
}

impl std::fmt::Debug for Jq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jq({})", self.source)
    }
}

impl Jq {
    pub fn compile(code: &str) -> Result<Jq, String> {
        let filter = compile_with_defs(OBMEN_DEFS, code, GLOBALS)?;
        Ok(Jq {
            filter: std::sync::Arc::new(filter),
            source: code.into(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The program's first output, or `None` when it outputs nothing (`empty`).
    pub fn first(&self, input: Value, maps: &Value) -> Result<Option<Value>, JqFailure> {
        match run(&self.filter, input, vec![maps.clone()]) {
            Ok(outputs) => Ok(outputs.into_iter().next()),
            Err(JqError::Value(Value::Object(o))) if o.contains_key("obmen_unmapped") => {
                let map = o
                    .get("obmen_unmapped")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Err(JqFailure::Unmapped {
                    map,
                    value: o.get("value").cloned().unwrap_or(Value::Null),
                })
            }
            Err(e) => Err(JqFailure::Error(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_maps_map_or_refuse() {
        let jq = Jq::compile(".s | status(\"deal\")").expect("compiles");
        let maps = json!({"deal": {"WON": "done", "1": "one"}});
        assert_eq!(
            jq.first(json!({"s": "WON"}), &maps),
            Ok(Some(json!("done")))
        );
        assert_eq!(jq.first(json!({"s": 1}), &maps), Ok(Some(json!("one"))));
        let err = jq.first(json!({"s": "LOST"}), &maps).expect_err("unmapped");
        assert_eq!(
            err,
            JqFailure::Unmapped {
                map: "deal".into(),
                value: json!("LOST")
            }
        );
        assert!(err.to_string().contains("LOST"));
    }

    #[test]
    fn compile_errors_name_the_position() {
        let err = Jq::compile(".a |\n  nosuch(1)").expect_err("undefined");
        assert!(err.contains("nosuch") && err.contains("line 2"), "{err}");
        assert!(Jq::compile("env").is_err(), "env must stay blocked");
    }

    #[test]
    fn empty_is_none() {
        let jq = Jq::compile("select(.a)").expect("compiles");
        assert_eq!(jq.first(json!({"a": false}), &json!({})), Ok(None));
    }
}
