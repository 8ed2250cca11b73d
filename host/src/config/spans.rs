//! Where each value of a pipeline file is: every value's byte range in the
//! text, by its dotted path (`sinks[0].fields.ITNO`, the same names the
//! templates and problems use), from `toml`'s spanned parse. Problems found
//! inside a value (a `${...}` in a jq filter, an undefined name in a
//! template) are placed at their own column with it, not at the key.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One value of the file.
#[derive(Debug, Clone)]
pub struct Located {
    /// Byte range of the value in the text, quotes included for strings.
    pub span: Range<usize>,
    /// The decoded text, for string values.
    pub string: Option<String>,
}

/// Every value of a TOML text by dotted path; empty when the text does not parse.
#[derive(Debug, Default)]
pub struct Spans {
    values: BTreeMap<String, Located>,
}

impl Spans {
    pub fn parse(text: &str) -> Spans {
        let mut spans = Spans::default();
        if let Ok(root) = DeTable::parse(text) {
            spans.table("", root.get_ref());
        }
        spans
    }

    fn table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.value(path, value.get_ref(), value.span());
        }
    }

    fn value(&mut self, path: String, value: &DeValue<'_>, span: Range<usize>) {
        let string = match value {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Table(t) => {
                self.table(&path, t);
                None
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.value(format!("{path}[{i}]"), item.get_ref(), item.span());
                }
                None
            }
            _ => None,
        };
        self.values.insert(path, Located { span, string });
    }

    /// The value at `path`, e.g. `transforms[0].filter`.
    pub fn get(&self, path: &str) -> Option<&Located> {
        self.values.get(path)
    }

    /// Every string value with its path, in path order.
    pub fn strings(&self) -> impl Iterator<Item = (&str, &Located, &str)> {
        self.values
            .iter()
            .filter_map(|(path, v)| v.string.as_deref().map(|s| (path.as_str(), v, s)))
    }
}

/// Where `needle` first occurs inside the value's text (`span` of `text`),
/// as a byte offset into `text`; searched in the raw text, so escapes do not
/// shift the result.
pub fn find_in(text: &str, span: &Range<usize>, needle: &str) -> Option<usize> {
    let raw = text.get(span.clone())?;
    raw.find(needle).map(|at| span.start + at)
}

/// Like [`find_in`], for a name that must stand as a whole word.
pub fn find_word_in(text: &str, span: &Range<usize>, word: &str) -> Option<usize> {
    let raw = text.get(span.clone())?;
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    raw.match_indices(word)
        .find(|(at, _)| {
            let before = raw[..*at].chars().next_back();
            let after = raw[at + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
        .map(|(at, _)| span.start + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_has_its_place() {
        let text = "name = \"x\"\n[[sinks]]\nfields = { ITNO = \"{{ record.item }}\" }\n\
                    [[transforms]]\nfilter = '''\nselect(.a)\n'''\n";
        let spans = Spans::parse(text);
        let item = spans.get("sinks[0].fields.ITNO").unwrap();
        assert_eq!(&text[item.span.clone()], "\"{{ record.item }}\"");
        assert_eq!(item.string.as_deref(), Some("{{ record.item }}"));
        let filter = spans.get("transforms[0].filter").unwrap();
        assert_eq!(filter.string.as_deref(), Some("select(.a)\n"));
        let at = find_word_in(text, &item.span, "item").unwrap();
        assert_eq!(&text[at..at + 4], "item");
        assert_eq!(spans.strings().count(), 3);
        assert!(Spans::parse("[[").get("x").is_none());
    }
}
