//! The TLS crypto provider of every HTTP client in the process.
//!
//! reqwest is built with `rustls-no-provider` and rustls with `ring`:
//! rustls's default provider, aws-lc-rs, is a large C library whose build
//! was the longest single step of a clean build (BENCHMARKS.md, "Build").
//! Without a provider reqwest panics when a client is built, so every client
//! of the workspace comes from [`client_builder`], which installs ring's
//! provider first; clippy's `disallowed-methods` (clippy.toml) refuses
//! reqwest's own constructors everywhere else.

use std::sync::{Arc, Once, OnceLock};

/// Makes ring the process's default rustls provider, once. A provider the
/// embedding program installed before stays in place.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means a provider is already installed: the embedder's choice stands.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `reqwest::Client::builder()` once a crypto provider is installed.
#[allow(clippy::disallowed_methods)]
pub fn client_builder() -> reqwest::ClientBuilder {
    install();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults, for tests and simple callers.
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("a reqwest client with default settings builds once a provider is installed")
}

/// A client that could not be built (no usable root certificate on the
/// system, for one); reqwest's message names no secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// A reqwest client built at its first use and shared by its clones.
///
/// Building a client loads the system's root certificates (rustls's
/// platform verifier reads the CA bundle, and with `SSL_CERT_DIR` every file
/// of that folder: about 5 ms a process, BENCHMARKS.md P6), and fails on a
/// system that has none. A run that makes no HTTP call (a file-to-file
/// pipeline, `ionflow test`) or never uses one of its clients (an M3
/// pipeline's plain-HTTP client) pays nothing and works without them.
#[derive(Clone)]
pub struct LazyClient {
    cell: Arc<OnceLock<Result<reqwest::Client, ClientBuildError>>>,
    configure: fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
}

impl LazyClient {
    /// `configure` adds this client's settings to [`client_builder`]'s.
    pub fn new(configure: fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder) -> Self {
        LazyClient {
            cell: Arc::default(),
            configure,
        }
    }

    /// The client, built on the first call; a failed build is kept, so the
    /// error is the same on every call and nothing is retried per request.
    pub fn get(&self) -> Result<&reqwest::Client, ClientBuildError> {
        self.cell
            .get_or_init(|| {
                (self.configure)(client_builder())
                    .build()
                    .map_err(|e| ClientBuildError(chain(&e)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Whether the client was built (for tests).
    pub fn is_built(&self) -> bool {
        self.cell.get().is_some()
    }
}

/// reqwest says only "builder error"; the cause (e.g. "No CA certificates
/// were loaded from the system") is in its sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_builds_and_the_provider_is_ring() {
        super::client();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            provider.cipher_suites.len(),
            ring.cipher_suites.len(),
            "the installed provider is ring's"
        );
    }

    #[test]
    fn a_lazy_client_is_built_once_at_first_use_and_shared_by_clones() {
        let lazy = super::LazyClient::new(|b| b.user_agent("test"));
        let clone = lazy.clone();
        assert!(!lazy.is_built(), "nothing is built before the first use");
        let first: *const reqwest::Client = clone.get().unwrap();
        assert!(lazy.is_built(), "a clone's first use builds it for all");
        assert_eq!(first, lazy.get().unwrap() as *const _, "one client");
    }
}
