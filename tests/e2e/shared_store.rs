//! The daemon and a PostgreSQL store that goes away: readiness follows it,
//! ticks missed while it was gone run once when it is back, and workers
//! share one rate-limit budget per connection through it.
//!
//! The store's outage is a cut of the TCP path (a loopback relay between the
//! workers and the test server, closed and opened again), so that tests
//! running beside these keep their server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::operations::free_port;
use crate::postgres::{TestDb, report, test_database};
use crate::support::{daemon_timing, ionflow, run, sigterm, sim_post, simulator, workdir};

/// A loopback relay to PostgreSQL that can be cut (every connection closed,
/// the port refusing) and restored on the same port.
pub struct Relay {
    port: u16,
    target: String,
    accept: Option<JoinHandle<()>>,
    links: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let mut relay = Relay {
            port: free_port(),
            target,
            accept: None,
            links: Arc::default(),
        };
        relay.restore().await;
        relay
    }

    /// The database URL through the relay.
    pub fn url(&self, db: &TestDb) -> String {
        let config: tokio_postgres::Config = db.url.parse().unwrap();
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            config.get_user().unwrap(),
            db.password(),
            self.port,
            config.get_dbname().unwrap()
        )
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (target, links) = (self.target.clone(), self.links.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                links.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        }));
    }

    pub fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// `host:port` of a database URL.
fn address(db: &TestDb) -> String {
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[cfg(unix)]
        _ => panic!("the test server is reached over TCP"),
    };
    format!("{host}:{}", config.get_ports()[0])
}

fn scheduled(dir: &Path, name: &str, ionapi: &Path, top: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            r#"schedule = "* * * * * *"
{top}

[connections.m3]
ionapi_file = "{}"
revoke_on_exit = false
rate_limit = {{ requests = 1000000, window_secs = 1 }}

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 10

[[sinks]]
kind = "count"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_store_and_missed_ticks_run_once_after_an_outage() {
    let _timing = daemon_timing().await;
    let Some(db) = test_database("store_outage").await else {
        return;
    };
    let mut relay = Relay::start(address(&db)).await;
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    scheduled(&pipelines, "ticker", &ionapi, "missed_runs = \"run_once\"");
    let port = free_port();
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .args(["--log-format", "json", "--lease-secs", "2", "--status-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .env("IONFLOW_STORE", relay.url(&db))
        .env("IONFLOW_WORKER_ID", "w1")
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = || async move {
        ionflow_runtime::tls::client()
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map(|a| a.status().as_u16())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready().await != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The store goes away for 20 s.
    relay.cut();
    let cut_at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unready = ready().await;
    tokio::time::sleep(Duration::from_secs(17)).await;
    let back_at = chrono::Utc::now();
    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready().await != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    sigterm(child.id().unwrap()).await;
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert_eq!(unready, 503, "/readyz while the store is cut off");

    let client = db.client().await;
    let rows = client
        .query(
            "SELECT tick, started_at, attempts FROM ionflow_runs WHERE pipeline = 'ticker'
             ORDER BY tick",
            &[],
        )
        .await
        .unwrap();
    let runs: Vec<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        i32,
    )> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // Ticks of the outage, run once it ended (a run cut off at its start
    // may be retried as attempt 2 under its own, earlier, tick).
    // The catch-up takes the first missed tick: one just after the cut, or
    // one that fired as the connection was being cut (its claim never
    // reached the store), so a second of slack before `cut_at`.
    let caught_up: Vec<_> = runs
        .iter()
        .filter(|(tick, started, _)| {
            *tick > cut_at - chrono::Duration::milliseconds(1500)
                && *tick < back_at
                && *started >= back_at
        })
        .collect();
    // Ticks well inside the outage: none ran while the store was away.
    let during: Vec<_> = runs
        .iter()
        .filter(|(tick, started, _)| {
            *tick > cut_at + chrono::Duration::milliseconds(1500) && *started < back_at
        })
        .collect();
    report(&format!(
        "store outage {cut_at} .. {back_at}: {} ticks recorded in it, caught up: {caught_up:?}",
        during.len()
    ));
    assert_eq!(
        caught_up.len(),
        1,
        "one run for the ticks of the outage: {runs:?}\n{log}"
    );
    assert!(during.is_empty(), "{runs:?}");
    assert!(log.contains("\"event\":\"missed_run\""), "{log}");
    let after = runs.iter().filter(|(tick, _, _)| *tick > back_at).count();
    assert!(
        after >= 2,
        "the schedule goes on after the outage: {runs:?}"
    );
    sim.shutdown().await;
    db.drop().await;
}

/// A pipeline of `items` records read one per call on the shared connection.
fn quota_pipeline(dir: &Path, name: &str, ionapi: &Path, requests: u32, window: u32) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            r#"[connections.m3]
ionapi_file = "{}"
revoke_on_exit = false
rate_limit = {{ requests = {requests}, window_secs = {window} }}

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 1

[[sinks]]
kind = "count"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
}

/// Three `ionflow run` processes, each its own pipeline on one connection.
async fn three_runs(dir: &Path, store: Option<&str>) -> (Vec<crate::support::Run>, Duration) {
    let started = Instant::now();
    let runs = ["a", "b", "c"].map(|name| {
        let mut cmd = ionflow();
        cmd.arg("run")
            .arg(dir.join(format!("{name}.toml")))
            .arg("--json")
            .env("IONFLOW_STATE_DIR", dir.join(format!("state-{name}")));
        if let Some(store) = store {
            cmd.env("IONFLOW_STORE", store);
        }
        async move { run(&mut cmd).await }
    });
    let results = futures::future::join_all(runs).await;
    (results, started.elapsed())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_one_quota_through_the_store() {
    let _timing = daemon_timing().await;
    let Some(db) = test_database("shared_quota").await else {
        return;
    };
    // The gateway allows 30 calls per 2 s; each pipeline reads 30 records
    // one per call (31 calls), and each is configured for the whole quota.
    let (requests, window) = (30, 2);
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    for name in ["a", "b", "c"] {
        quota_pipeline(dir.path(), name, &ionapi, requests, window);
    }

    // Each process alone keeps to the quota, three together do not.
    sim_post(
        &sim,
        "quota",
        serde_json::json!({"requests": requests, "window_secs": window}),
    )
    .await;
    let (_, _) = three_runs(dir.path(), None).await;
    let alone = sim.counters();
    assert!(
        alone.rate_limited > 0,
        "three separate budgets overrun the quota: {alone:?}"
    );

    // One budget for all three through PostgreSQL.
    sim_post(&sim, "reset-counters", serde_json::json!({})).await;
    sim_post(
        &sim,
        "quota",
        serde_json::json!({"requests": requests, "window_secs": window}),
    )
    .await;
    let (results, elapsed) = three_runs(dir.path(), Some(&db.url)).await;
    let counters = sim.counters();
    for result in &results {
        assert_eq!(result.code, 0, "{}", result.all_output());
        let summary: serde_json::Value = serde_json::from_str(result.stdout.trim()).unwrap();
        assert_eq!(summary["records_in"], 30, "{summary}");
    }
    assert_eq!(
        counters.rate_limited, 0,
        "no 429 with one shared budget: {counters:?}"
    );
    let calls = counters.api_calls as f64;
    // At most `requests` per window, so the calls need that many windows;
    // the budget is used when they take little more.
    let floor = (calls / f64::from(requests)).ceil() - 1.0;
    let windows = elapsed.as_secs_f64() / f64::from(window);
    report(&format!(
        "shared quota: {calls} calls in {:.1} s ({windows:.1} windows of {window} s, floor {floor}), \
         0 x 429; three separate budgets: {} x 429",
        elapsed.as_secs_f64(),
        alone.rate_limited
    ));
    assert!(windows >= floor, "faster than the quota allows");
    let grants: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM ionflow_rate_grants", &[])
        .await
        .unwrap()
        .get(0);
    assert!(grants > 0, "the budget is kept in the database");
    sim.shutdown().await;
    db.drop().await;
}
