//! The gateway simulator every figure runs against: `ionflow sim` in its own
//! process, so that its CPU time is never counted in the client measured,
//! and every client (the connector in this process, `ionflow run`, Python)
//! reaches the very same server over loopback.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub struct SimProcess {
    child: Child,
    pub base_url: String,
    pub ionapi_path: PathBuf,
    ionapi: Value,
}

impl SimProcess {
    pub fn start(
        ionflow: &Path,
        dir: &Path,
        name: &str,
        items: usize,
        token_ttl_secs: u64,
        slow_ms: u64,
    ) -> anyhow::Result<SimProcess> {
        let ionapi_path = dir.join(format!("{name}.ionapi"));
        let mut child = Command::new(ionflow)
            .args(["sim", "--port", "0", "--quiet"])
            .arg("--items")
            .arg(items.to_string())
            .arg("--token-ttl-secs")
            .arg(token_ttl_secs.to_string())
            .arg("--slow-ms")
            .arg(slow_ms.to_string())
            .arg("--ionapi-out")
            .arg(&ionapi_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} sim", ionflow.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .transpose()?
            .context("the simulator exited before it listened")?;
        let Some(base_url) = first.split_whitespace().find(|w| w.starts_with("http://")) else {
            bail!("unexpected first line from the simulator: {first}");
        };
        // Keep draining its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let text = std::fs::read_to_string(&ionapi_path)
            .with_context(|| format!("reading {}", ionapi_path.display()))?;
        Ok(SimProcess {
            child,
            base_url: base_url.to_owned(),
            ionapi_path,
            ionapi: serde_json::from_str(&text)?,
        })
    }

    pub fn ionapi_json(&self) -> String {
        self.ionapi.to_string()
    }

    pub fn field(&self, name: &str) -> String {
        self.ionapi[name].as_str().unwrap_or_default().to_owned()
    }

    async fn counters(&self, client: &reqwest::Client) -> anyhow::Result<Value> {
        Ok(client
            .get(format!("{}/__sim/counters", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Token-endpoint requests of every grant, from `/__sim/counters`.
    pub async fn token_requests(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        let counters = self.counters(client).await?;
        Ok(counters["token_requests"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0))
    }

    /// Business calls answered on paths ending with `suffix`.
    pub async fn calls_to(&self, client: &reqwest::Client, suffix: &str) -> anyhow::Result<u64> {
        let counters = self.counters(client).await?;
        Ok(counters["calls_by_path"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(path, _)| path.ends_with(suffix))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0))
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
