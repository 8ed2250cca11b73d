//! The wasmtime engine and the connector components it runs: the embedded
//! one by default, and any other component implementing the same world,
//! compiled once per digest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::Connector;
use super::bindings::exports::ionflow::gateway::auth::{Inspection, Options as ConnectionOptions};
use super::capabilities::{HostState, HttpTransport, TokenStore};
use super::components::{
    self, ComponentDigest, ComponentError, ConnectorComponent, RequiredExports,
};
use super::connection::{self, Connection};
use super::error::ConnectorError;
use super::limits::{EPOCH_TICK, SandboxLimits};
use super::observe::Observer;

/// The connector component built from `connector/` by `build.rs`.
pub static EMBEDDED_CONNECTOR: &[u8] = include_bytes!(env!("IONFLOW_CONNECTOR_WASM"));

/// Everything needed to open connections: one per process. Connections may
/// run different connector components; each is compiled and linked once.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    required: RequiredExports,
    cache_dir: Option<PathBuf>,
    /// The embedded connector unless `with_component` chose another.
    default: ConnectorComponent,
    /// Components loaded from files, by digest: two connections naming the
    /// same bytes share one compiled component.
    loaded: Mutex<HashMap<ComponentDigest, ConnectorComponent>>,
    transport: HttpTransport,
    tokens: Arc<dyn TokenStore>,
    limits: SandboxLimits,
    observer: Option<Arc<dyn Observer>>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Compiles the embedded connector, or loads it from `cache_dir` when a
    /// precompiled copy for this exact component and engine exists.
    pub fn new(tokens: Arc<dyn TokenStore>, cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        Self::with_component(EMBEDDED_CONNECTOR, tokens, cache_dir)
    }

    /// Makes `wasm`, another component of the same world, the default in
    /// place of the embedded connector (tests use this to load misbehaving
    /// fixture guests).
    pub fn with_component(
        wasm: &[u8],
        tokens: Arc<dyn TokenStore>,
        cache_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let engine = new_engine()?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Connector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        let compiled = components::compile(&engine, EMBEDDED_CONNECTOR, "embedded", cache_dir)?;
        let required = RequiredExports::of(&engine, &compiled.0);
        let embedded = components::link(&engine, &linker, &required, compiled, "embedded")
            .context("the embedded connector does not fit this build of ionflow")?;
        let default = if wasm == EMBEDDED_CONNECTOR {
            embedded
        } else {
            let compiled = components::compile(&engine, wasm, "the default component", cache_dir)?;
            components::link(
                &engine,
                &linker,
                &required,
                compiled,
                "the default component",
            )?
        };
        Ok(Runtime {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            required,
            cache_dir: cache_dir.map(Path::to_path_buf),
            default,
            loaded: Mutex::new(HashMap::new()),
            transport: HttpTransport::new(),
            tokens,
            limits: SandboxLimits::default(),
            observer: None,
        })
    }

    /// Replaces the bounds applied to every connection opened from now on.
    pub fn with_limits(mut self, limits: SandboxLimits) -> Self {
        self.limits = limits;
        self.transport = self
            .transport
            .with_max_response_bytes(limits.response_bytes);
        self
    }

    /// The bounds connections are opened with.
    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// Reports what every connection opened from now on does (exchanges,
    /// rate-limit waits) to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn transport(&self) -> &HttpTransport {
        &self.transport
    }

    /// The component used when a connection names none: the embedded connector.
    pub fn default_connector(&self) -> &ConnectorComponent {
        &self.default
    }

    /// Loads a connector component from a file: a newer build of the
    /// connector or a third-party one implementing the same world.
    pub fn load_connector_file(&self, path: &Path) -> Result<ConnectorComponent, ComponentError> {
        let wasm = std::fs::read(path).map_err(|cause| ComponentError::Read {
            path: path.to_owned(),
            cause,
        })?;
        self.load_connector(&wasm, &path.display().to_string())
    }

    /// Compiles (or finds, by digest) a connector component and checks it
    /// against the world. `origin` names it in errors and logs.
    pub fn load_connector(
        &self,
        wasm: &[u8],
        origin: &str,
    ) -> Result<ConnectorComponent, ComponentError> {
        let digest = ComponentDigest::of(wasm);
        if digest == self.default.digest() {
            return Ok(self.default.clone());
        }
        if let Some(known) = self.loaded().get(&digest) {
            return Ok(known.clone());
        }
        let compiled = components::compile(&self.engine, wasm, origin, self.cache_dir.as_deref())?;
        let component =
            components::link(&self.engine, &self.linker, &self.required, compiled, origin)?;
        self.loaded().insert(digest, component.clone());
        Ok(component)
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<ComponentDigest, ConnectorComponent>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a connection from `.ionapi` JSON on the default connector.
    /// No network call happens here.
    pub async fn open(
        &self,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
    ) -> Result<Connection, ConnectorError> {
        self.open_pool(name, ionapi_json, options, 1).await
    }

    /// Opens a connection served by `instances` instances of the default
    /// connector, for calls in parallel. They share tokens through the token store.
    pub async fn open_pool(
        &self,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
        instances: usize,
    ) -> Result<Connection, ConnectorError> {
        self.open_with(&self.default, name, ionapi_json, options, instances)
            .await
    }

    /// Opens a connection on `connector`, one of this runtime's components.
    pub async fn open_with(
        &self,
        connector: &ConnectorComponent,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
        instances: usize,
    ) -> Result<Connection, ConnectorError> {
        Connection::open(
            connector.pre.clone(),
            &self.engine,
            self.transport.clone(),
            self.tokens.clone(),
            self.limits,
            name,
            ionapi_json,
            options,
            instances,
            self.observer.clone(),
        )
        .await
    }

    /// Checks `.ionapi` JSON in the sandbox without opening a connection:
    /// the connector's findings and, when the file opens, its description.
    pub async fn inspect(
        &self,
        name: &str,
        ionapi_json: &str,
    ) -> Result<Inspection, ConnectorError> {
        connection::inspect(
            self.default.pre.clone(),
            &self.engine,
            self.transport.clone(),
            self.tokens.clone(),
            self.limits,
            name,
            ionapi_json,
        )
        .await
    }
}

/// The engine every runtime uses: its settings decide which precompiled
/// artifacts it accepts (they are part of the cache key).
fn new_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    // Every guest call runs against a deadline, so a runaway connector
    // fails its call instead of hanging the host.
    config.epoch_interruption(true);
    // The connector is called one export at a time per store; the
    // concurrent (component-model-async) call path costs about 2 µs
    // more per export call and is not needed (BENCHMARKS.md, P1).
    config.concurrency_support(false);
    // Code for the target's baseline CPU rather than this machine's
    // features: an artifact precompiled where an image is built then loads
    // on any machine of the same architecture (the features are part of the
    // cache key). The connector uses no SIMD, so it loses nothing by it.
    config
        .target(env!("IONFLOW_HOST_TARGET"))
        .map_err(anyhow::Error::from)
        .context("could not configure the wasmtime target")?;
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("could not create the wasmtime engine")
}

/// Compiles the embedded connector into `cache_dir` (`ionflow connector
/// precompile`), so that every later start, in this container image for
/// example, loads it instead of compiling. Returns the artifact's path.
pub fn precompile_embedded(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let engine = new_engine()?;
    let (component, digest) =
        components::compile(&engine, EMBEDDED_CONNECTOR, "embedded", Some(cache_dir))?;
    drop(component);
    // The cache never fails a run that cannot write it; this command exists
    // to write it, so check that the artifact is there and would be loaded.
    let path = components::trusted_artifact(&engine, digest, cache_dir).map_err(|why| {
        anyhow::anyhow!(
            "could not write the precompiled connector ({why}): check that {} exists or can be \
             created, is yours and is writable",
            cache_dir.display()
        )
    })?;
    Ok(path)
}

/// Advances the engine's epoch in the background for as long as the runtime lives.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("ionflow-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("could not start the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
