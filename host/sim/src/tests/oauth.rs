//! The OAuth endpoints on `pu`: grants, client authentication, refresh-token
//! rotation and revocation.
//! Public shape checked: the one `oauth.rs` follows.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::Value;

use super::{FORM, Harness, bearer};
use crate::SimConfig;

type Pairs<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn password_grant_with_form_and_with_basic_client_auth() {
    let h = Harness::with_items(10).await;
    let by_form = h.password_token().await;
    assert_eq!(by_form["token_type"], "Bearer");
    assert_eq!(by_form["expires_in"], 7200);
    assert!(by_form["refresh_token"].is_string());
    assert!(by_form["scope"].is_string());

    let response = h
        .post_form(
            "ot",
            &[
                ("grant_type", "password"),
                ("username", h.key("saak")),
                ("password", h.key("sask")),
            ],
            true,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let by_basic: Value = response.json().await.unwrap();
    assert_ne!(bearer(&by_form), bearer(&by_basic));

    let me = h
        .get_json("ifsservice/usermgt/v2/users/me", bearer(&by_basic))
        .await;
    assert_eq!(
        me["response"]["userlist"][0]["userName"],
        "svc_ionflow@acme.example"
    );

    // Basic without form-encoding first (what many HTTP libraries do) fails.
    let naive = format!("{}:{}", h.key("ci"), h.key("cs"));
    let response = h
        .http
        .post(h.auth_url("ot"))
        .header(CONTENT_TYPE, FORM)
        .header(
            AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(naive.as_bytes())),
        )
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    // A body built without encoding mangles the service-account secret.
    let unencoded = format!(
        "grant_type=password&username={}&password={}&client_id={}&client_secret={}",
        h.key("saak"),
        h.key("sask"),
        h.key("ci"),
        h.key("cs")
    );
    let response = h
        .http
        .post(h.auth_url("ot"))
        .header(CONTENT_TYPE, FORM)
        .body(unencoded)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());

    let counters = h.sim.counters();
    assert_eq!(counters.token_requests.password, 3);
    assert_eq!(counters.token_requests.client_credentials, 1);
    assert_eq!(counters.token_errors, 2);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_refuses_bad_requests() {
    let h = Harness::with_items(1).await;
    let mut bad_sask = vec![
        ("grant_type", "password"),
        ("username", h.key("saak")),
        ("password", "not-the-secret"),
    ];
    bad_sask.extend(h.client_auth_fields());
    let response = h.post_form("ot", &bad_sask, false).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // (form fields, authenticate with Basic, expected status, expected error)
    let cases: Vec<(Pairs, bool, StatusCode, &str)> = vec![
        (
            vec![("grant_type", "client_credentials")],
            false,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", h.key("ci")),
                ("client_secret", "x"),
            ],
            false,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![("grant_type", "implicit")],
            true,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (vec![], true, StatusCode::BAD_REQUEST, "invalid_request"),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", h.key("cs")),
            ],
            true,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![("grant_type", "refresh_token")],
            true,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (pairs, basic, status, error) in cases {
        let response = h.post_form("ot", &pairs, basic).await;
        assert_eq!(response.status(), status, "{pairs:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            error,
            "{pairs:?}"
        );
    }

    let raw_cases = [
        (
            "application/json",
            "grant_type=client_credentials".to_owned(),
        ),
        (
            FORM,
            "grant_type=client_credentials&grant_type=password".to_owned(),
        ),
        (FORM, "grant_type=client_credentials&x=%zz".to_owned()),
    ];
    for (content_type, body) in raw_cases {
        let response = h
            .http
            .post(h.auth_url("ot"))
            .header(CONTENT_TYPE, content_type)
            .header(AUTHORIZATION, h.basic_header())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "invalid_request"
        );
    }

    let in_url = h
        .http
        .post(format!(
            "{}?grant_type=client_credentials",
            h.auth_url("ot")
        ))
        .header(CONTENT_TYPE, FORM)
        .header(AUTHORIZATION, h.basic_header())
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(in_url.status(), StatusCode::BAD_REQUEST);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_detected() {
    let h = Harness::with_items(1).await;
    let first = h.password_token().await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let response = h.refresh(r1).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = response.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_ne!(bearer(&first), bearer(&second));

    let reused = h.refresh(r1).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(h.sim.counters().refresh_token_reuse, 1);

    let third = h.refresh(r2).await;
    assert_eq!(third.status(), StatusCode::OK);
    let counters = h.sim.counters();
    assert_eq!(counters.token_requests.refresh_token, 3);
    assert_eq!(counters.token_errors, 1);

    let tokens = h.control("tokens").await;
    assert_eq!(tokens["access_tokens"].as_array().unwrap().len(), 3);
    assert_eq!(tokens["refresh_tokens"].as_array().unwrap().len(), 3);
    assert_eq!(tokens["refresh_tokens"][0], r1);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_can_be_switched_off() {
    let h = Harness::start(SimConfig {
        items: 1,
        issue_refresh_tokens: false,
        token_ttl_secs: 60,
        ..SimConfig::default()
    })
    .await;
    let token = h.password_token().await;
    assert!(token.get("refresh_token").is_none());
    assert_eq!(token["expires_in"], 60);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn revocation_kills_the_refresh_family_and_its_access_tokens() {
    let h = Harness::with_items(1).await;
    let family = h.password_token().await;
    let refreshed: Value = h
        .refresh(family["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let other = h.password_token().await;

    let response = h
        .revoke(
            refreshed["refresh_token"].as_str().unwrap(),
            "refresh_token",
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    for token in [&family, &refreshed] {
        let response = h.get("ifsservice/usermgt/v2/users/me", bearer(token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        h.refresh(refreshed["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let response = h
        .get("ifsservice/usermgt/v2/users/me", bearer(&other))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Revoking an access token kills just that token.
    assert_eq!(
        h.revoke(bearer(&other), "access_token").await.status(),
        StatusCode::OK
    );
    let response = h
        .get("ifsservice/usermgt/v2/users/me", bearer(&other))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.refresh(other["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );

    // Unknown tokens are fine, missing client authentication is not.
    assert_eq!(
        h.revoke("no-such-token", "bogus_hint").await.status(),
        StatusCode::OK
    );
    let unauthenticated = h.post_form("or", &[("token", bearer(&other))], false).await;
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.sim.counters().revocations, 3);
    h.sim.shutdown().await;
}
