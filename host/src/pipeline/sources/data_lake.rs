//! Data Lake objects (`datalakeapi/v1/payloads/list`): their descriptors,
//! paged with `page` (from 1) and `records` until a page comes back empty
//! or short, and, when asked, each object's bytes (`payloads/streambyid`)
//! as JSON, as base64 or as a file in a folder.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use super::{Limit, PageReader, SourceContext, SourceKind};
use crate::config::Variables;
use crate::config::{Check, RetryConfig};
use crate::pipeline::retry::{CallError, RunStats, gateway_call};
use crate::products::data_lake::{self, Content};
use ionflow_runtime::{Connection, GatewayRequest, Method};
use schemars::JsonSchema;
use serde::Deserialize;

/// The largest `payload_max_bytes`: an object passes through the
/// connector's sandbox (256 MiB of memory) on its way in.
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataLakeSourceConfig {
    pub connection: String,
    /// Data Lake filter, e.g. `dl_document_name eq 'SyncItemMaster'`; passed as it is.
    pub filter: Option<String>,
    /// Sort, e.g. `dl_document_indexed_date:desc`; passed as it is.
    pub sort: Option<String>,
    /// Object descriptors per page (`records`), 1 to 10,000.
    #[serde(default = "default_data_lake_page_size")]
    pub page_size: u32,
    /// Objects to read at most.
    pub max_records: Option<u64>,
    /// What to do with each object's bytes (`payloads/streambyid`): `none`
    /// (the descriptor only), `records` (JSON parsed into `payload`, other
    /// bytes base64 in `payload_base64`), `base64` (always
    /// `payload_base64`) or `folder` (written to `payload_folder`, the path
    /// in `payload_path`).
    #[serde(default)]
    pub payloads: Payloads,
    /// With `payloads = "folder"`: where the objects are written, relative
    /// to the pipeline file; created when missing.
    pub payload_folder: Option<String>,
    /// The largest object fetched, in bytes (default 16 MiB, at most
    /// 64 MiB); a larger one stops the run naming this key.
    #[serde(default = "default_payload_max_bytes")]
    pub payload_max_bytes: u64,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Payloads {
    #[default]
    None,
    Records,
    Base64,
    Folder,
}

fn default_data_lake_page_size() -> u32 {
    100
}

fn default_payload_max_bytes() -> u64 {
    16 * 1024 * 1024
}

impl SourceKind for DataLakeSourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["sort"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.range("page_size", self.page_size.into(), 10_000, "");
        check.range(
            "payload_max_bytes",
            self.payload_max_bytes,
            MAX_PAYLOAD_BYTES,
            " (an object passes through the connector's sandbox)",
        );
        match (self.payloads, &self.payload_folder) {
            (Payloads::Folder, None) => check.add(
                Some("payload_folder"),
                "payloads = \"folder\" needs payload_folder = \"FOLDER\", where the objects are written",
            ),
            (Payloads::Folder, Some(_)) | (_, None) => {}
            (_, Some(_)) => check.add(
                Some("payload_folder"),
                "is used only with payloads = \"folder\"; remove it or set payloads = \"folder\"",
            ),
        }
    }

    fn connection(&self) -> Option<&str> {
        Some(&self.connection)
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let connection = cx.connection(&self.connection)?;
        Ok(Box::new(DataLakeReader::new(
            self,
            connection,
            cx.vars,
            cx.base_dir,
            cx.stats,
        )?))
    }
}

impl PageReader for DataLakeReader {
    fn next_page(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(DataLakeReader::next_page(self))
    }
}

pub struct DataLakeReader {
    connection: Arc<Connection>,
    query: Vec<(String, String)>,
    page_size: u32,
    page: u64,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    payloads: Payloads,
    folder: Option<PathBuf>,
    max_bytes: u64,
    /// Listed objects whose bytes are still to be fetched, one per page
    /// handed out, so that memory holds one object at a time.
    waiting: VecDeque<Value>,
    /// The first `dl_id` of the previous page: an endpoint that ignores
    /// `page` would otherwise be read forever.
    previous_first: Option<String>,
}

impl DataLakeReader {
    pub fn new(
        config: &DataLakeSourceConfig,
        connection: Arc<Connection>,
        vars: &Variables,
        base_dir: &Path,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        let mut query = Vec::new();
        if let Some(filter) = &config.filter {
            query.push((
                "filter".into(),
                vars.expand(filter)
                    .map_err(|e| anyhow::anyhow!("source.filter: {e}"))?,
            ));
        }
        if let Some(sort) = &config.sort {
            query.push((
                "sort".into(),
                vars.expand(sort)
                    .map_err(|e| anyhow::anyhow!("source.sort: {e}"))?,
            ));
        }
        let folder = match (&config.payloads, &config.payload_folder) {
            (Payloads::Folder, Some(raw)) => {
                let folder = base_dir.join(
                    vars.expand(raw)
                        .map_err(|e| anyhow::anyhow!("source.payload_folder: {e}"))?,
                );
                std::fs::create_dir_all(&folder).with_context(|| {
                    format!("source.payload_folder: cannot create {}", folder.display())
                })?;
                Some(folder)
            }
            _ => None,
        };
        Ok(DataLakeReader {
            connection,
            query,
            page_size: config.page_size,
            page: 1,
            limit: Limit::new(config.max_records),
            done: false,
            retry: config.retry,
            stats,
            payloads: config.payloads,
            folder,
            max_bytes: config.payload_max_bytes,
            waiting: VecDeque::new(),
            previous_first: None,
        })
    }

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.payloads == Payloads::None {
            return self.list().await;
        }
        while self.waiting.is_empty() {
            match self.list().await? {
                Some(descriptors) => self.waiting.extend(descriptors),
                None => return Ok(None),
            }
        }
        let Some(descriptor) = self.waiting.pop_front() else {
            return Ok(None);
        };
        Ok(Some(vec![self.with_payload(descriptor).await?]))
    }

    /// The next page of descriptors, `None` past the last.
    async fn list(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            return Ok(None);
        }
        let mut query = self.query.clone();
        query.push(("page".into(), self.page.to_string()));
        query.push(("records".into(), self.page_size.to_string()));
        let request = GatewayRequest {
            method: Method::Get,
            path: data_lake::LIST_PATH.into(),
            query,
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        };
        let (response, _) = gateway_call(&self.connection, request, &self.retry, true, &self.stats)
            .await
            .map_err(CallError::into_anyhow)
            .with_context(|| {
                format!(
                    "Data Lake payloads/list via connection `{}`",
                    self.connection.name()
                )
            })?;
        let page = data_lake::list_page(response.status, &response.body)?;
        let got = page.descriptors.len() as u64;
        // The size the endpoint says it used wins over the one asked for:
        // an endpoint that caps pages lower still pages on.
        let size = page
            .page_size
            .filter(|s| *s > 0)
            .unwrap_or(self.page_size.into());
        if got == 0 {
            self.done = true;
            return Ok(None);
        }
        if got < size {
            self.done = true;
        }
        let first = page
            .descriptors
            .first()
            .and_then(|d| d.get("dl_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if first.is_some() && first == self.previous_first {
            anyhow::bail!(
                "Data Lake payloads/list: page {} starts with the same object ({}) as page {}; \
                 the endpoint does not page with `page`, so the run stops rather than read the \
                 same objects again",
                self.page,
                first.unwrap_or_default(),
                self.page - 1
            );
        }
        self.previous_first = first;
        self.page += 1;
        Ok(Some(self.limit.take(page.descriptors)))
    }

    /// The descriptor with its object's bytes, as the `payloads` mode says.
    async fn with_payload(&self, mut descriptor: Value) -> anyhow::Result<Value> {
        let id = data_lake::object_id(&descriptor)?.to_owned();
        let bytes = self
            .fetch(&id, data_lake::declared_size(&descriptor))
            .await?;
        let Some(record) = descriptor.as_object_mut() else {
            return Ok(descriptor);
        };
        record.insert("payload_bytes".into(), Value::from(bytes.len()));
        let base64 =
            |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        match self.payloads {
            Payloads::None => {}
            Payloads::Records => match data_lake::content(&bytes) {
                Content::Json(value) => {
                    record.insert("payload".into(), value);
                }
                Content::JsonLines(values) => {
                    record.insert("payload".into(), Value::Array(values));
                }
                Content::Other => {
                    record.insert("payload_base64".into(), base64(&bytes));
                }
            },
            Payloads::Base64 => {
                record.insert("payload_base64".into(), base64(&bytes));
            }
            Payloads::Folder => {
                let path = self.write_object(&id, &bytes)?;
                record.insert(
                    "payload_path".into(),
                    Value::String(path.display().to_string()),
                );
            }
        }
        Ok(descriptor)
    }

    /// One object's bytes, refused above `payload_max_bytes` before the
    /// call when the descriptor declares its size, and after it otherwise.
    async fn fetch(&self, id: &str, declared: Option<u64>) -> anyhow::Result<Vec<u8>> {
        let too_large = |size: u64| {
            anyhow::anyhow!(
                "Data Lake object {id} is {size} bytes, over source.payload_max_bytes = {}; \
                 raise payload_max_bytes (at most {MAX_PAYLOAD_BYTES}), or leave such objects \
                 out with source.filter",
                self.max_bytes
            )
        };
        if let Some(size) = declared.filter(|s| *s > self.max_bytes) {
            return Err(too_large(size));
        }
        let request = GatewayRequest {
            method: Method::Get,
            path: data_lake::STREAM_PATH.into(),
            query: vec![("datalakeId".into(), id.to_owned())],
            headers: vec![("Accept".into(), "application/octet-stream".into())],
            body: vec![],
            timeout_ms: None,
        };
        let (response, _) = gateway_call(&self.connection, request, &self.retry, true, &self.stats)
            .await
            .map_err(CallError::into_anyhow)
            .with_context(|| {
                format!(
                    "Data Lake object {id} via connection `{}`",
                    self.connection.name()
                )
            })?;
        data_lake::stream(response.status, &response.body, id)?;
        if response.body.len() as u64 > self.max_bytes {
            return Err(too_large(response.body.len() as u64));
        }
        Ok(response.body)
    }

    /// Writes an object to the folder under a name made from its id, whole
    /// or not at all (a `.partial` file renamed), and returns the path.
    fn write_object(&self, id: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let folder = self
            .folder
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("source.payload_folder is not set"))?;
        let path = folder.join(file_name(id, bytes));
        let partial = path.with_extension("partial");
        std::fs::write(&partial, bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("source.payload_folder: cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// A file name for an object: its id with anything but letters, digits,
/// `-`, `_` and `.` replaced (an id comes from the gateway and must not
/// name a path), and an extension for what it holds.
fn file_name(id: &str, bytes: &[u8]) -> String {
    let mut stem: String = id
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.trim_matches('.').is_empty() {
        stem = format!("object{stem}").replace('.', "_");
    }
    let extension = match data_lake::content(bytes) {
        Content::Json(_) => "json",
        Content::JsonLines(_) => "jsonl",
        Content::Other if bytes.trim_ascii_start().starts_with(b"<") => "xml",
        Content::Other => "bin",
    };
    format!("{stem}.{extension}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_leave_the_folder() {
        assert_eq!(file_name("1-abc", b"{}"), "1-abc.json");
        assert_eq!(file_name("../../etc/passwd", b"x"), ".._.._etc_passwd.bin");
        assert_eq!(file_name("..", b"<a/>"), "object__.xml");
        assert_eq!(file_name("a/b\\c", b"{\"a\":1}\n{\"a\":2}"), "a_b_c.jsonl");
        assert!(!file_name("x/../y", b"").contains('/'));
    }
}
