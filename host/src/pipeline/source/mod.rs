//! Where records come from. Each source yields pages, so memory holds one
//! page at a time however large the data set.

mod m3_list;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::config::SourceConfig;
use super::interpolate::Variables;
use crate::runtime::Connection;

pub enum Source {
    M3List(m3_list::M3ListReader),
}

impl Source {
    pub fn new(
        config: &SourceConfig,
        connections: &BTreeMap<String, Arc<Connection>>,
        vars: &Variables,
    ) -> anyhow::Result<Source> {
        match config {
            SourceConfig::M3List(c) => {
                let connection = connections[&c.connection].clone();
                Ok(Source::M3List(m3_list::M3ListReader::new(
                    c, connection, vars,
                )?))
            }
        }
    }

    /// The next page of records; `None` when the source is exhausted.
    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        match self {
            Source::M3List(reader) => reader.next_page().await,
        }
    }
}
