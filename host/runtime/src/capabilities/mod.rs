//! The capabilities a host lends the connector, one module each, and the
//! per-instance state that ties them to one connection.

pub mod log;
pub mod token_store;
pub mod transport;

use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::ionflow::gateway::{self as wit};
use super::limits::{CallTrace, ConnectionStats};
use super::observe::{self, Exchange, ExchangeKind, Observer};
pub use token_store::{FileTokenStore, MemoryTokenStore, TokenStore};
pub use transport::HttpTransport;

/// Everything one connector instance may touch.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    transport: HttpTransport,
    tokens: Arc<dyn TokenStore>,
    /// Hosts of the connection's `.ionapi` file (`pu`, `iu`); empty until the
    /// connection is open, so nothing can be sent before the file is known.
    pub(crate) allowed_hosts: Vec<String>,
    /// The connection's name, for logs.
    pub(crate) label: Arc<str>,
    pub(crate) stats: Arc<ConnectionStats>,
    /// What the current export call sent; `connection.rs` resets and reads it.
    pub(crate) trace: CallTrace,
    /// Told of every exchange, when the host watches (metrics, traces).
    observer: Option<Arc<dyn Observer>>,
    /// `{iu}/{ti}`: business calls start with it.
    business_prefix: String,
}

impl HostState {
    pub fn new(
        transport: HttpTransport,
        tokens: Arc<dyn TokenStore>,
        label: Arc<str>,
        stats: Arc<ConnectionStats>,
        limits: StoreLimits,
    ) -> Self {
        HostState {
            // No files, no environment, no sockets, no stdio: the connector
            // reaches the world only through the imports below.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits,
            transport,
            tokens,
            allowed_hosts: Vec::new(),
            label,
            stats,
            trace: CallTrace::default(),
            observer: None,
            business_prefix: String::new(),
        }
    }

    /// Reports this instance's exchanges to `observer`; business calls are
    /// those below `{ion_api_url}/{tenant}`.
    pub(crate) fn observe(
        &mut self,
        observer: Option<Arc<dyn Observer>>,
        ion_api_url: &str,
        tenant: &str,
    ) {
        self.observer = observer;
        self.business_prefix = format!("{}/{tenant}", ion_api_url.trim_end_matches('/'));
    }

    fn kind_of<'a>(&self, request: &'a wit::transport::OutgoingRequest) -> ExchangeKind<'a> {
        let url = request.url.split(['?', '#']).next().unwrap_or_default();
        if self.stats.token_url.get().is_some_and(|t| t == url) {
            return ExchangeKind::Token {
                grant: observe::grant_of(&request.body),
            };
        }
        match url.strip_prefix(&self.business_prefix) {
            Some(rest) if rest.starts_with('/') && !self.business_prefix.is_empty() => {
                ExchangeKind::Business {
                    product: observe::product_of(rest, ""),
                }
            }
            _ => ExchangeKind::Other,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::types::Host for HostState {}

impl wit::transport::Host for HostState {
    async fn send(
        &mut self,
        request: wit::transport::OutgoingRequest,
    ) -> Result<wit::transport::IncomingResponse, wit::transport::TransportError> {
        use wit::transport::TransportError;
        let to_token_endpoint = self.stats.token_url.get() == Some(&request.url);
        // Only what the exchange was for is kept, never the request itself.
        let watched = match self.observer.clone() {
            None => None,
            Some(observer) => {
                let (kind, product) = match self.kind_of(&request) {
                    ExchangeKind::Token { grant } => (ExchangeKind::Token { grant }, None),
                    ExchangeKind::Business { product } => {
                        (ExchangeKind::Other, Some(product.to_owned()))
                    }
                    ExchangeKind::Other => (ExchangeKind::Other, None),
                };
                observer.exchange_started(&self.label);
                Some((observer, kind, product, std::time::Instant::now()))
            }
        };
        let span = exchange_span();
        if !span.is_disabled() {
            match self.kind_of(&request) {
                ExchangeKind::Token { grant } => {
                    span.record("kind", "token");
                    span.record("grant", grant);
                }
                ExchangeKind::Business { .. } => {
                    span.record("kind", "business");
                }
                ExchangeKind::Other => {
                    span.record("kind", "other");
                }
            }
        }
        let outcome = self
            .transport
            .send(request, &self.allowed_hosts, &self.label, &self.stats)
            .instrument(span.clone())
            .await;
        if let Ok(response) = &outcome {
            span.record("http.response.status_code", response.status);
        }
        if to_token_endpoint {
            self.trace.token_exchanges += 1;
        } else {
            // A refused or failed connection never carried the request; a
            // 401 is the gateway's answer, given before the product.
            self.trace.reached_product |= match &outcome {
                Ok(response) => response.status != 401,
                Err(TransportError::Connect(_) | TransportError::Refused(_)) => false,
                Err(TransportError::Timeout | TransportError::Other(_)) => true,
            };
        }
        if let Some((observer, kind, product, started)) = watched {
            let kind = match &product {
                Some(product) => ExchangeKind::Business { product },
                None => kind,
            };
            observer.exchange_ended(&Exchange {
                connection: &self.label,
                kind,
                status: outcome.as_ref().ok().map(|r| r.status),
                elapsed: started.elapsed(),
            });
        }
        outcome
    }
}

/// A span per HTTP exchange, under the host's span of the call (an
/// `ionflow` gateway call): token requests and a renewed token's second
/// try show there. What it was for and the status only, never the URL,
/// a header or a body. The target is the one `ionflow` exports and keeps
/// out of log lines; no subscriber that wants it, no cost but a check.
fn exchange_span() -> tracing::Span {
    tracing::info_span!(
        target: "ionflow::span",
        "http exchange",
        kind = tracing::field::Empty,
        grant = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    )
}

impl wit::token_store::Host for HostState {
    async fn load(
        &mut self,
        key: String,
    ) -> Result<Option<wit::token_store::Entry>, wit::token_store::StoreError> {
        self.tokens.load(&key).await
    }

    async fn save(
        &mut self,
        key: String,
        expected_version: u64,
        value: Option<String>,
    ) -> Result<u64, wit::token_store::StoreError> {
        self.tokens.save(&key, expected_version, value).await
    }

    async fn lock(
        &mut self,
        key: String,
        ttl_ms: u32,
        timeout_ms: u32,
    ) -> Result<u64, wit::token_store::StoreError> {
        self.tokens.lock(&key, ttl_ms, timeout_ms).await
    }

    async fn unlock(&mut self, key: String, lease: u64) {
        self.tokens.unlock(&key, lease).await
    }
}

impl wit::log::Host for HostState {
    async fn log(&mut self, level: wit::log::Level, message: String) {
        log::emit(&self.label, level, &message);
    }
}
