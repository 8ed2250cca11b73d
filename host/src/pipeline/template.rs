//! Request templates (paths, query parameters, bodies) in minijinja syntax,
//! compiled when the pipeline loads and rendered once per record.
//!
//! Undefined names are errors, not empty strings: `{{ record.ITNOO }}` must
//! fail the record instead of sending a blank item number to M3.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Every template of one pipeline, by name (`sinks[0].fields.ITNO`).
pub struct Templates {
    env: Environment<'static>,
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
        Templates {
            env,
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
        self.env
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
        let template = self.env.get_template(name).map_err(describe)?;
        template
            .render(minijinja::context! {
                record => minijinja::Value::from(minijinja::value::Serde(record)),
                vars => minijinja::Value::from(minijinja::value::Serde(ctx.vars)),
                state => minijinja::Value::from(minijinja::value::Serde(ctx.state)),
            })
            .map_err(|e| format!("template {name}: {}", describe(e)))
    }
}

fn describe(error: minijinja::Error) -> String {
    let mut text = error
        .detail()
        .map_or_else(|| error.kind().to_string(), str::to_owned);
    if error.kind() == minijinja::ErrorKind::UndefinedError && error.detail().is_none() {
        text = "a name in the template is undefined (check the field names of the record)".into();
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
}
