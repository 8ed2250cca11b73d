//! End-to-end checks over loopback: a real HTTP client against a running
//! simulator, using only what the written `.ionapi` file says.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use super::codec::{base64_encode, form_encode};
use super::{SimConfig, Simulator};

const FORM: &str = "application/x-www-form-urlencoded";

type Pairs<'a> = Vec<(&'a str, &'a str)>;

struct Harness {
    sim: Simulator,
    http: reqwest::Client,
    ionapi: Value,
}

impl Harness {
    async fn start(config: SimConfig) -> Harness {
        let sim = Simulator::start(config).await.expect("simulator starts");
        let ionapi = serde_json::from_str(&sim.ionapi_json()).unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
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
        format!("Basic {}", base64_encode(pair.as_bytes()))
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

#[tokio::test]
async fn ionapi_file_describes_the_running_instance() {
    let h = Harness::with_items(10).await;
    let port = h.sim.addr().port();
    assert_eq!(h.key("ti"), "ACME_TST");
    assert_eq!(h.key("iu"), format!("http://127.0.0.1:{port}"));
    assert_eq!(h.key("pu"), format!("http://localhost:{port}/ACME_TST/as/"));
    assert_eq!(h.sim.base_url(), h.key("iu"));
    for (key, value) in [
        ("cn", "ionflow simulator"),
        ("dt", "12"),
        ("oa", "authorization.oauth2"),
        ("ot", "token.oauth2"),
        ("or", "revoke_token.oauth2"),
        ("ev", "U0000000000"),
        ("v", "1.0"),
    ] {
        assert_eq!(h.key(key), value);
    }
    assert!(h.key("ci").starts_with("ACME_TST~"));
    assert!(h.key("saak").starts_with("ACME_TST#"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/sim.ionapi");
    h.sim.write_ionapi(&path).unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written, h.ionapi);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    h.sim.shutdown().await;
}

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
            format!("Basic {}", base64_encode(naive.as_bytes())),
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
async fn m3_list_paging_by_key_covers_every_item_once() {
    let items = 1234;
    let h = Harness::with_items(items).await;
    let token = h.password_token().await;
    let base = "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm";

    let mut seen: Vec<String> = Vec::new();
    let mut next_key = String::new();
    loop {
        let page = h
            .get_json(
                &format!(
                    "{base}?ITNO={}&maxrecs=100&returncols=ITNO,ITDS",
                    form_encode(&next_key)
                ),
                bearer(&token),
            )
            .await;
        assert_eq!(page["nrOfSuccessfullTransactions"], 1);
        assert_eq!(page["nrOfFailedTransactions"], 0);
        assert_eq!(page["wasTerminated"], false);
        let result = &page["results"][0];
        assert_eq!(result["transaction"], "LstItmByItm");
        let records = result["records"].as_array().unwrap();
        assert!(records.iter().all(|r| r.as_object().unwrap().len() == 2));
        // Every page after the first starts with the last record already seen.
        let skip = usize::from(!seen.is_empty());
        if !seen.is_empty() {
            assert_eq!(records[0]["ITNO"], seen.last().unwrap().as_str());
        }
        let fresh: Vec<String> = records
            .iter()
            .skip(skip)
            .map(|r| r["ITNO"].as_str().unwrap().to_owned())
            .collect();
        if fresh.is_empty() {
            break;
        }
        next_key = fresh.last().unwrap().clone();
        seen.extend(fresh);
    }
    assert_eq!(seen.len(), items);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), items);
    assert_eq!(seen.first().unwrap(), "ITM000001");
    assert_eq!(seen.last().unwrap(), "ITM001234");

    let everything = h
        .get_json(&format!("{base}?maxrecs=0"), bearer(&token))
        .await;
    assert_eq!(
        everything["results"][0]["records"]
            .as_array()
            .unwrap()
            .len(),
        items
    );
    let default_page = h.get_json(base, bearer(&token)).await;
    assert_eq!(
        default_page["results"][0]["records"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn m3_single_transactions_and_bulk() {
    let h = Harness::with_items(20).await;
    let token = h.password_token().await;
    let exec = "M3/m3api-rest/v2/execute/MMS200MI";

    let item = h
        .get_json(
            &format!("{exec}/GetItmBasic?ITNO=ITM000007"),
            bearer(&token),
        )
        .await;
    let record = &item["results"][0]["records"][0];
    assert_eq!(record["ITNO"], "ITM000007");
    assert!(record.as_object().unwrap().values().all(Value::is_string));

    let missing = h
        .get(&format!("{exec}/GetItmBasic?ITNO=NOPE"), bearer(&token))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(missing["nrOfFailedTransactions"], 1);
    assert_eq!(missing["results"][0]["errorField"], "ITNO");
    assert!(
        missing["results"][0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("NOPE")
    );
    assert!(missing["results"][0]["errorCode"].is_string());

    let add = format!(
        "{exec}/AddItmBasic?ITNO=NEW-001&ITDS={}&UNMS=KG&GRWE=2.5",
        form_encode("New & improved")
    );
    let added = h.get_json(&add, bearer(&token)).await;
    assert_eq!(added["nrOfSuccessfullTransactions"], 1);
    let again = h.get_json(&add, bearer(&token)).await;
    assert_eq!(again["nrOfFailedTransactions"], 1);
    assert_eq!(
        again["results"][0]["errorMessage"],
        "Item number NEW-001 already exists"
    );
    let fetched = h
        .get_json(&format!("{exec}/GetItmBasic?ITNO=NEW-001"), bearer(&token))
        .await;
    assert_eq!(
        fetched["results"][0]["records"][0]["ITDS"],
        "New & improved"
    );
    assert_eq!(fetched["results"][0]["records"][0]["GRWE"], "2.5");

    for bad in [
        "M3/m3api-rest/v2/execute/MMS999MI/GetItmBasic?ITNO=X",
        "M3/m3api-rest/v2/execute/MMS200MI/Nope",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?maxrecs=lots",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?returncols=BOGUS",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?ITNO=%zz",
    ] {
        let response = h.get(bad, bearer(&token)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["nrOfFailedTransactions"], 1, "{bad}");
        assert!(body["results"][0]["errorMessage"].is_string(), "{bad}");
    }

    let bulk = json!({
        "program": "MMS200MI",
        "cono": 100,
        "transactions": [
            { "transaction": "AddItmBasic", "record": { "ITNO": "BULK-1", "ITDS": "Bulk one" } },
            { "transaction": "AddItmBasic", "record": { "ITNO": "NEW-001", "ITDS": "Duplicate" } },
            { "transaction": "GetItmBasic", "record": { "ITNO": "BULK-1" }, "selectedColumns": ["ITNO", "ITDS"] },
            { "transaction": "AddItmBasic", "record": { "ITNO": "BULK-2", "ITDS": 5 } },
        ]
    });
    let response = h
        .http
        .post(h.api_url("M3/m3api-rest/v2/execute"))
        .bearer_auth(bearer(&token))
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["nrOfSuccessfullTransactions"], 2);
    assert_eq!(body["nrOfFailedTransactions"], 2);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[0].get("errorMessage").is_none());
    assert_eq!(results[1]["errorField"], "ITNO");
    assert_eq!(
        results[2]["records"][0],
        json!({ "ITNO": "BULK-1", "ITDS": "Bulk one" })
    );
    assert_eq!(results[3]["errorField"], "ITDS");

    let malformed = h
        .http
        .post(h.api_url("M3/m3api-rest/v2/execute"))
        .bearer_auth(bearer(&token))
        .header(CONTENT_TYPE, "application/json")
        .body("{\"program\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["wasTerminated"],
        true
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn ido_bookmark_paging_and_incremental_filter() {
    let items = 750;
    let h = Harness::with_items(items).await;
    let token = h.password_token().await;
    let base = "CSI/IDORequestService/ido/load/SLItems";
    let load = |query: String, with_config: bool| {
        let mut request = h
            .http
            .get(h.api_url(&format!("{base}?{query}")))
            .bearer_auth(bearer(&token));
        if with_config {
            request = request.header("X-Infor-MongooseConfig", "ACME_TST_DALS");
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };

    let no_config = load("properties=Item".into(), false).await;
    assert_eq!(no_config["Success"], false);
    assert!(
        no_config["Message"]
            .as_str()
            .unwrap()
            .contains("X-Infor-MongooseConfig")
    );

    let mut seen = Vec::new();
    let mut bookmark = String::new();
    let mut pages = 0;
    loop {
        let page = load(
            format!(
                "properties=Item,Description,UM,ProductCode,RecordDate&recordCap=200&loadType=NEXT&bookmark={}",
                form_encode(&bookmark)
            ),
            true,
        )
        .await;
        pages += 1;
        assert_eq!(page["Success"], true);
        assert!(page["Message"].is_null());
        for item in page["Items"].as_array().unwrap() {
            assert!(item["RecordDate"].as_str().unwrap().starts_with("2026-"));
            seen.push(item["Item"].as_str().unwrap().to_owned());
        }
        if page["MoreRowsExist"] == false {
            break;
        }
        bookmark = page["Bookmark"].as_str().unwrap().to_owned();
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), items);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), items);

    let all = load("properties=Item,RecordDate&recordCap=0".into(), true).await;
    let all_items = all["Items"].as_array().unwrap();
    assert_eq!(all_items.len(), items);
    assert_eq!(all["MoreRowsExist"], false);
    let default_cap = load("properties=Item&recordCap=-1".into(), true).await;
    assert_eq!(default_cap["Items"].as_array().unwrap().len(), 200);

    let cutoff = "2026-07-01 00:00:00";
    let expected = all_items
        .iter()
        .filter(|i| i["RecordDate"].as_str().unwrap() > "2026-07-01T00:00:00.000")
        .count();
    let filtered = load(
        format!(
            "properties=Item,RecordDate&recordCap=0&filter={}",
            form_encode(&format!("RecordDate > '{cutoff}'"))
        ),
        true,
    )
    .await;
    assert_eq!(filtered["Success"], true);
    assert_eq!(filtered["Items"].as_array().unwrap().len(), expected);
    assert!(expected > 0 && expected < items);

    for query in [
        "properties=Item&loadType=NEXT&bookmark=garbage",
        "properties=Nope",
        "properties=Item&recordCap=lots",
        "properties=Item&filter=RecordDate%20%3E%20%27whenever%27",
    ] {
        let page = load(query.into(), true).await;
        assert_eq!(page["Success"], false, "{query}");
        assert!(page["Message"].is_string(), "{query}");
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn ion_messages_are_kept_for_inspection() {
    let h = Harness::with_items(1).await;
    let token = h.password_token().await;
    let path = "IONSERVICES/api/ion/messaging/service/v2/message";
    let response = h
        .http
        .post(h.api_url(path))
        .bearer_auth(bearer(&token))
        .json(&json!({ "documentName": "Sync.ItemMaster", "payload": { "ITNO": "ITM000001" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.json::<Value>().await.unwrap()["messageId"].is_string());
    let response = h
        .http
        .post(h.api_url(path))
        .bearer_auth(bearer(&token))
        .body("<SyncItemMaster/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let messages = h.control("messages").await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["body"]["documentName"], "Sync.ItemMaster");
    assert_eq!(messages[1]["body"], "<SyncItemMaster/>");
    assert_eq!(h.sim.counters().messages_received, 2);

    let counters = h.control("counters").await;
    assert_eq!(counters["messages_received"], 2);
    assert_eq!(counters["api_calls"], 2);
    let status = h
        .http
        .post(h.control_url("reset-counters"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.sim.counters(), super::Counters::default());
    h.sim.shutdown().await;
}

#[tokio::test]
async fn start_rejects_bad_configuration() {
    for config in [
        SimConfig {
            tenant: "ACME/TST".into(),
            ..SimConfig::default()
        },
        SimConfig {
            tenant: String::new(),
            ..SimConfig::default()
        },
        SimConfig {
            items: 2_000_000,
            ..SimConfig::default()
        },
    ] {
        assert!(Simulator::start(config).await.is_err());
    }
}

#[tokio::test]
async fn a_suite_without_scope_is_forbidden_after_the_token_check() {
    let h = Harness::with_items(1).await;
    let path = "DATAFABRIC/compass/v2/jobs/";
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
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("DATAFABRIC")
    );

    // A suite the app is granted but a path nobody routes: 404, after auth.
    let response = h.get("M3/no/such/api", bearer(&token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let counters = h.sim.counters();
    assert_eq!(counters.forbidden, 1);
    assert_eq!(counters.unauthorized, 1);
    h.sim.shutdown().await;
}
