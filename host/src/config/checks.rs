//! The checks that several kinds share, with the place each problem is
//! reported at: a kind's `check` calls these on its own table.

use std::collections::BTreeMap;

use super::MAX_CONCURRENCY;
use super::problems::Problems;

/// What a kind's `check` reports into: its table (`source`, `sinks[2]`),
/// the problems found so far and the connections the pipeline defines.
pub struct Check<'p, 'a> {
    pub problems: &'p mut Problems<'a>,
    pub table: String,
    pub connections: Vec<String>,
}

impl Check<'_, '_> {
    /// A problem with `key` of this kind's table (or the table itself).
    pub fn add(&mut self, key: Option<&str>, message: impl Into<String>) {
        self.problems.add(&self.table, key, message);
    }

    /// A problem in a table nested in this one (`source.paging`).
    pub fn add_in(&mut self, sub_table: &str, key: Option<&str>, message: impl Into<String>) {
        let table = format!("{}.{sub_table}", self.table);
        self.problems.add(&table, key, message);
    }

    /// `connection = "NAME"` must name a `[connections.NAME]` table.
    pub fn connection(&mut self, name: &str) {
        if self.connections.iter().any(|c| c == name) {
            return;
        }
        let others = if self.connections.is_empty() {
            String::new()
        } else {
            format!(" or use one of: {}", self.connections.join(", "))
        };
        self.add(
            Some("connection"),
            format!("\"{name}\" names no connection; define [connections.{name}]{others}"),
        );
    }

    /// `value` must lie in `1..=max`; `why` explains the maximum.
    pub fn range(&mut self, key: &str, value: u64, max: u64, why: &str) {
        if value == 0 || value > max {
            self.add(Some(key), format!("must be between 1 and {max}{why}"));
        }
    }

    /// Header values that carry credentials must come from the environment,
    /// so that a pipeline file can be committed and shared.
    pub fn header_secrets(&mut self, headers: &BTreeMap<String, String>) {
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let sensitive = lower.contains("authorization")
                || ["key", "token", "secret", "password", "cookie"]
                    .iter()
                    .any(|word| lower.contains(word));
            if sensitive && !value.contains("${env.") && !value.contains("${var.") {
                self.add(
                    Some("headers"),
                    format!(
                        "header {name} carries a credential written into the file; \
                         take it from the environment: {name} = \"${{env.NAME}}\""
                    ),
                );
            }
        }
    }

    pub fn url(&mut self, key: &str, url: &str) {
        if !(url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("${")
            || url.starts_with("{{"))
        {
            self.add(
                Some(key),
                "must start with https:// (or http:// for a loopback host)",
            );
        }
    }

    pub fn delimiter(&mut self, delimiter: &str) {
        if delimiter.len() != 1 || !delimiter.is_ascii() {
            self.add(
                Some("csv_delimiter"),
                "must be one ASCII character, e.g. \",\" or \";\"",
            );
        }
    }

    /// `concurrency` and `order_key` of a sink that sends a request per record.
    pub fn delivery(&mut self, concurrency: u32, order_key: Option<&str>) {
        self.range(
            "concurrency",
            concurrency.into(),
            MAX_CONCURRENCY.into(),
            " (each request in flight holds a connector instance)",
        );
        if order_key.is_some() && concurrency == 1 {
            self.add(
                Some("order_key"),
                "only matters with concurrency above 1, where one request at a time \
                 already keeps every record in order; remove it or raise concurrency",
            );
        }
    }
}
