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
use jaq_json::Val;
use serde::Deserialize as _;
use serde_json::Value;

type Data = data::JustLut<Val>;

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
        let started = Instant::now();
        let input = Val::deserialize(record).map_err(|e| format!("record is not JSON: {e}"))?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
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

fn to_json(val: &Val) -> Result<Value, String> {
    serde_json::from_str(&val.to_string())
        .map_err(|e| format!("jq produced a value that is not JSON ({e}): {val}"))
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
    fn runaway_generators_hit_the_time_budget() {
        let f = JqFilter::compile("repeat(.)").unwrap();
        let e = f
            .apply_within(&json!(1), Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(e.contains("budget of 50 ms"), "{e}");
    }
}
