//! Request templates (paths, query parameters, bodies) in minijinja syntax,
//! compiled when the pipeline loads and rendered once per record.
//!
//! Undefined names are errors, not empty strings: `{{ record.ITNOO }}` must
//! fail the record instead of sending a blank item number to M3.
//!
//! A template is code its author wrote, so it renders like a jq filter, on
//! the sandbox's workers (`crate::sandbox`): within [`FUEL`] steps of
//! minijinja's machine (nested loops over `range(100000)` stop there),
//! [`MEMORY_MIB`] of memory (a string doubled in a loop stops there) and
//! [`TIME`]; past a limit, the record fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::sandbox::{self, alloc::Budget};

/// Steps of minijinja's machine one render may take.
pub const FUEL: u64 = 1_000_000;
/// Memory one render may allocate.
pub const MEMORY_MIB: usize = 64;
/// Time one render may take.
pub const TIME: Duration = Duration::from_secs(2);

/// Every template of one pipeline, by name (`sinks[0].fields.ITNO`).
pub struct Templates {
    env: Arc<Environment<'static>>,
    /// Kept so that `${env.NAME}` in a template can be expanded when a run starts.
    sources: Vec<(String, String)>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates render URLs and JSON, never HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_fuel(Some(FUEL));
        Templates {
            env: Arc::new(env),
            sources: Vec::new(),
        }
    }
}

/// What a template sees: the record, the pipeline's `[vars]` and its state.
pub struct RenderContext<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub state: &'a BTreeMap<String, String>,
}

impl Templates {
    /// Compiles `source` under `name`; the error names line and column.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.sources.push((name.to_owned(), source.to_owned()));
        // Templates are added while the pipeline loads, before any render
        // holds the environment.
        Arc::make_mut(&mut self.env)
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(describe)
    }

    /// The same templates with `${env.NAME}`, `${var.NAME}` and
    /// `${state.NAME}` in their sources replaced, for one run.
    pub fn expanded(&self, vars: &crate::config::Variables) -> Result<Templates, String> {
        let mut out = Templates::default();
        for (name, source) in &self.sources {
            let source = vars.expand(source).map_err(|e| format!("{name}: {e}"))?;
            out.add(name, &source).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(out)
    }

    pub fn render(
        &self,
        name: &str,
        record: &Value,
        ctx: &RenderContext<'_>,
    ) -> Result<String, String> {
        let env = self.env.clone();
        let name = name.to_owned();
        let context = minijinja::context! {
            record => minijinja::Value::from(minijinja::value::Serde(record)),
            vars => minijinja::Value::from(minijinja::value::Serde(ctx.vars)),
            state => minijinja::Value::from(minijinja::value::Serde(ctx.state)),
        };
        let label = format!("template {name}");
        sandbox::run_one(TIME, move || {
            let _budget = Budget::start(MEMORY_MIB << 20);
            let template = env.get_template(&name).map_err(describe)?;
            template
                .render(context)
                .map_err(|e| format!("template {name}: {}", describe(e)))
        })
        .unwrap_or_else(|failure| Err(failure.describe(&label, TIME, MEMORY_MIB)))
    }
}

/// What kind of name a template uses without a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Variable,
    Filter,
    Test,
}

/// A name a template uses that nothing defines, found when the pipeline
/// loads instead of failing every record at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedName {
    /// The template, e.g. `sinks[0].fields.ITNO`.
    pub template: String,
    /// `recod`, `vars.compny`, or the filter's or test's name.
    pub name: String,
    pub kind: NameKind,
}

impl Templates {
    /// Every undefined name in every template: a top-level variable other
    /// than `record`, `vars` and `state`; `vars.X` or `state.X` that the
    /// pipeline does not declare; a filter or test that does not exist.
    /// `record.X` cannot be checked: records are only known at run time.
    pub fn undefined_names(
        &self,
        vars: &BTreeMap<String, String>,
        state: &[String],
    ) -> Vec<UndefinedName> {
        let globals: Vec<&str> = self.env.globals().map(|(name, _)| name).collect();
        let mut found = Vec::new();
        for (name, source) in &self.sources {
            let Ok(template) = self.env.get_template(name) else {
                continue;
            };
            let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
            used.sort();
            for path in used {
                let (top, rest) = match path.split_once('.') {
                    Some((top, rest)) => (top, Some(rest)),
                    None => (path.as_str(), None),
                };
                let member = rest.map(|r| r.split('.').next().unwrap_or(r));
                let undefined = match (top, member) {
                    ("record", _) | ("vars", None) | ("state", None) => None,
                    ("vars", Some(m)) if vars.contains_key(m) => None,
                    ("state", Some(m)) if state.iter().any(|s| s == m) => None,
                    ("vars", Some(m)) | ("state", Some(m)) => Some(format!("{top}.{m}")),
                    (top, _) if globals.contains(&top) => None,
                    (top, _) => Some(top.to_owned()),
                };
                if let Some(undefined) = undefined
                    && !found
                        .iter()
                        .any(|u: &UndefinedName| u.template == *name && u.name == undefined)
                {
                    found.push(UndefinedName {
                        template: name.clone(),
                        name: undefined,
                        kind: NameKind::Variable,
                    });
                }
            }
            for (used, kind) in filters_and_tests(source) {
                let probe = match kind {
                    NameKind::Filter => format!("x | {used}"),
                    _ => format!("x is {used}"),
                };
                let unknown = match self.env.compile_expression(&probe) {
                    Ok(expression) => expression
                        .eval(minijinja::context! { x => "" })
                        .err()
                        .is_some_and(|e| {
                            matches!(
                                e.kind(),
                                minijinja::ErrorKind::UnknownFilter
                                    | minijinja::ErrorKind::UnknownTest
                            )
                        }),
                    Err(_) => false,
                };
                if unknown {
                    found.push(UndefinedName {
                        template: name.clone(),
                        name: used,
                        kind,
                    });
                }
            }
        }
        found
    }
}

/// The filters (`| name`) and tests (`is [not] name`) a template applies,
/// read from its `{{ }}` and `{% %}` blocks with string literals skipped.
fn filters_and_tests(source: &str) -> Vec<(String, NameKind)> {
    let mut out: Vec<(String, NameKind)> = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body_start = &after[1..];
        let end = body_start.find(close).unwrap_or(body_start.len());
        let body = &body_start[..end];
        rest = &body_start[end..];
        // The block without its string literals, which may hold `|` or `is`.
        let mut code = String::with_capacity(body.len());
        let mut quote = None;
        let mut escaped = false;
        for c in body.chars() {
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        quote = None;
                    }
                    code.push(' ');
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    code.push(' ');
                }
                None => code.push(c),
            }
        }
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for (at, _) in code.match_indices('|') {
            let name = ident(&code[at + 1..]);
            if !name.is_empty() && !out.iter().any(|(n, _)| *n == name) {
                out.push((name, NameKind::Filter));
            }
        }
        let words: Vec<&str> = code
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for (i, word) in words.iter().enumerate() {
            if *word != "is" {
                continue;
            }
            let next = match words.get(i + 1) {
                Some(&"not") => words.get(i + 2),
                other => other,
            };
            if let Some(test) = next
                && !out.iter().any(|(n, _)| n == test)
            {
                out.push(((*test).to_owned(), NameKind::Test));
            }
        }
    }
    out
}

fn describe(error: minijinja::Error) -> String {
    let mut text = error
        .detail()
        .map_or_else(|| error.kind().to_string(), str::to_owned);
    if error.kind() == minijinja::ErrorKind::UndefinedError && error.detail().is_none() {
        text = "a name in the template is undefined (check the field names of the record)".into();
    }
    if error.kind() == minijinja::ErrorKind::OutOfFuel {
        text = format!(
            "the template ran past its limit of {FUEL} steps for this record; simplify its loops"
        );
    }
    match error.line() {
        Some(line) => format!("{text} (template line {line})"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        (
            BTreeMap::from([("cono".to_string(), "100".to_string())]),
            BTreeMap::new(),
        )
    }

    #[test]
    fn renders_records_vars_and_json() {
        let mut t = Templates::default();
        t.add("a", "{{ record.ITNO }}/{{ vars.cono }}").unwrap();
        t.add("b", "{{ record | tojson }}").unwrap();
        let (vars, state) = ctx();
        let c = RenderContext {
            vars: &vars,
            state: &state,
        };
        let r = json!({"ITNO": "A<1>", "n": 2});
        assert_eq!(t.render("a", &r, &c).unwrap(), "A<1>/100");
        let body: Value = serde_json::from_str(&t.render("b", &r, &c).unwrap()).unwrap();
        assert_eq!(body, r);
    }

    #[test]
    fn undefined_names_are_found_before_any_record() {
        let mut t = Templates::default();
        t.add("a", "{{ recod.item }}/{{ vars.compny }}/{{ vars.cono }}")
            .unwrap();
        t.add(
            "b",
            "{{ record.x | uper }}{{ record.y | upper }}{{ 'a|b' }}",
        )
        .unwrap();
        t.add(
            "c",
            "{% if record.x is nosuchtest %}{{ state.since }}{{ state.nope }}{% endif %}",
        )
        .unwrap();
        t.add(
            "d",
            "{{ record | tojson }}{{ range(3) | list }}{% for i in record.l %}{{ i }}{% endfor %}",
        )
        .unwrap();
        let (vars, _) = ctx();
        let found = t.undefined_names(&vars, &["since".to_string()]);
        let names: Vec<(&str, &str, NameKind)> = found
            .iter()
            .map(|u| (u.template.as_str(), u.name.as_str(), u.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("a", "recod", NameKind::Variable),
                ("a", "vars.compny", NameKind::Variable),
                ("b", "uper", NameKind::Filter),
                ("c", "state.nope", NameKind::Variable),
                ("c", "nosuchtest", NameKind::Test),
            ]
        );
    }

    #[test]
    fn undefined_names_and_bad_syntax_are_errors() {
        let mut t = Templates::default();
        assert!(
            t.add("bad", "{{ record.ITNO ")
                .unwrap_err()
                .contains("line 1")
        );
        t.add("u", "{{ record.ITNOO }}").unwrap();
        let (vars, state) = ctx();
        let c = RenderContext {
            vars: &vars,
            state: &state,
        };
        let e = t.render("u", &json!({"ITNO": "A"}), &c).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
    }

    #[test]
    fn runaway_templates_stop_at_a_named_limit() {
        let mut t = Templates::default();
        t.add(
            "loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        t.add("big", "{{ 'x' * 100000000 }}").unwrap();
        t.add(
            "recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        )
        .unwrap();
        t.add("fine", "{{ record.ITNO }}").unwrap();
        let (vars, state) = ctx();
        let c = RenderContext {
            vars: &vars,
            state: &state,
        };
        let r = json!({"ITNO": "A1"});
        let started = std::time::Instant::now();
        let e = t.render("loops", &r, &c).unwrap_err();
        assert!(e.contains("limit of 1000000 steps"), "{e}");
        // minijinja charges fuel by the size of what it builds, so a big
        // string stops at the step limit or else at the memory limit.
        let e = t.render("big", &r, &c).unwrap_err();
        assert!(
            e.contains("limit of 1000000 steps") || e.contains("memory limit of 64 MiB"),
            "{e}"
        );
        let e = t.render("recursion", &r, &c).unwrap_err();
        assert!(e.contains("recursion"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(t.render("fine", &r, &c).unwrap(), "A1");
    }
}
