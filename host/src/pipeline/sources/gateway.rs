//! `kind = "gateway"`: any gateway path below `{iu}/{ti}/` that answers
//! JSON, read in one call or paged by offset and limit.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::offset::{OffsetPaging, OffsetReader, Shared, Target, check_records};
use super::{PageReader, SourceContext, SourceKind};
use crate::config::{Check, RetryConfig};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySourceConfig {
    pub connection: String,
    /// Product path below `{iu}/{ti}/`, e.g. `LN/lnapi/odata/...`.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub records_pointer: Option<String>,
    pub records_jq: Option<String>,
    /// Page by offset and limit; one call when absent.
    pub paging: Option<OffsetPaging>,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

impl SourceKind for GatewaySourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["records_pointer", "records_jq"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.header_secrets(&self.headers);
        check.connection(&self.connection);
        check_records(check, &self.records_pointer, &self.records_jq, &self.paging);
    }

    fn connection(&self) -> Option<&str> {
        Some(&self.connection)
    }

    fn concurrency(&self) -> u32 {
        self.paging.as_ref().map_or(1, |p| p.concurrency)
    }

    fn records_jq(&self) -> Option<&str> {
        self.records_jq.as_deref()
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let connection = cx.connection(&self.connection)?;
        let path = cx
            .vars
            .expand(&self.path)
            .map_err(|e| anyhow::anyhow!("source.path: {e}"))?;
        Ok(Box::new(OffsetReader::with_target(
            Target::Gateway { connection, path },
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
