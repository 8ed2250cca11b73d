//! The connector component loaded in-process by the host runtime, calling
//! the simulator: token reuse, 401 recovery, describe with masked secrets.

use std::sync::Arc;

use ionflow_runtime::capabilities::MemoryTokenStore;
use ionflow_runtime::{Runtime, default_options};

use crate::support::{file_secrets, simulator, users_me, workdir};

fn runtime() -> Runtime {
    Runtime::new(Arc::new(MemoryTokenStore::new()), None).unwrap()
}

async fn open(runtime: &Runtime, ionapi: &std::path::Path) -> ionflow_runtime::Connection {
    runtime
        .open(
            "sim",
            &std::fs::read_to_string(ionapi).unwrap(),
            default_options(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn one_token_serves_many_calls_and_a_401_is_recovered_once() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let runtime = runtime();
    let conn = open(&runtime, &ionapi).await;
    for _ in 0..5 {
        let response = conn.call(users_me()).await.unwrap();
        assert_eq!(response.status, 200);
    }
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1, "the token is cached");
    assert_eq!(counters.unauthorized, 0);

    // The gateway forgets every token: the next call sees a 401, renews the
    // token (spending the refresh token) and succeeds on its one retry.
    ionflow_runtime::tls::client()
        .post(format!("{}/__sim/expire-tokens", sim.base_url()))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let response = conn.call(users_me()).await.unwrap();
    assert_eq!(response.status, 200);
    let counters = sim.counters();
    assert_eq!(counters.unauthorized, 1);
    assert_eq!(
        counters.token_requests.password + counters.token_requests.refresh_token,
        2,
        "exactly one renewal: {counters:?}"
    );
    assert_eq!(conn.stats().token_requests(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn every_token_revoked_by_the_gateway_is_replaced_by_a_new_grant() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let runtime = runtime();
    let conn = open(&runtime, &ionapi).await;
    assert_eq!(conn.call(users_me()).await.unwrap().status, 200);
    // Access and refresh tokens alike: the refresh the connector tries after
    // the 401 is refused, so it falls back to the backend-service grant.
    crate::support::sim_post(&sim, "revoke-tokens", serde_json::json!({})).await;
    assert_eq!(conn.call(users_me()).await.unwrap().status, 200);
    let counters = sim.counters();
    assert_eq!(counters.unauthorized, 1, "{counters:?}");
    assert_eq!(counters.token_requests.password, 2, "{counters:?}");
    assert!(counters.token_requests.refresh_token <= 1, "{counters:?}");
    assert_eq!(counters.refresh_token_reuse, 0, "{counters:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn describe_masks_every_secret() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let conn = runtime()
        .open(
            "sim",
            &std::fs::read_to_string(&ionapi).unwrap(),
            default_options(),
        )
        .await
        .unwrap();
    let info = conn.info();
    assert!(
        info.token_url.ends_with("/as/token.oauth2"),
        "{}",
        info.token_url
    );
    assert!(!info.token_url.contains("//as"), "{}", info.token_url);
    let described = format!("{info:?}");
    for (i, secret) in file_secrets(&ionapi).iter().enumerate() {
        assert!(
            !described.contains(secret.as_str()),
            "secret #{i} in describe()"
        );
    }
    assert!(info.client_secret.starts_with("*****"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_payload_limit_is_refused_before_sending() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let options = ionflow_runtime::ConnectionOptions {
        max_payload_bytes: Some(1024),
        ..default_options()
    };
    let conn = runtime()
        .open("sim", &std::fs::read_to_string(&ionapi).unwrap(), options)
        .await
        .unwrap();
    let request = ionflow_runtime::GatewayRequest {
        method: ionflow_runtime::Method::Post,
        path: "IONSERVICES/api/ion/messaging/service/v2/message".into(),
        query: vec![],
        headers: vec![("content-type".into(), "application/json".into())],
        body: vec![b' '; 2048],
        timeout_ms: None,
    };
    let error = conn.call(request).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("2048 bytes exceeds the payload limit of 1024 bytes"),
        "{message}"
    );
    let counters = sim.counters();
    assert_eq!(counters.api_calls, 0, "nothing was sent");
    assert_eq!(
        counters.token_requests.password, 0,
        "not even a token was requested"
    );
    sim.shutdown().await;
}
