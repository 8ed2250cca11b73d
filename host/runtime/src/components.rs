//! Connector components: compiling them (through a precompile cache keyed by
//! the component's digest) and checking that they implement the
//! `ionflow:gateway/connector` world before a connection uses them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use super::bindings::ConnectorPre;
use super::capabilities::HostState;
use super::private_files;

/// The world every connector component must implement.
pub const WORLD: &str = "ionflow:gateway/connector@0.1.0";

/// SHA-256 of a component's bytes: the identity under which it is compiled,
/// cached on disk and shared between connections.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentDigest([u8; 32]);

impl ComponentDigest {
    pub fn of(wasm: &[u8]) -> Self {
        ComponentDigest(Sha256::digest(wasm).into())
    }

    /// The first 12 hex digits, for logs: enough to tell components apart,
    /// and not the 64-digit shape that log scanners treat as a leaked token.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl fmt::Display for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// A connector component compiled and checked against the world, ready to
/// instantiate once per connection instance. Cheap to clone.
#[derive(Clone)]
pub struct ConnectorComponent {
    pub(crate) pre: ConnectorPre<HostState>,
    digest: ComponentDigest,
    origin: Arc<str>,
}

impl ConnectorComponent {
    pub fn digest(&self) -> ComponentDigest {
        self.digest
    }

    /// Where the component came from: a file path, or `embedded`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for ConnectorComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorComponent")
            .field("origin", &self.origin)
            .field("digest", &self.digest)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error(
        "cannot read the connector component {}: {cause}; check the path (relative paths \
         in a pipeline resolve against the pipeline file's folder)",
        path.display()
    )]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{origin} is not a WebAssembly component ({detail}); build the connector for \
         wasm32-wasip2 or write one with `ionflow connector export`"
    )]
    NotAComponent { origin: String, detail: String },
    #[error("{origin} does not implement the {WORLD} world: {}", problems.join("; "))]
    WrongWorld {
        origin: String,
        problems: Vec<String>,
    },
}

/// What the world requires a component to export: each interface with the
/// names of its functions and resources (`connection`), taken from
/// the embedded connector, which is the reference implementation.
#[derive(Debug, Clone)]
pub(crate) struct RequiredExports(Vec<(String, Vec<String>)>);

impl RequiredExports {
    pub fn of(engine: &Engine, reference: &Component) -> Self {
        let ty = reference.component_type();
        RequiredExports(
            ty.exports(engine)
                .filter_map(|(name, item)| match item.ty {
                    ComponentItem::ComponentInstance(instance) => Some((
                        name.to_owned(),
                        // Functions and resources; the record and variant
                        // types follow from their signatures.
                        instance
                            .exports(engine)
                            .filter(|(_, e)| {
                                matches!(
                                    e.ty,
                                    ComponentItem::ComponentFunc(_) | ComponentItem::Resource(_)
                                )
                            })
                            .map(|(item, _)| item.to_owned())
                            .collect(),
                    )),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Every required export the candidate lacks, each named.
    fn missing_from(&self, engine: &Engine, candidate: &Component) -> Vec<String> {
        let ty = candidate.component_type();
        let mut problems = Vec::new();
        for (interface, items) in &self.0 {
            match ty.get_export(engine, interface).map(|e| e.ty) {
                Some(ComponentItem::ComponentInstance(instance)) => {
                    let missing: Vec<&str> = items
                        .iter()
                        .filter(|item| instance.get_export(engine, item).is_none())
                        .map(String::as_str)
                        .collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "its export `{interface}` lacks {}",
                            missing.join(", ")
                        ));
                    }
                }
                Some(_) => problems.push(format!("its export `{interface}` is not an interface")),
                None => problems.push(format!(
                    "it does not export `{interface}` ({})",
                    items.join(", ")
                )),
            }
        }
        problems
    }
}

/// Compiles `wasm`, or loads its precompiled artifact from `cache_dir`.
pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    origin: &str,
    cache_dir: Option<&Path>,
) -> Result<(Component, ComponentDigest), ComponentError> {
    let digest = ComponentDigest::of(wasm);
    let component = compile_cached(engine, wasm, digest, cache_dir).map_err(|e| {
        ComponentError::NotAComponent {
            origin: origin.to_owned(),
            // wasmtime's parser spreads its findings over several lines.
            detail: format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        }
    })?;
    Ok((component, digest))
}

/// Checks a compiled component against the world and links it with the
/// host's capabilities.
pub(crate) fn link(
    engine: &Engine,
    linker: &Linker<HostState>,
    required: &RequiredExports,
    (component, digest): (Component, ComponentDigest),
    origin: &str,
) -> Result<ConnectorComponent, ComponentError> {
    let wrong_world = |problems: Vec<String>| ComponentError::WrongWorld {
        origin: origin.to_owned(),
        problems,
    };
    let missing = required.missing_from(engine, &component);
    if !missing.is_empty() {
        return Err(wrong_world(missing));
    }
    // Names are all there; wasmtime now checks imports it cannot satisfy and
    // every function's signature, and its message names the offending item.
    let pre = linker
        .instantiate_pre(&component)
        .and_then(ConnectorPre::new)
        .map_err(|e| wrong_world(vec![format!("{e:#}")]))?;
    tracing::debug!(origin, digest = %digest.short(), "connector component ready");
    Ok(ConnectorComponent {
        pre,
        digest,
        origin: origin.into(),
    })
}

/// Compiling a component takes a few hundred milliseconds; a precompiled
/// artifact loads in about one. The file name carries the component's digest
/// and the engine's settings, so a changed component or wasmtime never loads
/// a stale artifact, and several components are cached side by side.
///
/// wasmtime runs a precompiled artifact's machine code as it is, so only an
/// artifact this process can vouch for is loaded: in a 0700 folder of this
/// user's, owned by this user, writable by nobody else, and with the
/// SHA-256 its writer recorded beside it (`.sha256`, 0600). Anything else is
/// compiled again and replaced.
fn compile_cached(
    engine: &Engine,
    wasm: &[u8],
    digest: ComponentDigest,
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm);
    };
    if let Err(why) = usable_cache_dir(dir) {
        tracing::warn!(dir = %dir.display(), "not using the connector cache: {why}");
        return Component::new(engine, wasm);
    }
    private_files::remove_leftovers(dir, private_files::temp_file_writer);
    let key = CacheKey::new(engine, digest);
    let path = key.artifact_path(dir);
    match load_artifact(engine, &key, &path) {
        Ok(Some(component)) => return Ok(component),
        Ok(None) => {}
        Err(Refusal::Unrecorded) => {
            tracing::debug!(path = %path.display(), "the precompiled connector has no recorded digest; compiling it again");
        }
        Err(Refusal::Untrusted(why)) => {
            tracing::warn!(path = %path.display(), "not loading the precompiled connector: {why}; compiling it again");
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store_artifact(&component, &key, &path) {
        tracing::debug!(path = %path.display(), "could not cache the precompiled connector: {e:#}");
    }
    Ok(component)
}

/// The artifact of `digest` in `dir`, when one is there that this process
/// would load (owned, private, matching its recorded SHA-256); for
/// `ionflow connector precompile`, which must say whether it worked.
pub(crate) fn trusted_artifact(
    engine: &Engine,
    digest: ComponentDigest,
    dir: &Path,
) -> Result<PathBuf, String> {
    let key = CacheKey::new(engine, digest);
    let path = key.artifact_path(dir);
    match load_artifact(engine, &key, &path) {
        Ok(Some(_)) => Ok(path),
        Ok(None) => Err(format!("{} was not written", path.display())),
        Err(Refusal::Unrecorded) => Err(format!("{} has no recorded digest", path.display())),
        Err(Refusal::Untrusted(why)) => Err(format!("{}: {why}", path.display())),
    }
}

/// The largest artifact read back; the embedded connector's is about 1 MiB.
const MAX_ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;
/// A digest record is three short lines.
const MAX_RECORD_BYTES: u64 = 4096;

/// What an artifact is the compilation of: a component, by an engine.
struct CacheKey {
    component: ComponentDigest,
    engine: u64,
}

impl CacheKey {
    fn new(engine: &Engine, component: ComponentDigest) -> Self {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        CacheKey {
            component,
            engine: engine_hash.finish(),
        }
    }

    fn artifact_path(&self, dir: &Path) -> PathBuf {
        let key = Sha256::new()
            .chain_update(self.component.0)
            .chain_update(self.engine.to_le_bytes())
            .finalize();
        let hex: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
        dir.join(format!("connector-{hex}.cwasm"))
    }

    /// The record written beside an artifact: what it was compiled from,
    /// and the SHA-256 of its bytes.
    fn record(&self, artifact: &[u8]) -> String {
        format!(
            "component {}\nengine {:016x}\nartifact {}\n",
            self.component,
            self.engine,
            ComponentDigest::of(artifact)
        )
    }
}

fn record_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("sha256")
}

/// Why a cached artifact is not loaded.
enum Refusal {
    /// No digest was recorded for it (an older ionflow wrote it).
    Unrecorded,
    /// It may not be what this user's ionflow wrote.
    Untrusted(String),
}

/// The cache folder must be this user's alone: anyone else who may write
/// into it could swap an artifact.
fn usable_cache_dir(dir: &Path) -> Result<(), String> {
    private_files::create_dir(dir).map_err(|e| format!("cannot create it ({e})"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
        if meta.uid() != private_files::current_uid() {
            return Err(format!(
                "it belongs to user id {}, not to this user; set IONFLOW_CACHE_DIR to a folder of your own",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "others may write into it (mode {:04o}); run `chmod 700 {}`",
                meta.mode() & 0o7777,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Reads a file of this user's that nobody else may write, without
/// following a symbolic link, up to `max` bytes.
fn read_trusted(path: &Path, max: u64) -> Result<Option<Vec<u8>>, Refusal> {
    use std::io::Read as _;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Refusal::Untrusted(format!("cannot open it ({e})"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| Refusal::Untrusted(e.to_string()))?;
    if !meta.is_file() {
        return Err(Refusal::Untrusted("it is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if meta.uid() != private_files::current_uid() {
            return Err(Refusal::Untrusted(format!(
                "{} belongs to user id {}, not to this user",
                path.display(),
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Refusal::Untrusted(format!(
                "others may write {} (mode {:04o})",
                path.display(),
                meta.mode() & 0o7777
            )));
        }
    }
    if meta.len() > max {
        return Err(Refusal::Untrusted(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Refusal::Untrusted(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(Refusal::Untrusted(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

/// The artifact at `path` when it passes every check; `Ok(None)` when none is cached.
fn load_artifact(
    engine: &Engine,
    key: &CacheKey,
    path: &Path,
) -> Result<Option<Component>, Refusal> {
    let Some(bytes) = read_trusted(path, MAX_ARTIFACT_BYTES)? else {
        return Ok(None);
    };
    let record = read_trusted(&record_path(path), MAX_RECORD_BYTES)?.ok_or(Refusal::Unrecorded)?;
    if record != key.record(&bytes).as_bytes() {
        return Err(Refusal::Untrusted(
            "its SHA-256 is not the one recorded when it was written (the file was changed \
             or only partly written)"
                .into(),
        ));
    }
    // SAFETY: wasmtime trusts a serialized artifact's code. These bytes are
    // the ones this user's ionflow serialized for this exact component and
    // engine: the recorded SHA-256 matches, and both files are this user's,
    // writable by no one else, in a folder no one else may write.
    match unsafe { Component::deserialize(engine, &bytes) } {
        Ok(component) => Ok(Some(component)),
        Err(e) => Err(Refusal::Untrusted(format!(
            "wasmtime cannot load it ({e:#})"
        ))),
    }
}

/// Writes the artifact and its digest record, each 0600, each under a
/// temporary name renamed into place, so that no reader sees half a file.
fn store_artifact(component: &Component, key: &CacheKey, path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let bytes = component.serialize()?;
    let put = |target: &Path, contents: &[u8]| -> anyhow::Result<()> {
        let tmp = private_files::temp_path(target);
        let written = (|| {
            let mut file = private_files::create_new(&tmp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            std::fs::rename(&tmp, target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    };
    put(path, &bytes)?;
    put(&record_path(path), key.record(&bytes).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::contract::WIT_PACKAGE;
    use super::WORLD;

    #[test]
    fn world_names_the_embedded_wit_package() {
        assert_eq!(WORLD, WIT_PACKAGE.replace('@', "/connector@"));
    }
}
