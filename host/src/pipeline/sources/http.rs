//! `kind = "http"`: a plain HTTP(S) endpoint outside the gateway that
//! answers JSON, read in one call or paged by offset and limit.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::offset::{OffsetPaging, OffsetReader, Shared, Target, check_records};
use super::{PageReader, SourceContext, SourceKind};
use crate::config::{Check, RetryConfig, default_http_timeout_secs};
use crate::pipeline::http;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// `https://...`; `http://` only for loopback hosts.
    pub url: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers; put secrets in `${env.NAME}`, never inline.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub records_pointer: Option<String>,
    pub records_jq: Option<String>,
    pub paging: Option<OffsetPaging>,
    pub max_records: Option<u64>,
    #[serde(default = "default_http_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub retry: RetryConfig,
}

impl SourceKind for HttpSourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["records_pointer", "records_jq"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.header_secrets(&self.headers);
        check_records(check, &self.records_pointer, &self.records_jq, &self.paging);
        check.url("url", &self.url);
    }

    fn records_jq(&self) -> Option<&str> {
        self.records_jq.as_deref()
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let url = cx
            .vars
            .expand(&self.url)
            .map_err(|e| anyhow::anyhow!("source.url: {e}"))?;
        http::check_url(&url).map_err(|e| anyhow::anyhow!("source.url: {e}"))?;
        Ok(Box::new(OffsetReader::with_target(
            Target::Http {
                client: cx.http.clone(),
                url,
                timeout: Duration::from_secs(self.timeout_secs),
            },
            Shared {
                query: &self.query,
                headers: &self.headers,
                records_pointer: self.records_pointer.as_deref(),
                records_jq: self.records_jq.as_deref(),
                paging: &self.paging,
                max_records: self.max_records,
                retry: self.retry,
            },
            cx.vars,
            cx.stats,
        )?))
    }
}
