//! A local ION API Gateway simulator: OAuth endpoints on the `pu` host and
//! M3, Mongoose IDO, ION Messaging and IFS endpoints on the `iu` host, all on
//! one loopback socket. Pipelines can be developed against it offline, and
//! the end-to-end tests use it as the gateway.
//!
//! `pu` and `iu` deliberately name the same socket through two host names
//! (`localhost` and `127.0.0.1`), so a client that mixes them up gets a 404
//! here instead of a surprise in production.
//!
//! Public shape followed: the ION API Gateway as an authorized app's
//! `.ionapi` file describes it (`pu` plus `oa`/`ot`/`or` for OAuth, `iu` plus
//! `/{ti}/` plus the product's own path for business calls), and that file
//! in the key order Infor writes it. Each module names the API it imitates.

mod catalogue;
mod codec;
mod compass;
mod control;
mod counters;
mod credentials;
mod datalake;
mod faults;
mod fixtures;
mod gateway;
mod ido;
mod ion;
mod login;
mod m3;
mod multipart;
mod oauth;
mod proxy;
mod scopes;
mod users;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{any, get, post};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use counters::{Counters, TokenRequestCounts};
pub use proxy::{Answer, Forward, Refusal, Upstream};

use catalogue::Catalogue;
use counters::CounterStore;
use credentials::Credentials;
use ion::MessageLog;
use oauth::TokenRegistry;

/// The gateway's buffered-policy payload limit.
const BODY_LIMIT: usize = 10 * 1024 * 1024;
/// A catalogue this large already takes noticeable memory and start-up time.
const MAX_ITEMS: usize = 1_000_000;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Tenant id: the `.ionapi` `ti` and first path segment of every URL
    #[arg(long, default_value = "ACME_TST")]
    pub tenant: String,
    /// Lifetime of issued access tokens
    #[arg(long, default_value_t = 7200)]
    pub token_ttl_secs: u64,
    /// Whether the authorized app issues refresh tokens
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub issue_refresh_tokens: bool,
    /// Number of items in the M3/IDO catalogue
    #[arg(long, default_value_t = 2500)]
    pub items: usize,
    /// API suites (first path segment after the tenant) the authorized app
    /// has no scope for: calls below them get 403
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_UNSCOPED_SUITE)]
    pub unscoped_suites: Vec<String>,
    /// The gateway's quota policy: at most this many business calls per
    /// `--quota-window-secs`, then 429 with Retry-After (none by default)
    #[arg(long)]
    pub quota_requests: Option<u32>,
    #[arg(long, default_value_t = 60)]
    pub quota_window_secs: u64,
    /// Delay every business answer by this many milliseconds
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    /// A folder of fixture files (*.toml) declaring your own M3 programs,
    /// IDO collections and gateway paths (docs/PIPELINES.md, "Fixtures")
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<std::path::PathBuf>,
}

/// Document Management is a suite many integration apps are not granted, so
/// calls to it show what a missing scope looks like out of the box.
const DEFAULT_UNSCOPED_SUITE: &str = "IDM";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            port: 0,
            tenant: "ACME_TST".to_owned(),
            token_ttl_secs: 7200,
            issue_refresh_tokens: true,
            items: 2500,
            unscoped_suites: vec![DEFAULT_UNSCOPED_SUITE.to_owned()],
            quota_requests: None,
            quota_window_secs: 60,
            slow_ms: 0,
            fixtures: None,
        }
    }
}

impl SimConfig {
    fn validate(&self) -> anyhow::Result<()> {
        // The tenant becomes a path segment and a router prefix.
        let tenant_ok = !self.tenant.is_empty()
            && self.tenant.len() <= 64
            && self
                .tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !tenant_ok {
            bail!("tenant must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'");
        }
        if self.items > MAX_ITEMS {
            bail!("items must be at most {MAX_ITEMS}");
        }
        Ok(())
    }
}

/// Everything the handlers share.
pub(crate) struct SimState {
    config: SimConfig,
    port: u16,
    credentials: Credentials,
    tokens: Mutex<TokenRegistry>,
    counters: CounterStore,
    catalogue: RwLock<Catalogue>,
    messages: Mutex<MessageLog>,
    compass: Mutex<compass::Jobs>,
    throttle: Mutex<control::Throttle>,
    faults: Mutex<faults::Faults>,
    /// Faults of the token endpoint (`/__sim/token-faults`).
    token_faults: Mutex<faults::Faults>,
    quota: Mutex<Option<faults::Quota>>,
    logins: Mutex<login::LoginRegistry>,
    /// Fault: answer every business call with 401, however good the token.
    reject_tokens: std::sync::atomic::AtomicBool,
    /// The user's programs, collections and paths (`--fixtures DIR`).
    fixtures: RwLock<fixtures::Fixtures>,
    /// Record mode: business calls go to this upstream and are recorded.
    recording: Option<proxy::Recording>,
}

impl SimState {
    fn new(
        config: SimConfig,
        port: u16,
        fixtures: fixtures::Fixtures,
        recording: Option<proxy::Recording>,
    ) -> SimState {
        SimState {
            fixtures: RwLock::new(fixtures),
            recording,
            tokens: Mutex::new(TokenRegistry::new(
                config.token_ttl_secs,
                config.issue_refresh_tokens,
            )),
            credentials: Credentials::generate(&config.tenant),
            counters: CounterStore::default(),
            catalogue: RwLock::new(Catalogue::generate(config.items)),
            messages: Mutex::new(MessageLog::default()),
            compass: Mutex::new(compass::Jobs::default()),
            throttle: Mutex::new(control::Throttle::default()),
            faults: Mutex::new(faults::Faults::default()),
            token_faults: Mutex::new(faults::Faults::default()),
            quota: Mutex::new(config.quota_requests.map(|requests| {
                faults::Quota::new(
                    requests,
                    std::time::Duration::from_secs(config.quota_window_secs.max(1)),
                )
            })),
            logins: Mutex::new(login::LoginRegistry::default()),
            reject_tokens: std::sync::atomic::AtomicBool::new(false),
            port,
            config,
        }
    }

    /// The Host header OAuth requests must carry (from `pu`).
    fn auth_host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The Host header business requests must carry (from `iu`).
    fn api_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pu(&self) -> String {
        format!("http://{}/{}/as/", self.auth_host(), self.config.tenant)
    }

    fn iu(&self) -> String {
        format!("http://{}", self.api_host())
    }
}

/// A handler that panicked while holding a lock must not take the whole
/// simulator down with it; the data behind these locks stays consistent
/// because every update is a single step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(PoisonError::into_inner)
}

fn router(state: Arc<SimState>) -> Router {
    let auth = Router::new()
        .route("/as/token.oauth2", post(oauth::token))
        .route("/as/authorization.oauth2", get(login::authorize))
        .route("/as/revoke_token.oauth2", post(oauth::revoke))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            gateway::auth_host_only,
        ));
    // Layers run outside-in in reverse order of addition: the host check
    // comes first, so a misdirected call gets the 404 that explains it.
    let business = if state.recording.is_some() {
        // Record mode: every business path goes to the upstream, whose
        // gateway decides scopes; this one still checks its own tokens.
        Router::new().route("/{suite}/{*rest}", any(proxy::forward))
    } else {
        served().route_layer(middleware::from_fn_with_state(
            state.clone(),
            scopes::require_scope,
        ))
    }
    .route_layer(middleware::from_fn_with_state(
        state.clone(),
        gateway::require_bearer,
    ))
    .route_layer(middleware::from_fn_with_state(
        state.clone(),
        gateway::business_host_only,
    ));
    Router::new()
        .nest(&format!("/{}", state.config.tenant), auth.merge(business))
        .nest("/__sim", control::router())
        .fallback(gateway::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gateway::log_requests,
        ))
        .with_state(state)
}

/// The products this simulator serves itself (and the fixtures).
fn served() -> Router<Arc<SimState>> {
    Router::new()
        .route("/ifsservice/usermgt/v2/users/me", get(users::me))
        .route(
            "/M3/m3api-rest/v2/execute/{program}/{transaction}",
            get(m3::execute_get),
        )
        .route("/M3/m3api-rest/v2/execute", post(m3::execute_bulk))
        .route(
            "/CSI/IDORequestService/ido/load/{ido}",
            get(ido::load_collection),
        )
        .route(
            "/CSI/IDORequestService/ido/update/{ido}",
            post(ido::update_collection),
        )
        .route(
            "/IONSERVICES/api/ion/messaging/service/v2/message",
            post(ion::send_message),
        )
        .route(
            "/IONSERVICES/api/ion/messaging/service/v2/multipartMessage",
            post(ion::send_multipart_message),
        )
        .route(
            "/IONSERVICES/datalakeapi/v1/payloads/list",
            get(datalake::list),
        )
        .route(
            "/IONSERVICES/datalakeapi/v1/payloads/streambyid",
            get(datalake::stream_by_id),
        )
        // Compass documents its paths with a trailing slash; clients that
        // normalise paths send them without one, and both are served.
        .route("/DATAFABRIC/compass/v2/jobs/", post(compass::submit))
        .route("/DATAFABRIC/compass/v2/jobs", post(compass::submit))
        .route(
            "/DATAFABRIC/compass/v2/jobs/{id}/status/",
            get(compass::status),
        )
        .route(
            "/DATAFABRIC/compass/v2/jobs/{id}/status",
            get(compass::status),
        )
        .route(
            "/DATAFABRIC/compass/v2/jobs/{id}/result/",
            get(compass::result),
        )
        .route(
            "/DATAFABRIC/compass/v2/jobs/{id}/result",
            get(compass::result),
        )
        // Any other product path: authenticated and scope-checked like the
        // rest, then a fixture's answer, or the 404 the gateway answers for
        // an API it does not route.
        .route("/{suite}/{*rest}", any(fixture_path))
}

/// A `[[paths]]` fixture's answer, or the gateway's 404.
async fn fixture_path(
    axum::extract::State(state): axum::extract::State<Arc<SimState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let answer = fixtures::path_answer(
        &read(&state.fixtures),
        request.method().as_str(),
        &path,
        &query,
    );
    match answer {
        Some(response) => response,
        None => gateway::not_found(request).await,
    }
}

/// The `.ionapi` file in the key order Infor writes it.
#[derive(Serialize)]
struct IonApiFile<'a> {
    ti: &'a str,
    cn: &'a str,
    dt: &'a str,
    ci: &'a str,
    cs: &'a str,
    iu: String,
    pu: String,
    oa: &'a str,
    ot: &'a str,
    or: &'a str,
    ev: &'a str,
    v: &'a str,
    saak: &'a str,
    sask: &'a str,
}

/// A running simulator. Dropping it stops the server abruptly; prefer
/// [`Simulator::shutdown`].
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .field("tenant", &self.state.config.tenant)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds 127.0.0.1:`port` and serves in a background task.
    pub async fn start(config: SimConfig) -> anyhow::Result<Simulator> {
        Simulator::launch(config, None).await
    }

    /// Record mode: like [`Simulator::start`] (its own tokens and
    /// `.ionapi` file), but every business call goes to `upstream`, and
    /// the answers are recorded as fixture files in `dir`, merged with
    /// those already there.
    pub async fn start_recording(
        config: SimConfig,
        dir: &Path,
        upstream: Arc<dyn Upstream>,
    ) -> anyhow::Result<Simulator> {
        if config.fixtures.is_some() {
            bail!(
                "--record and --fixtures cannot be used together: record first, then serve the \
                 folder with --fixtures"
            );
        }
        let identity = fixtures::Placeholders {
            iu: upstream.base_url().trim_end_matches('/').to_owned(),
            ti: upstream.tenant(),
        };
        let recorder = fixtures::record::Recorder::open(dir, identity)?;
        let recording = proxy::Recording {
            upstream,
            recorder: Arc::new(Mutex::new(recorder)),
        };
        Simulator::launch(config, Some(recording)).await
    }

    async fn launch(
        config: SimConfig,
        recording: Option<proxy::Recording>,
    ) -> anyhow::Result<Simulator> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))
            .await
            .with_context(|| format!("binding the simulator to 127.0.0.1:{}", config.port))?;
        let addr = listener.local_addr()?;
        // `{{iu}}` and `{{ti}}` in fixtures stand for this instance.
        let placeholders = fixtures::Placeholders {
            iu: format!("http://127.0.0.1:{}", addr.port()),
            ti: config.tenant.clone(),
        };
        let fixtures = match &config.fixtures {
            Some(dir) => fixtures::Fixtures::load_dir(dir, placeholders)?,
            None => fixtures::Fixtures::default(),
        };
        let state = Arc::new(SimState::new(config, addr.port(), fixtures, recording));
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                // A dropped sender means the same as an explicit stop.
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "ION API Gateway simulator failed");
            }
        });
        tracing::info!(
            %addr,
            tenant = %state.config.tenant,
            items = state.config.items,
            "ION API Gateway simulator listening"
        );
        Ok(Simulator {
            addr,
            state,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the `iu` of the matching `.ionapi` file.
    pub fn base_url(&self) -> String {
        self.state.iu()
    }

    /// The `.ionapi` file a client needs to reach this instance, pretty-printed.
    pub fn ionapi_json(&self) -> String {
        let state = &self.state;
        let file = IonApiFile {
            ti: &state.config.tenant,
            cn: "ionflow simulator",
            dt: "12",
            ci: &state.credentials.client_id,
            cs: &state.credentials.client_secret,
            iu: state.iu(),
            pu: state.pu(),
            oa: "authorization.oauth2",
            ot: "token.oauth2",
            or: "revoke_token.oauth2",
            ev: "U0000000000",
            v: "1.0",
            saak: &state.credentials.saak,
            sask: &state.credentials.sask,
        };
        // Serialising plain strings cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Writes [`Self::ionapi_json`] to `path`, creating parent directories;
    /// on Unix the file is readable by its owner only, as secrets should be.
    pub fn write_ionapi(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_private(path, self.ionapi_json().as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// One line per fixture served (`--fixtures`), for a person to check.
    pub fn fixtures(&self) -> Vec<String> {
        read(&self.state.fixtures).describe()
    }

    pub fn counters(&self) -> Counters {
        self.state.counters.snapshot()
    }

    /// Stops accepting connections and waits for in-flight requests; after
    /// a few seconds any remaining connections are cut.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
        {
            tracing::warn!("simulator connections did not close in time; cutting them");
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created; an existing file keeps
    // its old permissions unless they are tightened before the secrets land.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
