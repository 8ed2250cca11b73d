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
fn compile_cached(
    engine: &Engine,
    wasm: &[u8],
    digest: ComponentDigest,
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm);
    };
    let path = cache_path(engine, digest, dir);
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
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store_artifact(&component, &path) {
        tracing::debug!(path = %path.display(), "could not cache the precompiled connector: {e:#}");
    }
    Ok(component)
}

pub(crate) fn cache_path(engine: &Engine, digest: ComponentDigest, dir: &Path) -> PathBuf {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let key = Sha256::new()
        .chain_update(digest.0)
        .chain_update(engine_hash.finish().to_le_bytes())
        .finalize();
    let hex: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
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

#[cfg(test)]
mod tests {
    use super::super::contract::WIT_PACKAGE;
    use super::WORLD;

    #[test]
    fn world_names_the_embedded_wit_package() {
        assert_eq!(WORLD, WIT_PACKAGE.replace('@', "/connector@"));
    }
}
