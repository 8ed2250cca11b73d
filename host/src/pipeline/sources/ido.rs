//! A Mongoose IDO collection, paged with `loadType=NEXT` and the returned
//! bookmark until `MoreRowsExist` is false.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;

use super::{Limit, PageReader, SourceContext, SourceKind};
use crate::config::Variables;
use crate::config::{Check, RetryConfig};
use crate::pipeline::retry::{CallError, RunStats, gateway_call};
use crate::products::ido;
use ionflow_runtime::{Connection, GatewayRequest, Method};
use schemars::JsonSchema;
use serde::Deserialize;

/// `ido/load/{ido}` with `loadType=NEXT` and the returned bookmark until
/// `MoreRowsExist` is false.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdoSourceConfig {
    pub connection: String,
    /// IDO name, e.g. `SLItems`.
    pub ido: String,
    /// The Mongoose configuration, sent as `X-Infor-MongooseConfig`.
    pub mongoose_config: String,
    /// Properties to load.
    pub properties: Vec<String>,
    /// Mongoose filter, e.g. `RecordDate > '${state.since}'`.
    pub filter: Option<String>,
    pub order_by: Option<String>,
    /// Records per call (`recordCap`).
    #[serde(default = "default_ido_page_size")]
    pub page_size: u32,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_ido_page_size() -> u32 {
    200
}

impl SourceKind for IdoSourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["ido", "properties", "order_by"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.range("page_size", self.page_size.into(), 100_000, "");
        if self.properties.is_empty() {
            check.add(
                Some("properties"),
                "name at least one property, e.g. [\"Item\", \"Description\"]",
            );
        }
    }

    fn connection(&self) -> Option<&str> {
        Some(&self.connection)
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let connection = cx.connection(&self.connection)?;
        Ok(Box::new(IdoReader::new(
            self, connection, cx.vars, cx.stats,
        )?))
    }
}

impl PageReader for IdoReader {
    fn next_page(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(IdoReader::next_page(self))
    }
}

pub struct IdoReader {
    connection: Arc<Connection>,
    ido: String,
    path: String,
    mongoose_config: String,
    query: Vec<(String, String)>,
    bookmark: Option<String>,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
}

impl IdoReader {
    pub fn new(
        config: &IdoSourceConfig,
        connection: Arc<Connection>,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        let mut query = vec![
            ("properties".to_owned(), config.properties.join(",")),
            ("recordCap".to_owned(), config.page_size.to_string()),
        ];
        if let Some(filter) = &config.filter {
            let filter = vars
                .expand(filter)
                .map_err(|e| anyhow::anyhow!("source.filter: {e}"))?;
            query.push(("filter".to_owned(), filter));
        }
        if let Some(order) = &config.order_by {
            query.push(("orderBy".to_owned(), order.clone()));
        }
        Ok(IdoReader {
            connection,
            path: ido::load_path(&config.ido),
            ido: config.ido.clone(),
            mongoose_config: vars
                .expand(&config.mongoose_config)
                .map_err(|e| anyhow::anyhow!("source.mongoose_config: {e}"))?,
            query,
            bookmark: None,
            limit: Limit::new(config.max_records),
            done: false,
            retry: config.retry,
            stats,
        })
    }

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            return Ok(None);
        }
        let mut query = self.query.clone();
        match &self.bookmark {
            Some(bookmark) => {
                query.push(("loadType".into(), "NEXT".into()));
                query.push(("bookmark".into(), bookmark.clone()));
            }
            None => query.push(("loadType".into(), "FIRST".into())),
        }
        let request = GatewayRequest {
            method: Method::Get,
            path: self.path.clone(),
            query,
            headers: vec![(ido::CONFIG_HEADER.into(), self.mongoose_config.clone())],
            body: vec![],
            timeout_ms: None,
        };
        let (response, _) = gateway_call(&self.connection, request, &self.retry, true, &self.stats)
            .await
            .map_err(CallError::into_anyhow)
            .with_context(|| {
                format!(
                    "IDO {} via connection `{}`",
                    self.ido,
                    self.connection.name()
                )
            })?;
        let page = ido::load_page(response.status, &response.body, &self.ido)?;
        match (page.more_rows_exist, page.bookmark) {
            (true, Some(bookmark))
                if page.items.is_empty() || Some(&bookmark) == self.bookmark.as_ref() =>
            {
                anyhow::bail!(
                    "IDO {}: MoreRowsExist is true but the bookmark did not move; stopping instead of looping",
                    self.ido
                );
            }
            (true, Some(bookmark)) => self.bookmark = Some(bookmark),
            (true, None) => anyhow::bail!(
                "IDO {}: MoreRowsExist is true but no Bookmark came back",
                self.ido
            ),
            (false, _) => self.done = true,
        }
        Ok(Some(self.limit.take(page.items)))
    }
}
