//! An open connection: one connector instance in its own store, called one
//! operation at a time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use wasmtime::component::ResourceAny;
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use super::bindings::ionflow::gateway::types::Error as WitError;
use super::bindings::{Connector, ConnectorPre};
use super::capabilities::{HostState, HttpTransport, TokenStore};
use super::engine::EPOCH_TICK;
use super::{
    AuthorizationStart, ConnectionInfo, ConnectionOptions, ConnectorError, GatewayRequest,
    GatewayResponse, TokenInfo,
};

/// Bounds for each connector instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub memory_bytes: usize,
    /// Overrides the deadline derived from the request timeout.
    pub deadline_ticks: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        // The connector holds one request and one response at a time; bodies
        // up to the gateway's payload limit fit with room to spare.
        Limits {
            memory_bytes: 256 * 1024 * 1024,
            deadline_ticks: None,
        }
    }
}

/// What the connector did on the network, for run summaries.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub requests: AtomicU64,
    pub token_requests: AtomicU64,
    pub(crate) token_url: OnceLock<String>,
}

impl ConnectionStats {
    pub(crate) fn record(&self, url: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.token_url.get().is_some_and(|t| t == url) {
            self.token_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }
}

/// One export call, given the instance's bindings, store and resource.
trait ExportCall<R>:
    for<'a> FnOnce(
    &'a Connector,
    &'a mut Store<HostState>,
    ResourceAny,
) -> BoxFuture<'a, wasmtime::Result<Result<R, WitError>>>
{
}

impl<R, F> ExportCall<R> for F where
    F: for<'a> FnOnce(
        &'a Connector,
        &'a mut Store<HostState>,
        ResourceAny,
    ) -> BoxFuture<'a, wasmtime::Result<Result<R, WitError>>>
{
}

struct Instance {
    store: Store<HostState>,
    bindings: Connector,
    handle: ResourceAny,
}

/// A connection: one or more connector instances over the same `.ionapi`
/// file. Each instance handles one call at a time; instances share the
/// runtime's token store, so they share tokens and request them once.
pub struct Connection {
    name: Arc<str>,
    info: ConnectionInfo,
    stats: Arc<ConnectionStats>,
    deadline_ticks: u64,
    instances: Vec<Mutex<Instance>>,
    next: AtomicUsize,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        pre: ConnectorPre<HostState>,
        engine: &Engine,
        transport: HttpTransport,
        tokens: Arc<dyn TokenStore>,
        limits: Limits,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
        instances: usize,
    ) -> Result<Connection, ConnectorError> {
        let name: Arc<str> = name.into();
        let stats = Arc::new(ConnectionStats::default());
        // A call may wait for another caller's token request and then make
        // two token requests and two business calls of its own.
        let timeout_ms = u64::from(options.request_timeout_ms.unwrap_or(60_000));
        let deadline_ticks = limits
            .deadline_ticks
            .unwrap_or((6 * timeout_ms + 30_000) / EPOCH_TICK.as_millis() as u64);
        let mut opened = Vec::with_capacity(instances.max(1));
        let mut info = None;
        for _ in 0..instances.max(1) {
            let store_limits = StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(4)
                .build();
            let mut store = Store::new(
                engine,
                HostState::new(
                    transport.clone(),
                    tokens.clone(),
                    name.clone(),
                    stats.clone(),
                    store_limits,
                ),
            );
            store.limiter(|s| &mut s.limits);
            store.epoch_deadline_trap();
            store.set_epoch_deadline(deadline_ticks);

            let bindings = pre
                .instantiate_async(&mut store)
                .await
                .map_err(ConnectorError::trap)?;
            let auth = bindings.ionflow_gateway_auth().connection();
            let handle = auth
                .call_open(&mut store, ionapi_json, &options)
                .await
                .map_err(ConnectorError::trap)?
                .map_err(ConnectorError::Gateway)?;
            let described = auth
                .call_describe(&mut store, handle)
                .await
                .map_err(ConnectorError::trap)?;
            // The transport may reach only the hosts the file names.
            store.data_mut().allowed_hosts = [&described.portal_url, &described.ion_api_url]
                .into_iter()
                .filter_map(|u| reqwest::Url::parse(u).ok())
                .filter_map(|u| {
                    u.host_str()
                        .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
                })
                .collect();
            let _ = stats.token_url.set(described.token_url.clone());
            info.get_or_insert(described);
            opened.push(Mutex::new(Instance {
                store,
                bindings,
                handle,
            }));
        }

        Ok(Connection {
            name,
            info: info.expect("at least one instance"),
            stats,
            deadline_ticks,
            instances: opened,
            next: AtomicUsize::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection's description, every secret masked.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Runs one export call on a free instance, or waits for the next in turn.
    async fn run<R>(&self, op: impl ExportCall<R>) -> Result<R, ConnectorError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.instances.len();
        for offset in 0..self.instances.len() {
            let index = (start + offset) % self.instances.len();
            if let Ok(guard) = self.instances[index].try_lock() {
                return self.run_locked(guard, op).await;
            }
        }
        self.run_locked(self.instances[start].lock().await, op)
            .await
    }

    /// Runs on the first instance: a login keeps its PKCE verifier there.
    async fn run_first<R>(&self, op: impl ExportCall<R>) -> Result<R, ConnectorError> {
        self.run_locked(self.instances[0].lock().await, op).await
    }

    async fn run_locked<R>(
        &self,
        mut guard: tokio::sync::MutexGuard<'_, Instance>,
        op: impl ExportCall<R>,
    ) -> Result<R, ConnectorError> {
        let Instance {
            store,
            bindings,
            handle,
        } = &mut *guard;
        store.set_epoch_deadline(self.deadline_ticks);
        op(bindings, store, *handle)
            .await
            .map_err(ConnectorError::trap)?
            .map_err(ConnectorError::Gateway)
    }

    pub async fn call(&self, request: GatewayRequest) -> Result<GatewayResponse, ConnectorError> {
        self.run(|b, s, h| {
            Box::pin(async move { b.ionflow_gateway_gateway().call_call(s, h, &request).await })
        })
        .await
    }

    /// A valid access token, from the cache when possible.
    pub async fn token(&self) -> Result<TokenInfo, ConnectorError> {
        self.run(|b, s, h| {
            Box::pin(async move { b.ionflow_gateway_auth().connection().call_token(s, h).await })
        })
        .await
    }

    pub async fn refresh(&self) -> Result<TokenInfo, ConnectorError> {
        self.run(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_refresh(s, h)
                    .await
            })
        })
        .await
    }

    pub async fn revoke(&self) -> Result<(), ConnectorError> {
        self.run(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_revoke(s, h)
                    .await
            })
        })
        .await
    }

    /// Starts an authorization-code login; returns the URL for the browser.
    pub async fn begin_authorization(
        &self,
        redirect_uri: String,
        scope: Option<String>,
    ) -> Result<AuthorizationStart, ConnectorError> {
        self.run_first(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_begin_authorization(s, h, &redirect_uri, scope.as_deref())
                    .await
            })
        })
        .await
    }

    /// Exchanges the redirect's code (checked against `state`) for tokens.
    pub async fn complete_authorization(
        &self,
        code: String,
        state: String,
    ) -> Result<TokenInfo, ConnectorError> {
        self.run_first(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_complete_authorization(s, h, &code, &state)
                    .await
            })
        })
        .await
    }

    /// The deprecated implicit grant's authorization URL.
    pub async fn implicit_authorization_url(
        &self,
        redirect_uri: String,
        state: String,
        scope: Option<String>,
    ) -> Result<String, ConnectorError> {
        self.run_first(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_implicit_authorization_url(s, h, &redirect_uri, &state, scope.as_deref())
                    .await
            })
        })
        .await
    }
}
