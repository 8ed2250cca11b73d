//! Checks that need the whole file and the places of values in it: a
//! `${...}` written where nothing expands it, and names a template uses
//! that nothing defines. Each problem is placed at its own column.

use crate::config::Problems;
use crate::config::spans::{self, Spans};

use super::PipelineConfig;
use super::template::{NameKind, UndefinedName};

/// Keys of every source and sink that are names, not text: `${...}` in them
/// is never expanded.
const LITERAL_IN_EVERY_KIND: &[&str] = &["connection", "kind"];

/// Where a value is read as written, and what to write instead.
fn literal_place(path: &str, config: &PipelineConfig) -> Option<&'static str> {
    const JQ: &str = "jq filters see the pipeline's values as jq variables";
    if path.starts_with("transforms[") && path.ends_with(".filter") || path == "source.records_jq" {
        return Some(JQ);
    }
    let top = path.split(['.', '[']).next().unwrap_or(path);
    if matches!(
        top,
        "name" | "description" | "schedule" | "timezone" | "state"
    ) {
        return Some("this value is used as written");
    }
    let (table, key) = if let Some(key) = path.strip_prefix("source.") {
        (None, key)
    } else if let Some(rest) = path.strip_prefix("sinks[") {
        let (index, key) = rest.split_once("].")?;
        (Some(index.parse::<usize>().ok()?), key)
    } else {
        return None;
    };
    let key = key.split(['.', '[']).next().unwrap_or(key);
    let literal = match table {
        None => config.source.spec().literal_keys(),
        Some(i) => config.sinks.get(i)?.spec().literal_keys(),
    };
    (LITERAL_IN_EVERY_KIND.contains(&key) || literal.contains(&key))
        .then_some("this key is a name and is used as written")
}

/// The byte ranges of the values where `${...}` stays literal text, so
/// that the check of `${var.X}`/`${state.X}` names does not report them twice.
pub fn literal_ranges(spans: &Spans, config: &PipelineConfig) -> Vec<std::ops::Range<usize>> {
    spans
        .strings()
        .filter(|(path, _, value)| value.contains("${") && literal_place(path, config).is_some())
        .map(|(_, located, _)| located.span.clone())
        .collect()
}

/// `${...}` in a jq filter or a name stays literal text: refused with the
/// spelling that works there.
pub fn check_literal_interpolation(
    text: &str,
    spans: &Spans,
    config: &PipelineConfig,
    problems: &mut Problems<'_>,
) {
    for (path, located, value) in spans.strings() {
        if !value.contains("${") {
            continue;
        }
        let Some(why) = literal_place(path, config) else {
            continue;
        };
        let raw = text.get(located.span.clone()).unwrap_or_default();
        let mut from = 0;
        while let Some(at) = raw[from..].find("${") {
            let at = from + at;
            from = at + 2;
            // `$${` is an escaped dollar, not a variable.
            if raw[..at].ends_with('$') {
                continue;
            }
            let expression: String = raw[at..].chars().take_while(|c| *c != '}').collect();
            let written = format!("{expression}}}");
            let jq = expression
                .trim_start_matches("${")
                .split(":-")
                .next()
                .unwrap_or_default()
                .replacen("var.", "vars.", 1);
            let fix = if why.starts_with("jq") {
                format!("; write ${jq}")
            } else {
                String::new()
            };
            problems.add_at(
                located.span.start + at,
                format!("{path}: `{written}` is not expanded here: {why}{fix}"),
            );
        }
    }
}

/// A name a template uses that nothing defines, at its place in the file.
pub fn report_undefined(
    text: &str,
    spans: &Spans,
    undefined: &UndefinedName,
    config: &PipelineConfig,
    problems: &mut Problems<'_>,
) {
    let message = match undefined.kind {
        NameKind::Variable => match undefined.name.split_once('.') {
            Some(("vars", name)) => format!(
                "`{}` is not defined; [vars] has {}",
                undefined.name,
                names(config.vars.keys()).unwrap_or_else(|| format!("no {name}"))
            ),
            Some(("state", _)) => format!(
                "`{}` is not defined; declare it in [state.watermarks.NAME]",
                undefined.name
            ),
            _ => format!(
                "`{}` is not defined; a template sees record, vars and state",
                undefined.name
            ),
        },
        NameKind::Filter => format!(
            "the filter `{}` does not exist; see https://docs.rs/minijinja/latest/minijinja/filters/",
            undefined.name
        ),
        NameKind::Test => format!("the test `{}` does not exist", undefined.name),
    };
    let message = format!("{}: {message}", undefined.template);
    let word = undefined.name.rsplit('.').next().unwrap_or(&undefined.name);
    let place = spans.get(&undefined.template).and_then(|located| {
        spans::find_word_in(text, &located.span, word).or(Some(located.span.start))
    });
    match place {
        Some(offset) => problems.add_at(offset, message),
        None => {
            let (table, key) = undefined
                .template
                .split_once('.')
                .unwrap_or((&undefined.template, ""));
            let key = key.split('.').next().filter(|k| !k.is_empty());
            problems.add(table, key, message);
        }
    }
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> Option<String> {
    let keys: Vec<&str> = keys.map(String::as_str).collect();
    (!keys.is_empty()).then(|| keys.join(", "))
}
