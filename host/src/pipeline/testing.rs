//! `ionflow test`: the `[[tests]]` of a pipeline, run offline. Each test
//! feeds its input records through the transforms, compares the output, and
//! renders what the chosen sinks would write or send for each output record.

use serde_json::Value;
use std::collections::BTreeMap;

use super::Pipeline;

/// The outcome of one test case.
#[derive(Debug)]
pub struct TestResult {
    pub name: String,
    /// Empty when the test passed.
    pub failures: Vec<String>,
}

impl Pipeline {
    pub fn run_tests(&self) -> Vec<TestResult> {
        self.config
            .tests
            .iter()
            .map(|test| {
                let mut failures = Vec::new();
                let mut state: BTreeMap<String, String> = self
                    .config
                    .state
                    .as_ref()
                    .map(|s| {
                        s.watermarks
                            .iter()
                            .map(|(k, w)| (k.clone(), w.initial.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                state.extend(test.state.clone());
                let vars = self.vars.clone().with_state(state);
                let globals = self.jq_globals(&vars, &super::RunOptions::default());
                let (scope, plans) = match self.prepare_sinks(&vars) {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        return TestResult {
                            name: test.name.clone(),
                            failures: vec![format!("{e:#}")],
                        };
                    }
                };
                let mut outputs = Vec::new();
                for (i, record) in test.input.iter().enumerate() {
                    match self.transform(record, &globals) {
                        Ok(out) => outputs.extend(out),
                        Err(f) => {
                            failures.push(format!("input[{i}] failed in {}: {}", f.stage, f.error))
                        }
                    }
                }
                if let Some(expected) = &test.output
                    && *expected != outputs
                {
                    failures.push(format!(
                        "output differs (- expected, + actual):\n{}",
                        records_diff(expected, &outputs).join("\n")
                    ));
                }
                for expectation in &test.requests {
                    let Some(plan) = plans.get(expectation.sink) else {
                        failures.push(format!("sinks[{}] does not exist", expectation.sink));
                        continue;
                    };
                    if expectation.expect.len() != outputs.len() {
                        failures.push(format!(
                            "sinks[{}]: {} expected requests for {} output records",
                            expectation.sink,
                            expectation.expect.len(),
                            outputs.len()
                        ));
                    }
                    for (i, (record, expected)) in
                        outputs.iter().zip(&expectation.expect).enumerate()
                    {
                        match plan.render(record, &scope) {
                            Ok(actual) => {
                                let mut lines = Vec::new();
                                subset_diff(expected, &actual, "", &mut lines);
                                if !lines.is_empty() {
                                    failures.push(format!(
                                        "sinks[{}] for output[{i}] differs (- expected, + actual):\n{}\n      rendered: {}",
                                        expectation.sink,
                                        lines.join("\n"),
                                        actual
                                    ));
                                }
                            }
                            Err(e) => failures.push(format!(
                                "sinks[{}] for output[{i}] does not render: {e}",
                                expectation.sink
                            )),
                        }
                    }
                }
                TestResult {
                    name: test.name.clone(),
                    failures,
                }
            })
            .collect()
    }
}

/// Expected and actual records field by field: `- ` lines as expected,
/// `+ ` lines as produced, only where they differ (the CLI colours them).
fn records_diff(expected: &[Value], actual: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    if expected.len() != actual.len() {
        lines.push(format!(
            "    {} records expected, {} produced",
            expected.len(),
            actual.len()
        ));
    }
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if e == a => {}
            (Some(Value::Object(e)), Some(Value::Object(a))) => {
                lines.push(format!("    output[{i}]:"));
                for (key, ev) in e {
                    match a.get(key) {
                        Some(av) if av == ev => {}
                        Some(av) => {
                            lines.push(format!("    - {key}: {ev}"));
                            lines.push(format!("    + {key}: {av}"));
                        }
                        None => lines.push(format!("    - {key}: {ev}")),
                    }
                }
                for (key, av) in a {
                    if !e.contains_key(key) {
                        lines.push(format!("    + {key}: {av}"));
                    }
                }
            }
            (Some(e), Some(a)) => {
                lines.push(format!("    output[{i}]:"));
                lines.push(format!("    - {e}"));
                lines.push(format!("    + {a}"));
            }
            (Some(e), None) => lines.push(format!("    - output[{i}]: {e}")),
            (None, Some(a)) => lines.push(format!("    + output[{i}]: {a}")),
            (None, None) => {}
        }
    }
    lines
}

/// Every key of `expected` must be in `actual` with the same value; objects
/// are compared the same way further down, so a test names only what it
/// cares about. Differences become `- `/`+ ` lines naming the field's path.
fn subset_diff(expected: &Value, actual: &Value, path: &str, lines: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    None => {
                        lines.push(format!("    - {here}: {ev}"));
                        lines.push(format!("    + {here}: (missing)"));
                    }
                    Some(av) => subset_diff(ev, av, &here, lines),
                }
            }
        }
        _ if expected == actual => {}
        _ => {
            let here = if path.is_empty() { "value" } else { path };
            lines.push(format!("    - {here}: {expected}"));
            lines.push(format!("    + {here}: {actual}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(expected: Value, actual: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        subset_diff(&expected, actual, "", &mut lines);
        lines
    }

    #[test]
    fn subset_comparison() {
        let actual = json!({"method": "GET", "query": {"ITNO": "A", "ITDS": "x"}});
        assert!(diff(json!({"query": {"ITNO": "A"}}), &actual).is_empty());
        assert_eq!(
            diff(json!({"query": {"ITNO": "B"}}), &actual),
            ["    - query.ITNO: \"B\"", "    + query.ITNO: \"A\""]
        );
        assert_eq!(
            diff(json!({"body": 1}), &actual),
            ["    - body: 1", "    + body: (missing)"]
        );
    }

    #[test]
    fn records_differ_field_by_field() {
        let lines = records_diff(
            &[json!({"a": 1, "b": 2}), json!({"c": 3})],
            &[json!({"a": 1, "b": 5, "x": 0})],
        );
        assert_eq!(
            lines,
            [
                "    2 records expected, 1 produced",
                "    output[0]:",
                "    - b: 2",
                "    + b: 5",
                "    + x: 0",
                "    - output[1]: {\"c\":3}",
            ]
        );
    }
}
