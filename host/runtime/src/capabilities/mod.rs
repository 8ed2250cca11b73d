//! The capabilities a host lends the connector, one module each, and the
//! per-instance state that ties them to one connection.

pub mod log;
pub mod token_store;
pub mod transport;

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::ionflow::gateway::{self as wit};
use super::limits::{CallTrace, ConnectionStats};
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
        let outcome = self
            .transport
            .send(request, &self.allowed_hosts, &self.label, &self.stats)
            .await;
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
        outcome
    }
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
