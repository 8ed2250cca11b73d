//! A minimal host for the ionflow connector: loads the component written by `ionflow connector export`,
//! lends it the capabilities of the `ionflow:gateway/connector` world and asks who the credentials are.
//!
//!     ionflow-embed-rust ionflow-connector.wasm tenant.ionapi

use anyhow::{Context, anyhow, bail};
use std::collections::HashMap;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

// The WIT package written by `ionflow connector export --wit DIR`; here the repository's copy.
wasmtime::component::bindgen!({ world: "connector", path: "../../wit", imports: { default: async }, exports: { default: async } });

use exports::ionflow::gateway::{auth, gateway};
use ionflow::gateway::token_store::{Entry, StoreError};
use ionflow::gateway::transport::{IncomingResponse, OutgoingRequest, TransportError};
use ionflow::gateway::{log, token_store, transport, types};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    http: reqwest::Client,
    /// The `.ionapi` file's hosts (`pu`, `iu`): the only destinations allowed.
    allowed_hosts: Vec<String>,
    tokens: HashMap<String, Entry>,
    last_version: u64,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for Host {}

impl log::Host for Host {
    async fn log(&mut self, level: log::Level, message: String) {
        if matches!(level, log::Level::Warn | log::Level::Error) {
            eprintln!("connector {level:?}: {message}");
        }
    }
}

impl transport::Host for Host {
    async fn send(&mut self, request: OutgoingRequest) -> Result<IncomingResponse, TransportError> {
        let url = reqwest::Url::parse(&request.url).map_err(|e| TransportError::Other(e.to_string()))?;
        let host = host_of(&url);
        if !self.allowed_hosts.contains(&host) {
            return Err(TransportError::Refused(format!("{host} is not named in the .ionapi file")));
        }
        // The WIT enum's cases, in order.
        let method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"][request.method as usize];
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let timeout = Duration::from_millis(request.timeout_ms.into());
        let builder = self.http.request(method, url).timeout(timeout);
        let mut builder = request.headers.iter().fold(builder, |b, (name, value)| b.header(name, value));
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let failed = |e: reqwest::Error| match e {
            e if e.is_timeout() => TransportError::Timeout,
            e if e.is_connect() => TransportError::Connect(e.to_string()),
            e => TransportError::Other(e.to_string()),
        };
        let response = builder.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        let headers = (response.headers().iter())
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.bytes().await.map_err(failed)?.to_vec();
        Ok(IncomingResponse { status, headers, body })
    }
}

impl token_store::Host for Host {
    async fn load(&mut self, key: String) -> Result<Option<Entry>, StoreError> {
        Ok(self.tokens.get(&key).cloned())
    }
    async fn save(&mut self, key: String, expected: u64, value: Option<String>) -> Result<u64, StoreError> {
        let current = self.tokens.get(&key);
        if current.map_or(0, |e| e.version) != expected {
            return Err(StoreError::Conflict(current.cloned()));
        }
        let Some(value) = value else {
            self.tokens.remove(&key);
            return Ok(0);
        };
        self.last_version += 1;
        self.tokens.insert(key, Entry { value, version: self.last_version });
        Ok(self.last_version)
    }
    // One connector instance in one process: `&mut self` already admits one
    // caller at a time, so the lease is always free. Hosts that share tokens
    // between instances or processes need a real lease (see docs/EMBEDDING.md).
    async fn lock(&mut self, _key: String, _ttl_ms: u32, _timeout_ms: u32) -> Result<u64, StoreError> {
        Ok(1)
    }
    async fn unlock(&mut self, _key: String, _lease: u64) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [component_path, ionapi_path] = args.as_slice() else {
        bail!("usage: ionflow-embed-rust CONNECTOR.wasm FILE.ionapi");
    };
    let engine = Engine::default();
    let component =
        Component::from_file(&engine, component_path).map_err(|e| anyhow!("cannot load {component_path}: {e:#}"))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Connector::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |host| host)?;
    // This workspace builds reqwest's rustls without a crypto provider (ring is a much smaller
    // build than the default aws-lc): pick one before building a client, or reqwest panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[allow(clippy::disallowed_methods)] // the workspace's rule is for its own crates; this host stands alone
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let host = Host {
        wasi: WasiCtx::builder().build(), // no files, environment or sockets
        table: ResourceTable::new(),
        http,
        allowed_hosts: Vec::new(),
        tokens: HashMap::new(),
        last_version: 0,
    };
    let mut store = Store::new(&engine, host);
    let connector = Connector::instantiate_async(&mut store, &component, &linker).await?;

    let ionapi = std::fs::read_to_string(ionapi_path).with_context(|| format!("cannot read {ionapi_path}"))?;
    let connection = connector.ionflow_gateway_auth().connection();
    let options = auth::Options {
        grant: None,
        client_auth: None,
        renew_before_secs: None,
        request_timeout_ms: None,
        max_payload_bytes: None,
        saml_assertion: None,
    };
    let conn = connection.call_open(&mut store, &ionapi, &options).await?.map_err(failure)?;
    let info = connection.call_describe(&mut store, conn).await?;
    let hosts = [&info.portal_url, &info.ion_api_url].map(|u| reqwest::Url::parse(u).map(|u| host_of(&u)));
    store.data_mut().allowed_hosts = hosts.into_iter().collect::<Result<_, _>>()?;

    let request = gateway::Request {
        method: types::Method::Get,
        path: "ifsservice/usermgt/v2/users/me".into(),
        query: vec![],
        headers: vec![],
        body: vec![],
        timeout_ms: None,
    };
    let response = connector.ionflow_gateway_gateway().call_call(&mut store, conn, &request).await?;
    let response = response.map_err(failure)?;
    anyhow::ensure!(response.status == 200, "users/me answered HTTP {}", response.status);
    let me: serde_json::Value = serde_json::from_slice(&response.body)?;
    let user = &me["response"]["userlist"][0];
    println!("whoami: {} ({})", user["userName"].as_str().unwrap_or("?"), info.tenant);
    connection.call_revoke(&mut store, conn).await?.map_err(failure)?;
    Ok(())
}

fn host_of(url: &reqwest::Url) -> String {
    url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase()
}

/// The connector's errors name the field and the fix and never hold a secret.
fn failure(error: types::Error) -> anyhow::Error {
    anyhow!("{error:?}")
}
