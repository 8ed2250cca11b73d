//! `${env.NAME}`, `${var.NAME}`, `${state.NAME}` and `${env.NAME:-default}`
//! in pipeline strings.
//!
//! Interpolation runs on parsed values, never on the TOML text, so a variable
//! cannot inject TOML and error positions stay true to the file.

use std::collections::BTreeMap;

/// Where variables come from: the process environment, with overrides
/// (from `--var`, or set by `ionflow demo`) taking precedence.
/// Pipeline variables (`[vars]`) and state values (watermarks) are added
/// once the pipeline file and its state file are read.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    overrides: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
    state: BTreeMap<String, String>,
}

impl Variables {
    pub fn new(overrides: BTreeMap<String, String>) -> Self {
        Variables {
            overrides,
            ..Variables::default()
        }
    }

    /// Expands `[vars]` in order of name; a variable may use the environment
    /// but not another variable, so there is no order to get wrong. A
    /// `--var NAME=VALUE` of the same name wins, taken as it is.
    pub fn with_pipeline_vars(
        mut self,
        raw: &BTreeMap<String, String>,
    ) -> Result<Self, (String, String)> {
        let mut vars = BTreeMap::new();
        for (name, value) in raw {
            let value = match self.overrides.get(name) {
                Some(given) => given.clone(),
                None => self.expand(value).map_err(|e| (name.clone(), e))?,
            };
            vars.insert(name.clone(), value);
        }
        self.vars = vars;
        Ok(self)
    }

    pub fn with_state(mut self, state: BTreeMap<String, String>) -> Self {
        self.state = state;
        self
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    pub fn state(&self) -> &BTreeMap<String, String> {
        &self.state
    }

    /// The `--var` values given on the command line.
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// `${env.NAME}`'s value: a `--var` of that name, else the environment.
    pub fn env(&self, name: &str) -> Option<String> {
        self.get(name)
    }

    fn get(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// Expands every `${env.NAME}` in `text`. `$$` is a literal `$`.
    pub fn expand(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                continue;
            };
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`; write ${{env.NAME}}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let (scope, name) = name.split_once('.').ok_or_else(|| {
                format!(
                    "`${{{expr}}}` is not a variable; write ${{env.NAME}}, ${{env.NAME:-default}}, \
                     ${{var.NAME}} or ${{state.NAME}}"
                )
            })?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{expr}}}`: variable names use letters, digits and _"
                ));
            }
            let value = match scope {
                "env" => self.get(name),
                "var" => self.vars.get(name).cloned(),
                "state" => self.state.get(name).cloned(),
                _ => {
                    return Err(format!(
                        "`${{{expr}}}` is not a variable; write ${{env.NAME}}, ${{var.NAME}} or ${{state.NAME}}"
                    ));
                }
            };
            if value.is_none() && default.is_none() && scope != "env" {
                let table = if scope == "var" {
                    "[vars]"
                } else {
                    "[state.watermarks]"
                };
                return Err(format!(
                    "`${{{expr}}}` is not defined; add {name} to {table}"
                ));
            }
            match (value, default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set; set it or give a default: ${{env.{name}:-value}}"
                    ));
                }
            }
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::new([("IONFLOW_TEST_A".to_string(), "alpha".to_string())].into())
    }

    #[test]
    fn expands_defaults_and_escapes() {
        let v = vars();
        assert_eq!(v.expand("x/${env.IONFLOW_TEST_A}/y").unwrap(), "x/alpha/y");
        assert_eq!(
            v.expand("${env.IONFLOW_UNSET_Q:-dev}.ionapi").unwrap(),
            "dev.ionapi"
        );
        assert_eq!(v.expand("cost $$5 and $x").unwrap(), "cost $5 and $x");
    }

    #[test]
    fn a_var_override_sets_pipeline_vars_too() {
        let raw = BTreeMap::from([
            (
                "company".to_string(),
                "${env.IONFLOW_UNSET_Q:-100}".to_string(),
            ),
            ("other".to_string(), "x".to_string()),
        ]);
        let v = Variables::new([("company".to_string(), "555".to_string())].into())
            .with_pipeline_vars(&raw)
            .unwrap();
        assert_eq!(v.vars()["company"], "555");
        assert_eq!(v.vars()["other"], "x");
        assert_eq!(v.expand("${var.company}").unwrap(), "555");
    }

    #[test]
    fn errors_say_how_to_fix() {
        let v = vars();
        assert!(
            v.expand("${env.IONFLOW_UNSET_Q}")
                .unwrap_err()
                .contains("is not set")
        );
        assert!(v.expand("${HOME}").unwrap_err().contains("${env.NAME}"));
        assert!(v.expand("${env.A").unwrap_err().contains("unclosed"));
    }
}
