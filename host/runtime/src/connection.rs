//! An open connection: one or more connector instances, each in its own
//! store and called one operation at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use wasmtime::component::ResourceAny;
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use super::bindings::exports::ionflow::gateway::auth::{
    AuthorizationStart, ConnectionInfo, Inspection, Options as ConnectionOptions,
};
use super::bindings::exports::ionflow::gateway::gateway::{
    Request as GatewayRequest, Response as GatewayResponse,
};
use super::bindings::ionflow::gateway::types::Error as WitError;
use super::bindings::{Connector, ConnectorPre};
use super::capabilities::{HostState, HttpTransport, TokenStore};
use super::error::ConnectorError;
use super::limits::{CallTrace, ConnectionStats, SandboxLimits, epoch_ticks};
use super::observe::Observer;
use super::rate_limit::{Limiter, RateLimit, SharedBudget};
use super::token::AccessToken;

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
    /// Set when a call trapped: the instance's state is unknown afterwards,
    /// so it is never entered again.
    stopped: bool,
}

/// A connection: one or more connector instances over the same `.ionapi`
/// file. Each instance handles one call at a time; instances share the
/// runtime's token store, so they share tokens and request them once.
pub struct Connection {
    name: Arc<str>,
    info: ConnectionInfo,
    stats: Arc<ConnectionStats>,
    limits: SandboxLimits,
    deadline: Duration,
    instances: Vec<Mutex<Instance>>,
    next: AtomicUsize,
    limiter: Option<Limiter>,
    observer: Option<Arc<dyn Observer>>,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        pre: ConnectorPre<HostState>,
        engine: &Engine,
        transport: HttpTransport,
        tokens: Arc<dyn TokenStore>,
        limits: SandboxLimits,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
        instances: usize,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Connection, ConnectorError> {
        let name: Arc<str> = name.into();
        let stats = Arc::new(ConnectionStats::default());
        let deadline = limits.deadline(options.request_timeout_ms);
        let trap = |e| ConnectorError::trap(e, &name, &limits, deadline);
        let mut opened = Vec::with_capacity(instances.max(1));
        let mut info = None;
        for _ in 0..instances.max(1) {
            let mut store = new_store(
                engine,
                transport.clone(),
                tokens.clone(),
                &limits,
                &name,
                &stats,
            );
            store.set_epoch_deadline(epoch_ticks(deadline));
            let bindings = pre.instantiate_async(&mut store).await.map_err(trap)?;
            let auth = bindings.ionflow_gateway_auth().connection();
            let handle = auth
                .call_open(&mut store, ionapi_json, &options)
                .await
                .map_err(trap)?
                .map_err(ConnectorError::Gateway)?;
            store.set_epoch_deadline(epoch_ticks(deadline));
            let described = auth.call_describe(&mut store, handle).await.map_err(trap)?;
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
            store
                .data_mut()
                .observe(observer.clone(), &described.ion_api_url, &described.tenant);
            info.get_or_insert(described);
            opened.push(Mutex::new(Instance {
                store,
                bindings,
                handle,
                stopped: false,
            }));
        }

        Ok(Connection {
            name,
            info: info.expect("at least one instance"),
            stats,
            limits,
            deadline,
            instances: opened,
            next: AtomicUsize::new(0),
            limiter: None,
            observer,
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

    /// Business calls wait as needed to stay within `limit`.
    pub fn set_rate_limit(&mut self, limit: RateLimit) {
        self.limiter = Some(Limiter::new(limit));
    }

    /// Business calls wait as needed to stay within `limit` here and, with
    /// every other process drawing from `budget`, within `limit` together.
    /// The budget is kept under the connection's token-store key: one
    /// quota per tenant and authorized app.
    pub fn set_shared_rate_limit(&mut self, limit: RateLimit, budget: Arc<dyn SharedBudget>) {
        let key = format!("rate:{}", self.info.store_key);
        self.limiter = Some(Limiter::shared(limit, budget, key));
    }

    /// The rate limit a call is waiting for now, and how much longer.
    pub fn rate_limit_wait(&self) -> Option<(std::time::Duration, RateLimit)> {
        let limiter = self.limiter.as_ref()?;
        limiter.waiting().map(|left| (left, limiter.limit()))
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

    /// Runs one export call on a locked instance under the call deadline.
    async fn run_locked<R>(
        &self,
        mut guard: tokio::sync::MutexGuard<'_, Instance>,
        op: impl ExportCall<R>,
    ) -> Result<R, ConnectorError> {
        let Instance {
            store,
            bindings,
            handle,
            stopped,
        } = &mut *guard;
        if *stopped {
            return Err(ConnectorError::Sandbox(format!(
                "connection `{}`: its connector was stopped by an earlier failure and cannot be \
                 called again; open the connection again",
                self.name
            )));
        }
        store.set_epoch_deadline(epoch_ticks(self.deadline));
        store.data_mut().trace = CallTrace::default();
        let refusals = self.stats.refusals();
        let oversized = self.stats.oversized();
        match op(bindings, store, *handle).await {
            // The connector reports a refused destination as a transport
            // error; the host knows it refused and says it is configuration.
            Ok(Err(WitError::Transport(message))) if self.stats.refusals() > refusals => {
                Err(ConnectorError::Refused(message))
            }
            // An answer over the response cap would be as large again if
            // the call were repeated: a failure, not a network hiccup.
            Ok(Err(WitError::Transport(message))) if self.stats.oversized() > oversized => {
                Err(ConnectorError::Gateway(WitError::Protocol(message)))
            }
            Ok(Err(error)) => Err(self.undelivered(error, store.data().trace)),
            Ok(result) => result.map_err(ConnectorError::Gateway),
            Err(trap) => {
                *stopped = true;
                let error = ConnectorError::trap(trap, &self.name, &self.limits, self.deadline);
                tracing::error!(connection = %self.name, "{error}");
                Err(error)
            }
        }
    }

    /// A transport or protocol failure of a call that sent nothing the
    /// product could have seen becomes `NotDelivered`: the host saw every
    /// exchange, so it knows what the connector's message cannot say.
    fn undelivered(&self, error: WitError, trace: CallTrace) -> ConnectorError {
        let lost = matches!(error, WitError::Transport(_) | WitError::Protocol(_));
        if !lost || trace.reached_product {
            return ConnectorError::Gateway(error);
        }
        let token_endpoint = (trace.token_exchanges > 0).then(|| self.info.token_url.clone());
        if token_endpoint.is_none() && matches!(error, WitError::Protocol(_)) {
            return ConnectorError::Gateway(error);
        }
        ConnectorError::NotDelivered {
            token_endpoint,
            cause: error,
        }
    }

    /// One gateway call. The request may come shared (`Arc`), so that a
    /// caller retrying it does not copy its body for each attempt.
    pub async fn call(
        &self,
        request: impl Into<Arc<GatewayRequest>>,
    ) -> Result<GatewayResponse, ConnectorError> {
        if let Some(limiter) = &self.limiter {
            let asked = std::time::Instant::now();
            limiter.acquire().await;
            if let Some(observer) = &self.observer {
                observer.rate_limit_waited(&self.name, asked.elapsed());
            }
        }
        let request = request.into();
        self.run(|b, s, h| {
            Box::pin(async move { b.ionflow_gateway_gateway().call_call(s, h, &request).await })
        })
        .await
    }

    /// A valid access token, from the cache when possible.
    pub async fn token(&self) -> Result<AccessToken, ConnectorError> {
        self.run(|b, s, h| {
            Box::pin(async move { b.ionflow_gateway_auth().connection().call_token(s, h).await })
        })
        .await
        .map(AccessToken::from)
    }

    pub async fn refresh(&self) -> Result<AccessToken, ConnectorError> {
        self.run(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_refresh(s, h)
                    .await
            })
        })
        .await
        .map(AccessToken::from)
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
    ) -> Result<AccessToken, ConnectorError> {
        self.run_first(|b, s, h| {
            Box::pin(async move {
                b.ionflow_gateway_auth()
                    .connection()
                    .call_complete_authorization(s, h, &code, &state)
                    .await
            })
        })
        .await
        .map(AccessToken::from)
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

/// A store for one connector instance: its own memory limit, a deadline
/// trap, and host state with an empty allow-list until a file is known.
fn new_store(
    engine: &Engine,
    transport: HttpTransport,
    tokens: Arc<dyn TokenStore>,
    limits: &SandboxLimits,
    name: &Arc<str>,
    stats: &Arc<ConnectionStats>,
) -> Store<HostState> {
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .instances(4)
        // Rust guests abort on a failed allocation with a bare
        // `unreachable`; trapping at the growth itself names the cause.
        .trap_on_grow_failure(true)
        .build();
    let mut store = Store::new(
        engine,
        HostState::new(transport, tokens, name.clone(), stats.clone(), store_limits),
    );
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store
}

/// Runs `auth.inspect` in a throwaway instance. Its allow-list stays empty,
/// so nothing it does can reach the network.
pub(crate) async fn inspect(
    pre: ConnectorPre<HostState>,
    engine: &Engine,
    transport: HttpTransport,
    tokens: Arc<dyn TokenStore>,
    limits: SandboxLimits,
    name: &str,
    ionapi_json: &str,
) -> Result<Inspection, ConnectorError> {
    let name: Arc<str> = name.into();
    let stats = Arc::new(ConnectionStats::default());
    let mut store = new_store(engine, transport, tokens, &limits, &name, &stats);
    let deadline = limits.deadline(None);
    store.set_epoch_deadline(epoch_ticks(deadline));
    let trap = |e| ConnectorError::trap(e, &name, &limits, deadline);
    let bindings = pre.instantiate_async(&mut store).await.map_err(trap)?;
    bindings
        .ionflow_gateway_auth()
        .call_inspect(&mut store, ionapi_json)
        .await
        .map_err(trap)
}
