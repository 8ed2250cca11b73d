//! An open connection: one connector instance in its own store, called one
//! operation at a time.

use std::sync::atomic::{AtomicU64, Ordering};
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
    ConnectionInfo, ConnectionOptions, ConnectorError, GatewayRequest, GatewayResponse, TokenInfo,
};

/// Bounds for each connector instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // The connector holds one request and one response at a time; bodies
        // up to the gateway's payload limit fit with room to spare.
        Limits {
            memory_bytes: 256 * 1024 * 1024,
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

struct Instance {
    store: Store<HostState>,
    bindings: Connector,
    handle: ResourceAny,
}

pub struct Connection {
    name: Arc<str>,
    info: ConnectionInfo,
    stats: Arc<ConnectionStats>,
    deadline_ticks: u64,
    instance: Mutex<Instance>,
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
    ) -> Result<Connection, ConnectorError> {
        let name: Arc<str> = name.into();
        let stats = Arc::new(ConnectionStats::default());
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(4)
            .build();
        let mut store = Store::new(
            engine,
            HostState::new(transport, tokens, name.clone(), stats.clone(), store_limits),
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // A call may wait for another caller's token request and then make
        // two token requests and two business calls of its own.
        let timeout_ms = u64::from(options.request_timeout_ms.unwrap_or(60_000));
        let deadline_ticks = (6 * timeout_ms + 30_000) / EPOCH_TICK.as_millis() as u64;
        store.set_epoch_deadline(deadline_ticks);

        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(ConnectorError::trap)?;
        let auth = bindings.ionflow_gateway_auth().connection();
        let handle = auth
            .call_open(&mut store, ionapi_json, options)
            .await
            .map_err(ConnectorError::trap)?
            .map_err(ConnectorError::Gateway)?;
        let info = auth
            .call_describe(&mut store, handle)
            .await
            .map_err(ConnectorError::trap)?;

        let hosts = [&info.portal_url, &info.ion_api_url]
            .into_iter()
            .filter_map(|u| reqwest::Url::parse(u).ok())
            .filter_map(|u| {
                u.host_str()
                    .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
            })
            .collect();
        store.data_mut().allowed_hosts = hosts;
        let _ = stats.token_url.set(info.token_url.clone());

        Ok(Connection {
            name,
            info,
            stats,
            deadline_ticks,
            instance: Mutex::new(Instance {
                store,
                bindings,
                handle,
            }),
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

    /// Runs one export call on the instance under the call deadline.
    async fn run<R>(
        &self,
        op: impl for<'a> FnOnce(
            &'a Connector,
            &'a mut Store<HostState>,
            ResourceAny,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, WitError>>>,
    ) -> Result<R, ConnectorError> {
        let mut guard = self.instance.lock().await;
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
}
