//! The wasmtime engine, the connector component and its precompile cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{Connector, ConnectorPre};
use super::capabilities::{HostState, HttpTransport, TokenStore};
use super::connection::{self, Connection, SandboxLimits};
use super::{ConnectionOptions, ConnectorError, Inspection};

/// The connector component built from `connector/` by `build.rs`.
pub static EMBEDDED_CONNECTOR: &[u8] = include_bytes!(env!("IONFLOW_CONNECTOR_WASM"));

/// How often the epoch advances; guest deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Everything needed to open connections: compiled once per process.
pub struct Runtime {
    engine: Engine,
    pre: ConnectorPre<HostState>,
    transport: HttpTransport,
    tokens: Arc<dyn TokenStore>,
    limits: SandboxLimits,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Compiles the embedded connector, or loads it from `cache_dir` when a
    /// precompiled copy for this exact component and engine exists.
    pub fn new(tokens: Arc<dyn TokenStore>, cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        Self::with_component(EMBEDDED_CONNECTOR, tokens, cache_dir)
    }

    /// Runs another component of the same world in place of the embedded
    /// connector (tests use this to load misbehaving fixture guests).
    pub fn with_component(
        wasm: &[u8],
        tokens: Arc<dyn TokenStore>,
        cache_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut config = Config::new();
        // Every guest call runs against a deadline, so a runaway connector
        // fails its call instead of hanging the host.
        config.epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("could not create the wasmtime engine")?;
        let component = load_component(&engine, wasm, cache_dir)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Connector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        let pre = ConnectorPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .context(
                    "the connector component does not fit the ionflow:gateway/connector world",
                )?,
        )?;
        Ok(Runtime {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            pre,
            transport: HttpTransport::new()?,
            tokens,
            limits: SandboxLimits::default(),
        })
    }

    /// Replaces the bounds applied to every connection opened from now on.
    pub fn with_limits(mut self, limits: SandboxLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn transport(&self) -> &HttpTransport {
        &self.transport
    }

    /// Opens a connection from `.ionapi` JSON. No network call happens here.
    pub async fn open(
        &self,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
    ) -> Result<Connection, ConnectorError> {
        self.open_pool(name, ionapi_json, options, 1).await
    }

    /// Opens a connection served by `instances` connector instances, for
    /// calls in parallel. They share tokens through the token store.
    pub async fn open_pool(
        &self,
        name: &str,
        ionapi_json: &str,
        options: ConnectionOptions,
        instances: usize,
    ) -> Result<Connection, ConnectorError> {
        Connection::open(
            self.pre.clone(),
            &self.engine,
            self.transport.clone(),
            self.tokens.clone(),
            self.limits,
            name,
            ionapi_json,
            options,
            instances,
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
            self.pre.clone(),
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

/// Compiling the component takes a few hundred milliseconds; a precompiled
/// artifact loads in about one. The file name carries the digest of the
/// component and of the engine's settings, so a changed connector or
/// wasmtime never loads a stale artifact.
fn load_component(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> anyhow::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm)
            .map_err(anyhow::Error::from)
            .context("could not compile the connector component");
    };
    let path = cache_path(engine, wasm, dir);
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` below for
        // this exact component and engine (its name says so) in the user's
        // own cache directory; deserializing trusts that it was not tampered with.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::debug!(path = %path.display(), "ignoring unusable precompiled connector: {e:#}")
            }
        }
    }
    let component = Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .context("could not compile the connector component")?;
    if let Err(e) = store_artifact(&component, &path) {
        tracing::debug!(path = %path.display(), "could not cache the precompiled connector: {e:#}");
    }
    Ok(component)
}

fn cache_path(engine: &Engine, wasm: &[u8], dir: &Path) -> PathBuf {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let digest = Sha256::new()
        .chain_update(wasm)
        .chain_update(engine_hash.finish().to_le_bytes())
        .finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("connector-{hex}.cwasm"))
}

fn store_artifact(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
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
