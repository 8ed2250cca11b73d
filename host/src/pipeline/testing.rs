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
                    match self.transform(record) {
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
                        "output differs\n      expected: {}\n      actual:   {}",
                        compact(expected),
                        compact(&outputs)
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
                                if let Some(diff) = subset_diff(expected, &actual) {
                                    failures.push(format!(
                                        "sinks[{}] for output[{i}]: {diff}\n      rendered: {}",
                                        expectation.sink, actual
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

fn compact(values: &[Value]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

/// Every key of `expected` must be in `actual` with the same value; objects
/// are compared the same way one level down, so a test names only what it cares about.
fn subset_diff(expected: &Value, actual: &Value) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    None => return Some(format!("`{k}` is missing")),
                    Some(av) => {
                        if let Some(d) = subset_diff(ev, av) {
                            return Some(format!("{k}: {d}"));
                        }
                    }
                }
            }
            None
        }
        _ if expected == actual => None,
        _ => Some(format!("expected {expected}, got {actual}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_comparison() {
        let actual = json!({"method": "GET", "query": {"ITNO": "A", "ITDS": "x"}});
        assert!(subset_diff(&json!({"query": {"ITNO": "A"}}), &actual).is_none());
        assert!(
            subset_diff(&json!({"query": {"ITNO": "B"}}), &actual)
                .unwrap()
                .contains("ITNO")
        );
        assert!(
            subset_diff(&json!({"body": 1}), &actual)
                .unwrap()
                .contains("missing")
        );
    }
}
