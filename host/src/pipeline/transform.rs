//! jq transforms through the jaq crates: compiled once when the pipeline
//! loads, run once per record on the sandbox's worker threads.
//!
//! Every evaluation is bounded (see `crate::sandbox`): jaq's interpreter
//! asks for its look-up table at every step it takes, and that is where
//! [`Guard::tick`] checks the time budget, the memory budget and the
//! depth of the stack, so a filter is stopped even when it emits nothing
//! (`def f: f; f`). `range` is replaced by a version that checks at each
//! value, because `[range(1e9)]` and `last(range(1e15))` consume it
//! without stepping the interpreter; `fromjson` refuses text nested deeper
//! than [`MAX_DEPTH`], which its parser would recurse through.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, v};
use jaq_core::{Compiler, Ctx, DataT, Error, Exn, Native, Vars, compile, data};
use jaq_json::Val;

use super::values::{to_json, to_val};
use serde_json::Value;

use crate::sandbox::{self, Limit, alloc::Budget};

/// The variables every filter may read, in the order their values are given:
/// a pipeline's watermarks, `[vars]`, the environment variables the filter
/// names and facts about the run. Values come in through jq, never through
/// the filter's text, so a value cannot change what the filter does.
pub const GLOBALS: [&str; 4] = ["$state", "$vars", "$env", "$run"];

/// The values of [`GLOBALS`] for one run (or one `ionflow test`), kept as
/// JSON: jaq's values are not `Send`, and they go to the sandbox's workers.
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

    /// As jaq's variables, on the thread that evaluates: built once per
    /// chunk of records and shared by each record's evaluation (cloning
    /// them is a reference count).
    pub(crate) fn vars(&self) -> Vars<Val> {
        Vars::new(self.values.iter().map(to_val))
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

/// Longest filter accepted: jaq's parser recurses on nesting, and the
/// filter is compiled on a thread with [`COMPILE_STACK`].
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Deepest nesting of brackets and parentheses in a filter.
pub const MAX_FILTER_NESTING: usize = 256;
const COMPILE_STACK: usize = 256 << 20;
/// Deepest JSON value `fromjson` parses and a record output may have.
pub const MAX_DEPTH: usize = 10_000;

/// jaq's data: the look-up table, reached through the guard.
pub struct Guarded;

impl DataT for Guarded {
    type V<'a> = Val;
    type Data<'a> = &'a Env<'a>;
}

pub struct Env<'a> {
    lut: &'a jaq_core::Lut<Guarded>,
    guard: &'a Guard,
}

impl<'a> data::HasLut<'a, Guarded> for &'a Env<'a> {
    #[inline]
    fn lut(&self) -> &'a jaq_core::Lut<Guarded> {
        self.guard.tick();
        self.lut
    }
}

/// The limits of one evaluation, checked at each step.
pub struct Guard {
    ticks: Cell<u32>,
    deadline: Instant,
    stack_floor: usize,
}

impl Guard {
    fn new(budget: Duration) -> Guard {
        Guard {
            ticks: Cell::new(0),
            deadline: Instant::now() + budget,
            stack_floor: stack_pointer().saturating_sub(sandbox::eval_stack()),
        }
    }

    /// Stops the evaluation (see `sandbox::raise`) at a limit. The clock is
    /// read every 1024 steps: a step is well under a microsecond.
    #[inline]
    pub fn tick(&self) {
        if stack_pointer() < self.stack_floor {
            sandbox::raise(Limit::Depth);
        }
        if Budget::exceeded() {
            sandbox::raise(Limit::Memory);
        }
        let ticks = self.ticks.get().wrapping_add(1);
        self.ticks.set(ticks);
        if ticks.is_multiple_of(1024) && Instant::now() >= self.deadline {
            sandbox::raise(Limit::Time);
        }
    }
}

#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// A compiled filter; cheap to clone and to send to the workers.
#[derive(Clone)]
pub struct JqFilter {
    code: Arc<str>,
    filter: Arc<compile::Filter<Native<Guarded>>>,
}

impl std::fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqFilter")
            .field("code", &self.code)
            .finish()
    }
}

/// jaq's functions, with `range/3` and `fromjson` replaced by bounded ones.
fn funs() -> impl Iterator<Item = Fun<Guarded>> {
    let replaced = |(name, args, _): &Fun<Guarded>| {
        matches!((*name, args.len()), ("range", 3) | ("fromjson", 0))
    };
    let ours: [Fun<Guarded>; 2] = [
        ("range", v(3), Native::new(|cv| guarded_range(cv))),
        ("fromjson", v(0), Native::new(|cv| bounded_fromjson(cv))),
    ];
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(move |f| !replaced(f))
        .chain(ours)
}

/// `range($from; $to; $by)` as jaq defines it, checking the limits at
/// each value.
fn guarded_range<'a>((mut ctx, _): jaq_core::Cv<'a, Guarded>) -> jaq_core::ValXs<'a, Val> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let by = ctx.pop_var();
    let to = ctx.pop_var();
    let from = ctx.pop_var();
    let guard = ctx.data().guard;
    let direction = by.partial_cmp(&Val::from(0isize)).unwrap_or(Equal);
    let mut next: Result<Val, Exn<Val>> = Ok(from);
    Box::new(std::iter::from_fn(move || {
        guard.tick();
        match next.clone() {
            Ok(x) => {
                let more = match direction {
                    Greater => x < to,
                    Less => x > to,
                    Equal => x != to,
                };
                more.then(|| std::mem::replace(&mut next, (x + by.clone()).map_err(Exn::from)))
            }
            Err(e) => {
                next = Ok(to.clone());
                Some(Err(e))
            }
        }
    }))
}

/// `fromjson`, refusing text nested deeper than [`MAX_DEPTH`].
fn bounded_fromjson<'a>((_, input): jaq_core::Cv<'a, Guarded>) -> jaq_core::ValXs<'a, Val> {
    let fail = |message: String| -> jaq_core::ValXs<'a, Val> {
        Box::new(std::iter::once(Err(Exn::from(Error::str(message)))))
    };
    let bytes = match &input {
        Val::TStr(b) | Val::BStr(b) => b.clone(),
        other => return fail(format!("cannot parse {other} as JSON: it is not a string")),
    };
    if nesting(&bytes) > MAX_DEPTH {
        return fail(format!(
            "cannot parse this text as JSON: it nests deeper than {MAX_DEPTH} levels"
        ));
    }
    let values: Vec<_> = jaq_json::read::parse_many(&bytes)
        .map(|r| r.map_err(|e| Exn::from(Error::str(format!("cannot parse {input} as JSON: {e}")))))
        .collect();
    Box::new(values.into_iter())
}

/// How deep brackets nest in JSON text, outside strings.
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

impl JqFilter {
    /// Compiles `code`; the error says where the filter stops making sense.
    /// Compiling runs on a thread of its own with a large stack, after the
    /// size and nesting checks, because jaq's parser recurses.
    pub fn compile(code: &str) -> Result<JqFilter, String> {
        if code.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "the jq filter is {} bytes long, over the limit of {} KiB; move the logic into \
                 several transforms or simplify it",
                code.len(),
                MAX_FILTER_BYTES / 1024
            ));
        }
        let depth = nesting_in_filter(code);
        if depth > MAX_FILTER_NESTING {
            return Err(format!(
                "the jq filter nests brackets {depth} deep, over the limit of {MAX_FILTER_NESTING}"
            ));
        }
        let owned = code.to_owned();
        std::thread::Builder::new()
            .name("ionflow-jq-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn(move || compile_here(&owned))
            .map_err(|e| format!("could not start a thread to compile the jq filter: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("the jq compiler failed on this filter".into()))
    }

    /// Runs the filter on `input` on this (sandbox worker) thread, with the
    /// values of [`GLOBALS`] (from [`JqGlobals::vars`]). The limits are
    /// enforced by unwinding: call it inside `sandbox::guarded`.
    pub(crate) fn eval(
        &self,
        input: Val,
        time: Duration,
        globals: &Vars<Val>,
    ) -> Result<Vec<Val>, String> {
        let guard = Guard::new(time);
        let env = Env {
            lut: &self.filter.lut,
            guard: &guard,
        };
        let ctx = Ctx::<Guarded>::new(&env, globals.clone());
        let mut out = Vec::new();
        for result in self.filter.id.run((ctx, input)) {
            guard.tick();
            match result {
                Ok(val) => out.push(val),
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

    /// Runs the filter on one record on the sandbox's workers and waits:
    /// for `ionflow test` and `records_jq`, where records come one at a time.
    pub fn apply(&self, record: Value, limits: JqLimits) -> Result<Vec<Value>, String> {
        self.apply_with(record, limits, &JqGlobals::default())
    }

    /// Like [`Self::apply`], with a run's `$state`, `$vars`, `$env` and `$run`.
    pub fn apply_with(
        &self,
        record: Value,
        limits: JqLimits,
        globals: &JqGlobals,
    ) -> Result<Vec<Value>, String> {
        let filter = self.clone();
        let globals = globals.clone();
        sandbox::run_one(limits.time, move || {
            let _budget = Budget::start(limits.memory_bytes());
            let outputs = filter.eval(to_val(&record), limits.time, &globals.vars())?;
            outputs.iter().map(to_json).collect()
        })
        .unwrap_or_else(|failure| {
            Err(failure.describe("the jq filter", limits.time, limits.memory_mib))
        })
    }
}

/// The time and memory a filter may use per record.
#[derive(Debug, Clone, Copy)]
pub struct JqLimits {
    pub time: Duration,
    pub memory_mib: usize,
}

impl JqLimits {
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib.saturating_mul(1 << 20)
    }
}

fn compile_here(code: &str) -> Result<JqFilter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let arena = Arena::default();
    let loader = Loader::new(defs);
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errors| describe_load_errors(code, errors))?;
    let filter = Compiler::default()
        .with_funs(funs())
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
        code: code.into(),
        filter: Arc::new(filter),
    })
}

/// How deep `(`, `[` and `{` nest in a filter, outside string literals.
fn nesting_in_filter(code: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in code.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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

    // A small memory limit, so that growth reaches it well before the time
    // limit on a loaded machine.
    const LIMITS: JqLimits = JqLimits {
        time: Duration::from_millis(300),
        memory_mib: 16,
    };

    fn run(code: &str, record: Value) -> Result<Vec<Value>, String> {
        JqFilter::compile(code).unwrap().apply(record, LIMITS)
    }

    #[test]
    fn maps_filters_and_splits() {
        assert_eq!(
            run(
                "{item: .ITNO, n: (.QTY | tonumber)}",
                json!({"ITNO": "A1", "QTY": "5"})
            )
            .unwrap(),
            vec![json!({"item": "A1", "n": 5})]
        );
        assert!(
            run("select(.STAT == \"20\")", json!({"STAT": "90"}))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            run(".lines[]", json!({"lines": [1, 2, 3]})).unwrap().len(),
            3
        );
        assert_eq!(
            run("[range(2; 10; 3)]", json!(null)).unwrap(),
            vec![json!([2, 5, 8])]
        );
        assert_eq!(
            run("[range(3; 0; -1)]", json!(null)).unwrap(),
            vec![json!([3, 2, 1])]
        );
        assert_eq!(
            run("[.[] | fromjson]", json!(["[1]", "{\"a\": 2}"])).unwrap(),
            vec![json!([[1], {"a": 2}])]
        );
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
        let limits = JqLimits {
            time: Duration::from_secs(5),
            memory_mib: 64,
        };
        let out = f
            .apply_with(json!({"LMDT": "20260102"}), limits, &globals)
            .unwrap();
        assert_eq!(
            out,
            vec![json!({"c": "100", "e": "x", "at": "2026-12-01T00:00:00Z"})]
        );
        assert!(
            f.apply_with(json!({"LMDT": "20251231"}), limits, &globals)
                .unwrap()
                .is_empty()
        );
        // Without values the globals are empty objects, not errors: every
        // field reads as null (and a string sorts after null in jq).
        assert_eq!(
            f.apply(json!({"LMDT": "1"}), limits).unwrap(),
            vec![json!({"c": null, "e": null, "at": null})]
        );
        assert!(JqFilter::compile("$nosuch").unwrap_err().contains("nosuch"));
        assert_eq!(env_names("$env.A + $env.B_2 + $env.A"), ["A", "B_2"]);
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
        assert!(
            run(".a + 1", json!({"a": "x"}))
                .unwrap_err()
                .contains("jq error")
        );
        assert!(run("halt", json!(1)).unwrap_err().contains("halt"));
        assert!(run("nan", json!(1)).unwrap_err().contains("not JSON"));
        // A panic inside jaq (capacity overflow) fails the record only.
        let e = run(r#""ab" * 9223372036854775807"#, json!(1)).unwrap_err();
        assert!(
            e.contains("memory limit") || e.contains("failed inside"),
            "{e}"
        );
    }

    #[test]
    fn runaway_filters_stop_at_a_named_limit() {
        for (code, limit) in [
            // Emits without end, each output kept: whichever of time and
            // memory runs out first on this machine.
            ("repeat(.)", "limit of"),
            ("def f: f; f", "time limit of 300 ms"),
            ("last(range(1e15))", "time limit of 300 ms"),
            ("def f: 1 + f; f", "depth limit"),
            ("def f: [f]; f", "depth limit"),
            ("[range(1e9)] | length", "memory limit of 16 MiB"),
            (
                "reduce range(1e9) as $i (\"\"; . + \"xxxxxxxxxx\")",
                "limit",
            ),
            (r#""x" * 10000000000"#, "memory limit of 16 MiB"),
            ("fromjson", "deeper than"),
        ] {
            let input = json!("[".repeat(MAX_DEPTH + 1));
            let started = Instant::now();
            let e = run(code, input).unwrap_err();
            assert!(e.contains(limit), "{code}: {e}");
            assert!(started.elapsed() < Duration::from_secs(5), "{code}");
        }
        // The workers are still there for the next record.
        assert_eq!(run(". + 1", json!(1)).unwrap(), vec![json!(2)]);
    }

    #[test]
    fn deep_values_are_walked_and_dropped_within_the_stack() {
        // As deep as the memory budget allows: built, compared, printed, dropped.
        let e = run(
            "reduce range(1e8) as $i (null; [.]) | tojson | length",
            json!(null),
        )
        .unwrap_err();
        assert!(e.contains("limit"), "{e}");
        let out = run(
            "reduce range(100000) as $i (null; [.]) | (. == .) , (tojson | length)",
            json!(null),
        )
        .unwrap();
        assert_eq!(out, vec![json!(true), json!(200004)]);
    }

    #[test]
    fn oversized_and_overnested_filters_are_refused_before_parsing() {
        let long = format!(". {}", "| . ".repeat(MAX_FILTER_BYTES / 4));
        assert!(JqFilter::compile(&long).unwrap_err().contains("KiB"));
        let nested = format!("{}.{}", "(".repeat(5000), ")".repeat(5000));
        assert!(JqFilter::compile(&nested).unwrap_err().contains("nests"));
        // Nesting that brackets do not show still parses within the stack.
        for code in [
            format!("{}1", "-".repeat(20_000)),
            format!("{}.", "not | ".repeat(10_000)),
            format!(
                "{}. {}",
                "if . then ".repeat(6000),
                "else . end ".repeat(6000)
            ),
            format!("{}.", "try ".repeat(15_000)),
            format!("{}.", "def f: ".repeat(8000)),
            format!("{}1", "1 + ".repeat(15_000)),
            format!("\"{}\"", "\\(\"".repeat(10_000)),
        ] {
            let _ = JqFilter::compile(&code);
        }
    }
}
