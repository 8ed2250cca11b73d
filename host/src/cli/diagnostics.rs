//! How `validate` (and `test` and `run`, when a file does not load) show
//! pipeline problems: each with the line of the file it is on and a caret
//! under the place, every problem of every file at once, in colour on a
//! terminal, or as JSON for editors and CI.
//!
//! codespan-reporting draws the snippets: it takes several files and byte
//! ranges and renders them like rustc does, with few dependencies
//! (termcolor, unicode-width), where miette brings a larger tree and its own
//! error trait, and ariadne has no multi-file database of its own.

use std::io::{IsTerminal as _, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic, Label, Severity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use codespan_reporting::term::{self, Chars};
use serde_json::{Value, json};

use crate::pipeline::ConfigError;

/// One problem, warning or note.
#[derive(Debug, Clone)]
pub struct Item {
    pub file: PathBuf,
    pub severity: Severity,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// The problems of every file a command read.
#[derive(Default)]
pub struct Report {
    files: SimpleFiles<String, String>,
    ids: Vec<(PathBuf, usize)>,
    pub items: Vec<Item>,
}

impl Report {
    /// Keeps `text` so that problems in `path` show their line.
    pub fn add_file(&mut self, path: &Path, text: String) {
        let id = self.files.add(path.display().to_string(), text);
        self.ids.push((path.to_owned(), id));
    }

    pub fn config_error(&mut self, e: &ConfigError) {
        self.push(&e.file, Severity::Error, e.position, &e.message);
    }

    pub fn error(&mut self, file: &Path, message: impl Into<String>) {
        self.push(file, Severity::Error, None, &message.into());
    }

    pub fn warning(&mut self, file: &Path, message: impl Into<String>) {
        self.push(file, Severity::Warning, None, &message.into());
    }

    pub fn note(&mut self, file: &Path, message: impl Into<String>) {
        self.push(file, Severity::Note, None, &message.into());
    }

    fn push(
        &mut self,
        file: &Path,
        severity: Severity,
        position: Option<(usize, usize)>,
        message: &str,
    ) {
        self.items.push(Item {
            file: file.to_owned(),
            severity,
            position,
            message: message.to_owned(),
        });
    }

    pub fn errors_in(&self, file: &Path) -> usize {
        self.items
            .iter()
            .filter(|i| i.file == file && i.severity == Severity::Error)
            .count()
    }

    pub fn errors(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .count()
    }

    /// Every item on stderr, each with its line and a caret when it has a
    /// place; colour when stderr is a terminal (and NO_COLOR is unset).
    pub fn emit(&self) {
        let color = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            ColorChoice::Auto
        } else {
            ColorChoice::Never
        };
        let writer = StandardStream::stderr(color);
        let mut config = term::Config::default();
        if color == ColorChoice::Never {
            // Plain ASCII where the output is read by another program.
            config.chars = Chars::ascii();
        }
        let mut out = writer.lock();
        for item in &self.items {
            let diagnostic = self.diagnostic(item);
            if term::emit(&mut out, &config, &self.files, &diagnostic).is_err() {
                // A closed stderr has nowhere else to go.
                return;
            }
        }
        let _ = out.flush();
    }

    /// The diagnostic of one item: its first line is `file:line:column:
    /// message`, the form editors' problem matchers read, then the snippet.
    fn diagnostic(&self, item: &Item) -> Diagnostic<usize> {
        let place = match item.position {
            Some((line, col)) => format!("{}:{line}:{col}", item.file.display()),
            None => item.file.display().to_string(),
        };
        let mut diagnostic =
            Diagnostic::new(item.severity).with_message(format!("{place}: {}", item.message));
        let id = self
            .ids
            .iter()
            .find(|(p, _)| *p == item.file)
            .map(|(_, id)| *id);
        if let (Some(id), Some(position)) = (id, item.position)
            && let Ok(file) = self.files.get(id)
            && let Some(span) = span_at(file.source(), position)
        {
            diagnostic = diagnostic.with_labels(vec![Label::primary(id, span)]);
        }
        diagnostic
    }

    /// `{"files": [{"file", "ok", "problems": [{severity, line, column, message}]}]}`.
    pub fn to_json(&self, files: &[PathBuf]) -> Value {
        let files: Vec<Value> = files
            .iter()
            .map(|file| {
                let problems: Vec<Value> = self
                    .items
                    .iter()
                    .filter(|i| i.file == *file)
                    .map(|i| {
                        json!({
                            "severity": match i.severity {
                                Severity::Error | Severity::Bug => "error",
                                Severity::Warning => "warning",
                                _ => "note",
                            },
                            "line": i.position.map(|p| p.0),
                            "column": i.position.map(|p| p.1),
                            "message": i.message,
                        })
                    })
                    .collect();
                json!({
                    "file": file.display().to_string(),
                    "ok": self.errors_in(file) == 0,
                    "problems": problems,
                })
            })
            .collect();
        json!({ "ok": self.errors() == 0, "files": files })
    }
}

/// The byte range a caret goes under: from the position to the end of the
/// word, `${...}` or quoted string that starts there (one character else).
fn span_at(text: &str, (line, col): (usize, usize)) -> Option<Range<usize>> {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let start = line_start
        + line_text
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i);
    let rest = &text[start..];
    let len = if rest.starts_with("${") {
        rest.find('}').map_or(2, |i| i + 1)
    } else if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        rest[1..]
            .find(quote)
            .map_or(1, |i| i + 2)
            .min(rest.find('\n').unwrap_or(rest.len()))
    } else {
        let word = rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']')))
            .map_or(rest.len(), |(i, _)| i);
        word.max(rest.chars().next().map_or(0, char::len_utf8))
    };
    Some(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carets_cover_the_word_or_the_variable() {
        let text = "a = 1\nkey_feild = \"x\"\nfilter = 'select(.a > \"${state.since}\")'\n";
        let span = span_at(text, (2, 1)).unwrap();
        assert_eq!(&text[span], "key_feild");
        let at = text.find("${").unwrap();
        let (line, col) = crate::config::line_col(text, at);
        assert_eq!(&text[span_at(text, (line, col)).unwrap()], "${state.since}");
        assert_eq!(&text[span_at(text, (2, 13)).unwrap()], "\"x\"");
        assert!(span_at(text, (9, 1)).is_none());
    }

    #[test]
    fn the_first_line_keeps_file_line_column() {
        let mut report = Report::default();
        let file = PathBuf::from("p.toml");
        report.add_file(&file, "name = 1\n".into());
        report.config_error(&ConfigError::at(&file, Some((1, 8)), "name: wrong"));
        report.note(&file, "a note");
        let d = report.diagnostic(&report.items[0]);
        assert_eq!(d.message, "p.toml:1:8: name: wrong");
        assert_eq!(d.labels[0].range, 7..8);
        assert_eq!(report.errors(), 1);
        let json = report.to_json(&[file]);
        assert_eq!(json["files"][0]["problems"][1]["severity"], "note");
        assert_eq!(json["ok"], false);
    }
}
