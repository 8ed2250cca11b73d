//! HTTPS through the crypto provider `ionflow_runtime::tls` installs (ring):
//! a handshake with a loopback server whose certificate a test CA signed,
//! and the refusals that keep a client safe. Every other test talks plain
//! HTTP to the simulator, so this is what covers TLS itself.
//!
//! The fixtures (tests/fixtures/tls-*) are a P-256 CA and a server
//! certificate for `localhost` and 127.0.0.1, valid until 2126; the CA's key
//! was discarded after signing. They serve loopback tests only.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA: &[u8] = include_bytes!("fixtures/tls-ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("fixtures/tls-server.pem");
const SERVER_KEY: &[u8] = include_bytes!("fixtures/tls-server.key");

/// A one-answer-per-connection HTTPS server on 127.0.0.1; returns its port.
async fn https_server() -> u16 {
    let certs = CertificateDer::pem_slice_iter(SERVER_CERT)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (the client distrusts us) ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nover tls\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn test_ca() -> reqwest::Certificate {
    reqwest::Certificate::from_pem(CA).unwrap()
}

#[tokio::test]
async fn https_works_with_the_installed_provider() {
    let port = https_server().await;
    let client = ionflow_runtime::tls::client_builder()
        .tls_certs_only([test_ca()])
        .build()
        .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let response = client
            .get(format!("https://{host}:{port}/ping"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS to {host}: {e:?}"));
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "over tls\n");
    }
}

#[tokio::test]
async fn an_unknown_certificate_authority_is_refused() {
    let port = https_server().await;
    // The default verifier (the system's roots) does not know the test CA.
    let client = ionflow_runtime::tls::client();
    let error = client
        .get(format!("https://localhost:{port}/ping"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let port = https_server().await;
    let client = ionflow_runtime::tls::client_builder()
        .tls_certs_only([test_ca()])
        // Resolves to loopback, but the certificate names only localhost and 127.0.0.1.
        .resolve("gateway.example", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let error = client
        .get(format!("https://gateway.example:{port}/ping"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(
        format!("{error:?}").contains("NotValidForName"),
        "{error:?}"
    );
}
