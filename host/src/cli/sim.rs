//! `ionflow sim`: the gateway simulator as a long-running process, serving
//! its built-in products and fixtures, or (`--record`) forwarding to a real
//! tenant and recording its answers as fixtures.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use futures::future::BoxFuture;

use super::Exit;
use super::connection::{ConnectionArgs, Diagnostic};
use super::output::outln;
use crate::config::UsageError;
use ionflow_runtime::{ConnectorError, ErrorKind, GatewayRequest, Method};
use ionflow_sim::{Answer, Forward, Refusal, SimConfig, Simulator, Upstream};

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(flatten)]
    config: SimConfig,
    /// Where to write the simulator's .ionapi file
    #[arg(long, default_value = "sim.ionapi")]
    ionapi_out: PathBuf,
    /// Record mode: forward every gateway call to --upstream and save the
    /// answers as fixtures in DIR (merged with those there), for later
    /// `--fixtures DIR` runs
    #[arg(
        long,
        value_name = "DIR",
        requires = "upstream",
        conflicts_with = "fixtures"
    )]
    record: Option<PathBuf>,
    /// The tenant record mode forwards to: a .ionapi file, env:NAME or
    /// PIPELINE.toml#NAME, authenticated by the connector as `ionflow api` is
    #[arg(long, value_name = "CONNECTION", requires = "record")]
    upstream: Option<String>,
}

/// The upstream of record mode: one connector connection, holding its
/// grant like `ionflow api` does. Its token never leaves the connector.
struct ConnectionUpstream {
    session: Arc<Diagnostic>,
    base_url: String,
    tenant: String,
}

fn method(name: &str) -> Option<Method> {
    Some(match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        _ => return None,
    })
}

/// The status the client sees for a call the upstream refused or that
/// could not be made; the message is the connector's, secrets masked.
fn refusal(error: &ConnectorError) -> Refusal {
    let status = match error.kind() {
        ErrorKind::Authentication => 401,
        ErrorKind::Forbidden => 403,
        ErrorKind::Unavailable if error.is_rate_limited() => 429,
        ErrorKind::Unavailable => 503,
        ErrorKind::Configuration => 400,
        ErrorKind::Failed | ErrorKind::Sandbox => 502,
    };
    Refusal {
        status,
        message: format!("the upstream tenant: {error}"),
        retry_after_secs: error.retry_after_secs(),
    }
}

impl Upstream for ConnectionUpstream {
    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn tenant(&self) -> String {
        self.tenant.clone()
    }

    fn call(&self, request: Forward) -> BoxFuture<'_, Result<Answer, Refusal>> {
        Box::pin(async move {
            let Some(method) = method(&request.method) else {
                return Err(Refusal {
                    status: 405,
                    message: format!("the gateway does not route {}", request.method),
                    retry_after_secs: None,
                });
            };
            let request = GatewayRequest {
                method,
                path: request.path,
                query: request.query,
                headers: request.headers,
                body: request.body,
                timeout_ms: None,
            };
            match self.session.connection.call(request).await {
                Ok(response) => Ok(Answer {
                    status: response.status,
                    headers: response.headers,
                    body: response.body,
                }),
                Err(error) => Err(refusal(&error)),
            }
        })
    }
}

/// The simulator refuses to start only over what the user gave it (its
/// options, a fixture or recording folder, a port to listen on): a
/// configuration error, exit 2, with the file and the fix in the message.
fn refused(error: anyhow::Error) -> anyhow::Error {
    UsageError(format!("{error:#}")).into()
}

pub async fn sim(args: SimArgs) -> anyhow::Result<Exit> {
    let mut session = None;
    let sim = match (&args.record, &args.upstream) {
        (Some(dir), Some(upstream)) => {
            let connection = ConnectionArgs {
                connection: upstream.clone(),
                vars: Vec::new(),
            };
            let held = Arc::new(Diagnostic::begin(&connection).await?);
            let info = held.connection.info();
            let forwarder = Arc::new(ConnectionUpstream {
                session: held.clone(),
                base_url: info.ion_api_url.clone(),
                tenant: info.tenant.clone(),
            });
            session = Some(held);
            Simulator::start_recording(args.config, dir, forwarder)
                .await
                .map_err(refused)?
        }
        _ => Simulator::start(args.config).await.map_err(refused)?,
    };
    sim.write_ionapi(&args.ionapi_out)?;
    outln!("ION API Gateway simulator listening on {}", sim.base_url());
    outln!("credentials written to {}", args.ionapi_out.display());
    if let (Some(dir), Some(upstream)) = (&args.record, &args.upstream) {
        outln!(
            "recording: every gateway call goes to {upstream}; its answers are saved as fixtures in {}",
            dir.display()
        );
    }
    for line in sim.fixtures() {
        outln!("fixture: {line}");
    }
    outln!(
        "counters: {}/__sim/counters; stop with Ctrl-C",
        sim.base_url()
    );
    super::shutdown_signal().await;
    sim.shutdown().await;
    // The simulator is gone, so this is the last holder of the session;
    // releasing the grant is a courtesy, not a correctness matter.
    if let Some(session) = session.and_then(Arc::into_inner) {
        session.end().await;
    }
    Ok(Exit::Success)
}
