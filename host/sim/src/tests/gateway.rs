//! Gateway policy around every business call: bearer tokens, hosts, scopes.
//! Public shape checked: the one `gateway.rs` and `scopes.rs` follow.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use serde_json::Value;

use super::{FORM, Harness, bearer};
use crate::SimConfig;

#[tokio::test]
async fn business_calls_need_a_live_bearer_token() {
    let h = Harness::with_items(5).await;
    let path = "ifsservice/usermgt/v2/users/me";

    let missing = h.http.get(h.api_url(path)).send().await.unwrap();
    let garbage = h.get(path, "not-a-token").await;
    let refresh_as_bearer = {
        let token = h.password_token().await;
        h.get(path, token["refresh_token"].as_str().unwrap()).await
    };
    for response in [missing, garbage, refresh_as_bearer] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{challenge}"
        );
        assert!(challenge.contains("error_description=\""), "{challenge}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
    }

    let token = h.password_token().await;
    assert_eq!(h.get(path, bearer(&token)).await.status(), StatusCode::OK);
    let expired: Value = h
        .http
        .post(h.control_url("expire-tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 2);
    let response = h.get(path, bearer(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("expired"), "{challenge}");

    let counters = h.sim.counters();
    assert_eq!(counters.unauthorized, 4);
    assert_eq!(counters.api_calls, 1);
    assert_eq!(
        counters.calls_by_path["/ACME_TST/ifsservice/usermgt/v2/users/me"],
        1
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn short_token_lifetimes_expire_on_the_clock() {
    let h = Harness::start(SimConfig {
        items: 1,
        token_ttl_secs: 1,
        ..SimConfig::default()
    })
    .await;
    let token = h.password_token().await;
    assert_eq!(token["expires_in"], 1);
    let path = "ifsservice/usermgt/v2/users/me";
    assert_eq!(h.get(path, bearer(&token)).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        h.get(path, bearer(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn wrong_host_gets_an_explanatory_404() {
    let h = Harness::with_items(1).await;
    let port = h.sim.addr().port();

    // Token endpoint reached through iu.
    let token_on_iu = format!("{}/ACME_TST/as/token.oauth2", h.key("iu"));
    let response = h
        .http
        .post(token_on_iu)
        .header(CONTENT_TYPE, FORM)
        .header(AUTHORIZATION, h.basic_header())
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("pu is for the OAuth endpoints, iu for business calls")
    );

    // Business call built from pu's host.
    let token = h.password_token().await;
    let business_on_pu = format!("http://localhost:{port}/ACME_TST/ifsservice/usermgt/v2/users/me");
    let response = h
        .http
        .get(business_on_pu)
        .bearer_auth(bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "wrong_host");

    // Any other Host is wrong for both.
    let response = h
        .http
        .get(h.api_url("ifsservice/usermgt/v2/users/me"))
        .header(HOST, format!("example.com:{port}"))
        .bearer_auth(bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Unknown paths and tenants are plain 404s.
    let response = h
        .http
        .get(format!(
            "{}/OTHER_TNT/ifsservice/usermgt/v2/users/me",
            h.key("iu")
        ))
        .bearer_auth(bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "not_found"
    );

    // The control API answers on both hosts.
    let on_pu_host: Value = h
        .http
        .get(format!("http://localhost:{port}/__sim/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on_pu_host["wrong_host"], 3);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_suite_without_scope_is_forbidden_after_the_token_check() {
    let h = Harness::with_items(1).await;
    let path = "IDM/api/items/search";
    // No token: 401 comes first, as on the real gateway.
    assert_eq!(
        h.get(path, "not-a-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let token = h.password_token().await;
    let response = h.get(path, bearer(&token)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert!(body["error_description"].as_str().unwrap().contains("IDM"));

    // A suite the app is granted but a path nobody routes: 404, after auth.
    let response = h.get("M3/no/such/api", bearer(&token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let counters = h.sim.counters();
    assert_eq!(counters.forbidden, 1);
    assert_eq!(counters.unauthorized, 1);
    h.sim.shutdown().await;
}
