//! Pipeline problems and where they are in the file: every error names
//! `file:line:column`, the key and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parses one table (`[source]`, `[[sinks]]`, `[[transforms]]`, by its
/// header) as the struct of its `kind`, returning the error that parse
/// gives; `None` when the header or kind is unknown or the table parses.
pub type Probe = fn(header: &str, kind: &str, table: &str) -> Option<toml::de::Error>;

/// A pipeline error that points into its file: `file:line:column: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.file, .position, .message))]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

fn render(file: &Path, position: &Option<(usize, usize)>, message: &str) -> String {
    match position {
        Some((line, col)) => format!("{}:{line}:{col}: {message}", file.display()),
        None => format!("{}: {message}", file.display()),
    }
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            position: None,
            message: message.into(),
        }
    }

    pub fn at(file: &Path, position: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            position,
            message: message.into(),
        }
    }
}

/// A command-line value that cannot be used (an address, a folder, a
/// number out of range): a configuration mistake like a bad file, exit 2.
/// The message names the option and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Every problem found in one pipeline file, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Collects problems with their places in the file.
pub struct Problems<'a> {
    file: &'a Path,
    text: &'a str,
    pub found: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Problems {
            file,
            text,
            found: Vec::new(),
        }
    }

    /// A problem with `key` inside `table` (`source`, `sinks[1]`, `connections.m3`).
    pub fn add(&mut self, table: &str, key: Option<&str>, message: impl Into<String>) {
        let position = locate(self.text, table, key);
        let name = match key {
            Some(key) if table.is_empty() => key.to_owned(),
            Some(key) => format!("{table}.{key}"),
            None => table.to_owned(),
        };
        self.found.push(ConfigError::at(
            self.file,
            position,
            format!("{name}: {}", message.into()),
        ));
    }

    /// A problem at a byte offset of the file (inside a value).
    pub fn add_at(&mut self, offset: usize, message: impl Into<String>) {
        let position = Some(line_col(self.text, offset));
        self.found
            .push(ConfigError::at(self.file, position, message.into()));
    }

    pub fn file(&self) -> &'a Path {
        self.file
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found
            .sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        Err(ConfigErrors(self.found))
    }
}

/// Parses TOML into `T`; `file` names it in errors. Positions inside tables
/// tagged with `kind` come from `probe`, which parses a table as its kind.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
    probe: Probe,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_owned();
        let start = e.span().map(|span| span.start);
        let message = match message.strip_prefix("unknown field `") {
            Some(_) => format!("{message}; remove it or fix its spelling"),
            None => message,
        };
        let offset = start.map(|start| {
            unknown_key_offset(text, start, &message)
                .or_else(|| tagged_key_offset(text, start, probe))
                .unwrap_or(start)
        });
        // A position at a value gets the key's name in front.
        let key = offset.and_then(|at| {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let (key, _) = text[line_start..at].split_once('=')?;
            Some(key.trim().to_owned()).filter(|k| !k.is_empty())
        });
        let message = match key {
            Some(key) if !message.contains(&format!("`{key}`")) => format!("{key}: {message}"),
            _ => message,
        };
        ConfigError {
            file: file.to_owned(),
            position: offset.map(|offset| line_col(text, offset)),
            message,
        }
    })
}

/// Finds `key` inside `table` by reading the file's headers: good enough for
/// pointing a person at a line, and it never fails, only gives up.
fn locate(text: &str, table: &str, key: Option<&str>) -> Option<(usize, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut current = String::new();
    let mut header_at = None;
    let mut offset = 0;
    let wanted_table = table.to_owned();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            current = format!("{name}[{n}]");
            *n += 1;
            if current == wanted_table {
                header_at = Some(offset + indent);
            }
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_owned();
            if current == wanted_table {
                header_at = Some(offset + indent);
            }
        } else if current == wanted_table
            && let Some(key) = key
            && let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(line_col(text, offset + indent));
        } else if wanted_table.is_empty()
            && current.is_empty()
            && let Some(key) = key
            && trimmed
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(line_col(text, offset + indent));
        }
        offset += line.len();
    }
    header_at.map(|at| line_col(text, at))
}

/// Inside tagged tables (`kind = ...`) serde buffers the table and loses
/// positions, so a wrong type is reported at the table's header. Parsing the
/// table again as its kind's own struct, on a copy of the file in which
/// everything else is blanked out (so offsets stay true), finds the key.
fn tagged_key_offset(text: &str, table_start: usize, probe: Probe) -> Option<usize> {
    let header_start = text[..table_start].rfind('\n').map_or(0, |i| i + 1);
    let header = text[header_start..].lines().next()?.trim();
    let body_start = header_start + text[header_start..].find('\n')? + 1;
    let body_end = text[body_start..]
        .match_indices('\n')
        .map(|(i, _)| body_start + i + 1)
        .find(|&i| text[i..].trim_start().starts_with('['))
        .unwrap_or(text.len());
    let body = &text[body_start..body_end];
    let table: toml::Table = toml::from_str(body).ok()?;
    let kind = table.get("kind")?.as_str()?;
    // The copy keeps only the table's lines, minus `kind`, at their offsets.
    let mut copy = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').scan(0, |at, l| {
        let start = *at;
        *at += l.len();
        Some((start, l))
    }) {
        let keep = i >= body_start && i < body_end && !line.trim_start().starts_with("kind");
        if keep {
            copy.push_str(line);
        } else {
            copy.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        }
    }
    let error = probe(header, kind, &copy)?;
    error
        .span()
        .map(|span| span.start)
        .filter(|&at| at >= body_start)
}

/// Inside tagged tables (`kind = ...`) the TOML parser can only point at the
/// table; find the offending key itself so the position names its line.
fn unknown_key_offset(text: &str, table_start: usize, message: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    let mut offset = table_start;
    for line in text.get(table_start..)?.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// Where a top-level string value starts, for errors inside the value.
pub fn value_position(text: &str, key: &str, offset_in_value: usize) -> Option<(usize, usize)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            let value = value.trim_start();
            let quote = usize::from(value.starts_with(['"', '\'']));
            let start = offset + (line.len() - value.len()) + quote + offset_in_value;
            return Some(line_col(text, start));
        }
        offset += line.len();
    }
    None
}

pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
