//! jq transforms through the jaq crates: compiled once when the pipeline
//! loads, run once per record.
//!
//! The time budget is checked each time the filter emits a value: jaq has
//! no way to interrupt a filter that computes for long without emitting,
//! so the budget bounds slow filters and runaway generators (`repeat`,
//! `range(1e9)`), not a single endless computation.

use std::time::{Duration, Instant};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, compile, data};
use jaq_json::{Map, Num, Val};
use serde_json::Value;

type Data = data::JustLut<Val>;

/// The variables every filter may read, in the order their values are given:
/// a pipeline's watermarks, `[vars]`, the environment variables the filter
/// names and facts about the run. Values come in through jq, never through
/// the filter's text, so a value cannot change what the filter does.
pub const GLOBALS: [&str; 4] = ["$state", "$vars", "$env", "$run"];

/// The values of [`GLOBALS`] for one run (or one `ionflow test`), kept as
/// JSON: jaq's values are not `Send`, and a run's state crosses awaits.
#[derive(Debug, Clone)]
pub struct JqGlobals {
    values: Vec<Value>,
}

impl Default for JqGlobals {
    /// Empty objects: `$state.since` is `null` rather than an error.
    fn default() -> Self {
        let empty = Value::Object(Default::default());
        JqGlobals::new(&empty, &empty, &empty, &empty)
    }
}

impl JqGlobals {
    pub fn new(state: &Value, vars: &Value, env: &Value, run: &Value) -> Self {
        JqGlobals {
            values: [state, vars, env, run].into_iter().cloned().collect(),
        }
    }
}

/// The names a filter reads as `$env.NAME`: only these are looked up, so a
/// filter cannot dump the whole environment (and its secrets) into records.
pub fn env_names(code: &str) -> Vec<String> {
    let mut names: Vec<String> = code
        .match_indices("$env.")
        .map(|(at, needle)| {
            code[at + needle.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

pub struct JqFilter {
    code: String,
    filter: compile::Filter<Native<Data>>,
}

impl std::fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqFilter")
            .field("code", &self.code)
            .finish()
    }
}

impl JqFilter {
    /// Compiles `code`; the error says where the filter stops making sense.
    pub fn compile(code: &str) -> Result<JqFilter, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let loader = Loader::new(defs);
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| describe_load_errors(code, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(GLOBALS)
            .compile(modules)
            .map_err(|errors| {
                let names: Vec<String> = errors
                    .into_iter()
                    .flat_map(|(_, errs)| errs)
                    .map(|(name, undefined)| format!("{name} ({undefined:?})").to_lowercase())
                    .collect();
                format!("undefined in jq filter: {}", names.join(", "))
            })?;
        Ok(JqFilter {
            code: code.to_owned(),
            filter,
        })
    }

    /// Runs the filter on one record; every output is a record.
    pub fn apply(&self, record: &Value) -> Result<Vec<Value>, String> {
        self.apply_within(record, None)
    }

    /// Like [`Self::apply`], failing when the outputs take longer than `budget`.
    pub fn apply_within(
        &self,
        record: &Value,
        budget: Option<Duration>,
    ) -> Result<Vec<Value>, String> {
        self.apply_with(record, budget, &JqGlobals::default())
    }

    /// Like [`Self::apply_within`], with the run's `$state`, `$vars`, `$env` and `$run`.
    pub fn apply_with(
        &self,
        record: &Value,
        budget: Option<Duration>,
        globals: &JqGlobals,
    ) -> Result<Vec<Value>, String> {
        let started = Instant::now();
        let input = to_val(record);
        // Built per record, small objects, and only for a filter naming a variable.
        let values: Vec<Val> = if self.code.contains('$') {
            globals.values.iter().map(to_val).collect()
        } else {
            vec![Val::Null; GLOBALS.len()]
        };
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new(values));
        let mut out = Vec::new();
        for result in self.filter.id.run((ctx, input)) {
            if let Some(budget) = budget
                && started.elapsed() > budget
            {
                return Err(format!(
                    "the jq filter took longer than its budget of {} ms for this record \
                     (after {} outputs); raise timeout_ms or simplify the filter",
                    budget.as_millis(),
                    out.len()
                ));
            }
            match result {
                Ok(val) => out.push(to_json(&val)?),
                Err(exn) => {
                    return Err(match exn.get_err() {
                        Ok(error) => format!("jq error: {error}"),
                        // jaq's own helper would exit the process on `halt`.
                        Err(_) => "the jq filter called halt, which transforms may not do".into(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// A record as jaq's value, built directly: what `Val::deserialize` makes
/// of it, without going through serde's visitor.
fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.clone().into_bytes()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(fields) => Val::obj(
            fields
                .iter()
                .map(|(k, v)| (Val::utf8_str(k.clone().into_bytes()), to_val(v)))
                .collect::<Map>(),
        ),
    }
}

/// A jq output as a record. Plain JSON converts directly; anything else
/// (byte strings, big or decimal numbers, NaN, non-string keys) goes
/// through jaq's JSON text, which decides what it means or refuses it.
fn to_json(val: &Val) -> Result<Value, String> {
    match plain_json(val) {
        Some(value) => Ok(value),
        None => serde_json::from_str(&val.to_string())
            .map_err(|e| format!("jq produced a value that is not JSON ({e}): {val}")),
    }
}

/// `None` for a value that is not plain JSON: see [`to_json`].
fn plain_json(val: &Val) -> Option<Value> {
    Some(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => Value::Number(serde_json::Number::from_f64(*f)?),
        // `tonumber` keeps the literal: JSON reads it as the text path would.
        Val::Num(Num::Dec(text)) => Value::Number(text.parse().ok()?),
        Val::Num(_) | Val::BStr(_) => return None,
        Val::TStr(bytes) => Value::String(std::str::from_utf8(bytes).ok()?.to_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(plain_json).collect::<Option<_>>()?),
        Val::Obj(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| match k {
                    Val::TStr(key) => {
                        Some((std::str::from_utf8(key).ok()?.to_owned(), plain_json(v)?))
                    }
                    _ => None,
                })
                .collect::<Option<_>>()?,
        ),
    })
}

fn describe_load_errors(code: &str, errors: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error;
    let mut parts = Vec::new();
    for (_, error) in errors {
        match error {
            Error::Io(items) => {
                parts.extend(items.into_iter().map(|(path, e)| format!("{path}: {e}")))
            }
            Error::Lex(items) => parts.extend(items.into_iter().map(|(expect, at)| {
                format!("expected {} {}", expect.as_str(), position(code, at))
            })),
            Error::Parse(items) => parts.extend(items.into_iter().map(|(expect, at)| {
                format!("expected {} {}", expect.as_str(), position(code, at))
            })),
        }
    }
    format!("jq filter does not parse: {}", parts.join("; "))
}

/// `at` is a slice of `code`: its offset gives the column.
fn position(code: &str, at: &str) -> String {
    let offset = (at.as_ptr() as usize).saturating_sub(code.as_ptr() as usize);
    if offset >= code.len() {
        "at the end of the filter".into()
    } else {
        let snippet: String = code[offset..].chars().take(20).collect();
        format!(
            "at column {} (near `{snippet}`)",
            code[..offset].chars().count() + 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_filters_and_splits() {
        let f = JqFilter::compile("{item: .ITNO, n: (.QTY | tonumber)}").unwrap();
        assert_eq!(
            f.apply(&json!({"ITNO": "A1", "QTY": "5"})).unwrap(),
            vec![json!({"item": "A1", "n": 5})]
        );
        let f = JqFilter::compile("select(.STAT == \"20\")").unwrap();
        assert!(f.apply(&json!({"STAT": "90"})).unwrap().is_empty());
        let f = JqFilter::compile(".lines[]").unwrap();
        assert_eq!(f.apply(&json!({"lines": [1, 2, 3]})).unwrap().len(), 3);
    }

    #[test]
    fn errors_are_reported_not_fatal() {
        assert!(
            JqFilter::compile("{item: .ITNO")
                .unwrap_err()
                .contains("does not parse")
        );
        assert!(
            JqFilter::compile("nosuchfn(1)")
                .unwrap_err()
                .contains("nosuchfn")
        );
        let f = JqFilter::compile(".a + 1").unwrap();
        assert!(
            f.apply(&json!({"a": "x"}))
                .unwrap_err()
                .contains("jq error")
        );
        let f = JqFilter::compile("halt").unwrap();
        assert!(f.apply(&json!(1)).unwrap_err().contains("halt"));
    }

    #[test]
    fn converts_exactly_as_jaq_reads_and_writes_json() {
        let f = JqFilter::compile(".").unwrap();
        let record = json!({
            "s": "tekst \u{e9}\"\\", "i": -7, "u": 18446744073709551615u64, "f": 2.5,
            "e": 1e300, "n": null, "b": true, "a": [1, "x", [], {}], "o": {"k": {"z": 0}}
        });
        assert_eq!(f.apply(&record).unwrap(), vec![record.clone()]);
        // The slow path, text through jaq's printer, agrees with the fast one.
        let val = to_val(&record);
        let text: Value = serde_json::from_str(&val.to_string()).unwrap();
        assert_eq!(to_json(&val).unwrap(), text);
        let f =
            JqFilter::compile("{x: (.f * 2), k: .o.k | keys, t: (\"1.5\" | tonumber)}").unwrap();
        assert_eq!(
            f.apply(&record).unwrap(),
            vec![json!({"x": 5.0, "k": ["z"], "t": 1.5})]
        );
        // Not JSON: refused with the same message as before.
        let f = JqFilter::compile("nan").unwrap();
        assert!(f.apply(&json!(1)).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn globals_are_jq_variables() {
        let f = JqFilter::compile(
            "select(.LMDT > $state.since) | {c: $vars.company, e: $env.X, at: $run.started_at}",
        )
        .unwrap();
        let globals = JqGlobals::new(
            &json!({"since": "20260101"}),
            &json!({"company": "100"}),
            &json!({"X": "x"}),
            &json!({"started_at": "2026-12-01T00:00:00Z"}),
        );
        let out = f
            .apply_with(&json!({"LMDT": "20260102"}), None, &globals)
            .unwrap();
        assert_eq!(
            out,
            vec![json!({"c": "100", "e": "x", "at": "2026-12-01T00:00:00Z"})]
        );
        assert!(
            f.apply_with(&json!({"LMDT": "20251231"}), None, &globals)
                .unwrap()
                .is_empty()
        );
        // Without values the globals are empty objects, not errors.
        assert!(f.apply(&json!({"LMDT": "1"})).unwrap().is_empty());
        assert!(JqFilter::compile("$nosuch").unwrap_err().contains("nosuch"));
        assert_eq!(env_names("$env.A + $env.B_2 + $env.A"), ["A", "B_2"]);
    }

    #[test]
    fn runaway_generators_hit_the_time_budget() {
        let f = JqFilter::compile("repeat(.)").unwrap();
        let e = f
            .apply_within(&json!(1), Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(e.contains("budget of 50 ms"), "{e}");
    }
}
