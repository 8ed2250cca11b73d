//! P1 (gateway calls through the wasm connector vs a bare reqwest loop) and
//! P2 (token requests), both in this process against a simulator process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ionflow_runtime::capabilities::FileTokenStore;
use ionflow_runtime::{Connection, GatewayRequest, Method, RateLimit, Runtime, default_options};
use serde_json::json;

use crate::report::{Figure, median};
use crate::sim::SimProcess;

const GET_ITEM: &str = "M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic";

/// The item asked for by call `i`: the same sequence on both sides.
fn item(i: usize) -> String {
    format!("ITM{:06}", i % 1000 + 1)
}

/// The client a bare native program would build: the same settings as the
/// host's transport (no redirects, 60 s idle pool).
fn native_client() -> anyhow::Result<reqwest::Client> {
    Ok(ionflow_runtime::tls::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?)
}

/// One backend-service token, requested once, straight from the token endpoint.
async fn native_token(client: &reqwest::Client, sim: &SimProcess) -> anyhow::Result<String> {
    let url = format!("{}{}", sim.field("pu"), sim.field("ot"));
    let form = [
        ("grant_type", "password".to_owned()),
        ("username", sim.field("saak")),
        ("password", sim.field("sask")),
        ("client_id", sim.field("ci")),
        ("client_secret", sim.field("cs")),
    ];
    let body: serde_json::Value = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(&form))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("the token endpoint answered without an access_token")
}

/// `application/x-www-form-urlencoded`, as a bare client would write it.
fn form_encode(fields: &[(&str, String)]) -> String {
    let escape = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Calls per second and client CPU per call in µs, of the `total` calls `run` makes.
async fn cpu_per_call<F: std::future::Future<Output = anyhow::Result<f64>>>(
    total: usize,
    run: F,
) -> anyhow::Result<(f64, f64)> {
    let before = cpu_time();
    let rate = run.await?;
    Ok((
        rate,
        (cpu_time() - before).as_secs_f64() * 1e6 / total as f64,
    ))
}

/// Runs `total` calls with `inflight` workers; returns calls per second.
async fn drive<F, Fut>(total: usize, inflight: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let call = call.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return anyhow::Ok(());
                    }
                    call(i).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn connector_rate(
    conn: &Arc<Connection>,
    total: usize,
    inflight: usize,
) -> anyhow::Result<f64> {
    let conn = conn.clone();
    drive(total, inflight, move |i| {
        let conn = conn.clone();
        async move {
            let response = conn
                .call(GatewayRequest {
                    method: Method::Get,
                    path: GET_ITEM.into(),
                    query: vec![("ITNO".into(), item(i))],
                    headers: vec![],
                    body: vec![],
                    timeout_ms: None,
                })
                .await?;
            if response.status != 200 || response.body.is_empty() {
                bail!("connector call answered HTTP {}", response.status);
            }
            Ok(())
        }
    })
    .await
}

async fn native_rate(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    total: usize,
    inflight: usize,
) -> anyhow::Result<f64> {
    let client = client.clone();
    let url: Arc<str> = url.into();
    let bearer: Arc<str> = format!("Bearer {token}").into();
    drive(total, inflight, move |i| {
        let (client, url, bearer) = (client.clone(), url.clone(), bearer.clone());
        async move {
            let response = client
                // Item numbers need no escaping.
                .get(format!("{url}?ITNO={}", item(i)))
                .header("accept", "application/json")
                .header("authorization", &*bearer)
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != 200 || body.is_empty() {
                bail!("native call answered HTTP {status}");
            }
            Ok(())
        }
    })
    .await
}

fn lifted() -> RateLimit {
    RateLimit {
        requests: 1_000_000,
        window: Duration::from_secs(1),
        smoothing: false,
    }
}

pub async fn p1(sim: &SimProcess, cache: &std::path::Path, quick: bool) -> anyhow::Result<Figure> {
    let tokens = tempfile::tempdir()?;
    let runtime = Runtime::new(Arc::new(FileTokenStore::open(tokens.path())?), Some(cache))?;
    let client = native_client()?;
    let token = native_token(&client, sim).await?;
    let url = format!("{}/{}/{GET_ITEM}", sim.field("iu"), sim.field("ti"));
    let rounds = if quick { 1 } else { 5 };
    let mut figure = Figure::new(
        "P1",
        "gateway calls/s through the wasm connector ÷ a bare reqwest loop, same simulator and calls (M3 GetItmBasic)",
        "≥ 0.90×",
    );
    let mut met = true;
    let mut summary = Vec::new();
    for inflight in [1usize, 32] {
        let total = match (quick, inflight) {
            (true, 1) => 300,
            (true, _) => 1_000,
            (false, 1) => 5_000,
            (false, _) => 20_000,
        };
        let mut conn = runtime
            .open_pool("bench", &sim.ionapi_json(), default_options(), inflight)
            .await?;
        conn.set_rate_limit(lifted());
        let conn = Arc::new(conn);
        // Warm-up: the token, one TCP connection per worker, caches.
        connector_rate(&conn, inflight * 20, inflight).await?;
        native_rate(&client, &url, &token, inflight * 20, inflight).await?;
        let (mut wasm, mut native, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut wasm_cpu, mut native_cpu) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let connector = || cpu_per_call(total, connector_rate(&conn, total, inflight));
            let bare = || cpu_per_call(total, native_rate(&client, &url, &token, total, inflight));
            // Alternate which side goes first, so that drift favours neither.
            let ((w, wc), (n, nc)) = if round % 2 == 0 {
                let n = bare().await?;
                (connector().await?, n)
            } else {
                let w = connector().await?;
                (w, bare().await?)
            };
            wasm.push(w);
            native.push(n);
            wasm_cpu.push(wc);
            native_cpu.push(nc);
            ratios.push(w / n);
        }
        let ratio = median(&mut ratios);
        let (w, n) = (median(&mut wasm), median(&mut native));
        let (wc, nc) = (median(&mut wasm_cpu), median(&mut native_cpu));
        met &= ratio >= 0.90;
        summary.push(format!("{ratio:.2}× at {inflight} in flight"));
        figure.detail(format!(
            "{inflight} in flight: connector {w:.0} calls/s, native {n:.0} calls/s, ratio {ratio:.3} \
             (median of {rounds} rounds of {total} calls); client CPU per call: connector \
             {wc:.1} µs, native {nc:.1} µs"
        ));
        figure.value(
            &format!("inflight_{inflight}"),
            json!({"connector_calls_per_s": w, "native_calls_per_s": n, "ratio": ratio,
                   "connector_cpu_us_per_call": wc, "native_cpu_us_per_call": nc,
                   "rounds": rounds, "calls_per_round": total}),
        );
        if conn.stats().token_requests() > 1 {
            bail!("P1: the connector requested more than one token");
        }
    }
    figure.result = summary.join(", ");
    figure.met = Some(met);
    Ok(figure)
}

/// P2 runs against a simulator issuing short-lived tokens (`ttl` seconds):
/// the connector renews when less than half the life is left.
pub async fn p2(sim: &SimProcess, cache: &std::path::Path, ttl: u64) -> anyhow::Result<Figure> {
    let control = native_client()?;
    let tokens = tempfile::tempdir()?;
    let runtime = Runtime::new(Arc::new(FileTokenStore::open(tokens.path())?), Some(cache))?;
    let mut conn = runtime
        .open_pool("bench", &sim.ionapi_json(), default_options(), 64)
        .await?;
    conn.set_rate_limit(lifted());
    let conn = Arc::new(conn);
    let before = sim.token_requests(&control).await?;
    let started = Instant::now();
    // 64 first calls at once, one per instance: each finds no token.
    connector_rate(&conn, 64, 64).await?;
    let first = sim.token_requests(&control).await? - before;

    // Calls for most of the token's usable life (half its lifetime, less
    // one second for the whole-second clock the expiry is counted in).
    let usable = Duration::from_secs(ttl / 2 - 1);
    let phase = |until: Duration| {
        let conn = conn.clone();
        async move {
            let mut calls = 0;
            while started.elapsed() < until {
                connector_rate(&conn, 320, 32).await?;
                calls += 320;
            }
            anyhow::Ok(calls)
        }
    };
    let during_calls = phase(usable.mul_f64(0.9)).await?;
    let during = sim.token_requests(&control).await? - before - first;
    // Past the renewal point, before the renewed token's own: one renewal.
    let after_calls = phase(usable + Duration::from_secs(2)).await?;
    let renewals = sim.token_requests(&control).await? - before - first - during;

    let mut figure = Figure::new(
        "P2",
        "token requests caused by 64 concurrent first calls (64-instance pool, file token store); \
         extra token requests during the token's life",
        "1; 0",
    );
    figure.result = format!("{first}; {during}");
    figure.met = Some(first == 1 && during == 0);
    figure.detail(format!(
        "64 concurrent first calls: {first} token request(s); then {during_calls} calls within \
         the token's usable life ({ttl} s token, renewed with less than {} s left): {during} \
         extra; {after_calls} calls past the renewal point: {renewals} renewal(s) (1 expected)",
        ttl / 2
    ));
    figure.value(
        "values",
        json!({"first_calls": 64, "token_requests_first": first, "calls_during_life": during_calls,
               "extra_token_requests": during, "calls_after_renewal_point": after_calls,
               "renewals": renewals, "token_ttl_secs": ttl}),
    );
    Ok(figure)
}

/// P6's floor: the same pages fetched by a bare reqwest loop (one token,
/// pages in sequence, each body parsed only for its last key), in ms. No
/// client can page through the simulator faster than this.
pub async fn page_floor(sim: &SimProcess, page_size: usize, rounds: usize) -> anyhow::Result<f64> {
    let client = native_client()?;
    let token = native_token(&client, sim).await?;
    let url = format!(
        "{}/{}/M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
        sim.field("iu"),
        sim.field("ti")
    );
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let mut next: Option<String> = None;
        let mut records = 0;
        loop {
            let maxrecs = page_size + usize::from(next.is_some());
            let query = match &next {
                Some(key) => format!("maxrecs={maxrecs}&ITNO={key}"),
                None => format!("maxrecs={maxrecs}"),
            };
            let body: serde_json::Value = client
                .get(format!("{url}?{query}"))
                .header("accept", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let page = body["results"][0]["records"]
                .as_array()
                .context("an M3 answer without records")?;
            let skip = usize::from(next.is_some() && !page.is_empty());
            records += page.len() - skip;
            if page.len() < maxrecs || page.len() == skip {
                break;
            }
            next = page
                .last()
                .and_then(|r| r["ITNO"].as_str())
                .map(str::to_owned);
        }
        anyhow::ensure!(records > 0, "the floor fetch read no records");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&mut times))
}
