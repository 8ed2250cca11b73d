//! The TLS crypto provider of every HTTP client in the process.
//!
//! reqwest is built with `rustls-no-provider` and rustls with `ring`:
//! rustls's default provider, aws-lc-rs, is a large C library whose build
//! was the longest single step of a clean build (BENCHMARKS.md, "Build").
//! Without a provider reqwest panics when a client is built, so every client
//! of the workspace comes from [`client_builder`], which installs ring's
//! provider first; clippy's `disallowed-methods` (clippy.toml) refuses
//! reqwest's own constructors everywhere else.

use std::sync::Once;

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
}
