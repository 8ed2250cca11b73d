//! End-to-end checks over loopback: a real HTTP client against a running
//! simulator, using only what the written `.ionapi` file says. This file is
//! the harness; the checks live in `tests/`, one file per area.
//!
//! Public shape followed: a client's view of the gateway, knowing only the
//! `.ionapi` file, as a real client does.

mod gateway;
mod ido;
mod instance;
mod ion;
mod m3;
mod oauth;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::codec::form_encode;
use super::{SimConfig, Simulator};

const FORM: &str = "application/x-www-form-urlencoded";

struct Harness {
    sim: Simulator,
    http: reqwest::Client,
    ionapi: Value,
}

impl Harness {
    async fn start(config: SimConfig) -> Harness {
        let sim = Simulator::start(config).await.expect("simulator starts");
        let ionapi = serde_json::from_str(&sim.ionapi_json()).unwrap();
        let http = ionflow_runtime::tls::client_builder()
            .no_proxy()
            .build()
            .unwrap();
        Harness { sim, http, ionapi }
    }

    async fn with_items(items: usize) -> Harness {
        Self::start(SimConfig {
            items,
            ..SimConfig::default()
        })
        .await
    }

    fn key(&self, name: &str) -> &str {
        self.ionapi[name].as_str().unwrap()
    }

    fn auth_url(&self, endpoint_key: &str) -> String {
        format!("{}{}", self.key("pu"), self.key(endpoint_key))
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}/{}/{}", self.key("iu"), self.key("ti"), path)
    }

    fn control_url(&self, path: &str) -> String {
        format!("{}/__sim/{path}", self.sim.base_url())
    }

    fn client_auth_fields(&self) -> Vec<(&str, &str)> {
        vec![
            ("client_id", self.key("ci")),
            ("client_secret", self.key("cs")),
        ]
    }

    fn basic_header(&self) -> String {
        let pair = format!(
            "{}:{}",
            form_encode(self.key("ci")),
            form_encode(self.key("cs"))
        );
        format!("Basic {}", STANDARD.encode(pair.as_bytes()))
    }

    async fn post_form(
        &self,
        endpoint_key: &str,
        pairs: &[(&str, &str)],
        basic: bool,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.auth_url(endpoint_key))
            .header(CONTENT_TYPE, FORM)
            .body(encode_form(pairs));
        if basic {
            request = request.header(AUTHORIZATION, self.basic_header());
        }
        request.send().await.unwrap()
    }

    async fn password_token(&self) -> Value {
        let mut pairs = vec![
            ("grant_type", "password"),
            ("username", self.key("saak")),
            ("password", self.key("sask")),
        ];
        pairs.extend(self.client_auth_fields());
        let response = self.post_form("ot", &pairs, false).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_form(
            "ot",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            true,
        )
        .await
    }

    async fn revoke(&self, token: &str, hint: &str) -> reqwest::Response {
        self.post_form("or", &[("token", token), ("token_type_hint", hint)], true)
            .await
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.api_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.get(path, token).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn control(&self, path: &str) -> Value {
        self.http
            .get(self.control_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn bearer(token: &Value) -> &str {
    token["access_token"].as_str().unwrap()
}
