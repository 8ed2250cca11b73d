//! The `ionflow` command line.

mod api;
mod auth;
mod connection;
mod connector;
mod demo;
mod diagnostics;
mod exit;
mod inspect;
mod jq;
mod list;
mod output;
mod project;
mod replay;
mod run;
mod schedule;
mod sim;
mod state;
mod status;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer, Registry};

pub use exit::Exit;

use crate::config::ConfigError;
use crate::grants::Grants;
use crate::store::setting::HostConfig;
use crate::store::{Storage, StoreSetting};
use ionflow_runtime::capabilities::TokenStore;
use ionflow_runtime::{DEFAULT_MAX_RESPONSE_BYTES, Runtime, SandboxLimits};

#[derive(Debug, Parser)]
#[command(
    name = "ionflow",
    version,
    about = "Sandboxed integration runtime for Infor CloudSuite through the ION API Gateway",
    after_help = "Start with `ionflow demo`: it runs a pipeline against the built-in gateway simulator."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Where tokens, pipeline state and schedule leases live: "files" (the
    /// default) or postgres://USER:PASSWORD@HOST:PORT/DATABASE
    #[arg(long, global = true, env = "IONFLOW_STORE", hide_env_values = true)]
    store: Option<String>,
    /// A settings file (TOML: `store`, `lease_secs`)
    #[arg(long, global = true, env = "IONFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run pipelines/demo.toml against a simulator started in this process
    #[command(after_help = "Example:\n  ionflow demo --out ./ionflow-demo")]
    Demo(demo::DemoArgs),
    /// Run a pipeline once
    #[command(
        after_help = "Examples:\n  INFOR_ENV=test ionflow run pipelines/m3-items-to-csv.toml --json\n  ionflow run pipelines/csv-to-m3-items.toml --dry-run --limit 5\n  ionflow run pipelines/ido-items-to-jsonl.toml --full-refresh"
    )]
    Run(run::RunArgs),
    /// Check pipelines without calling any API or needing credentials: syntax, keys, jq, templates
    #[command(
        after_help = "A .ionapi file is read (and checked, offline) only when it is there.\n\nExamples:\n  ionflow validate pipelines/\n  ionflow validate pipelines/m3-items-to-csv.toml --json"
    )]
    Validate(run::ValidateArgs),
    /// Run the [[tests]] of pipelines offline: input records through the transforms and sink rendering
    #[command(after_help = "Example:\n  ionflow test pipelines/m3-items-to-csv.toml")]
    Test(run::TestArgs),
    /// Show, set or reset the saved watermarks of a pipeline
    #[command(
        subcommand,
        after_help = "Example:\n  ionflow state show pipelines/ido-items-to-jsonl.toml"
    )]
    State(state::StateCommand),
    /// Run a jq filter over sample records, as a transform would
    #[command(
        after_help = "Examples:\n  ionflow jq 'select(.STAT == \"20\") | {item: .ITNO}' pipelines/data/m3-items-sample.jsonl\n  ionflow jq 'select(.STAT == \"20\")' --from pipelines/m3-items-to-csv.toml --limit 5"
    )]
    Jq(jq::JqArgs),
    /// One authenticated gateway call, the answer printed as JSON
    #[command(
        after_help = "CONNECTION is a .ionapi file, env:NAME or PIPELINE.toml#NAME.\n\nExamples:\n  ionflow api GET M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic --query ITNO=A1 secrets/dev.ionapi\n  ionflow api POST IONSERVICES/api/ion/messaging/service/v2/message --data @message.json secrets/dev.ionapi"
    )]
    Api(api::ApiArgs),
    /// Send the records of a dead-letter file through the pipeline's sinks again
    #[command(
        after_help = "Records that succeed are removed from the file; the rest stay, with their new error.\n\nExample:\n  ionflow replay out/csv-to-m3-items.dead-letter.jsonl --pipeline pipelines/csv-to-m3-items.toml"
    )]
    Replay(replay::ReplayArgs),
    /// List the source, transform and sink kinds, one line each, with their docs section
    #[command(after_help = "Example:\n  ionflow list")]
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the pipeline format, for editor completion
    #[command(after_help = "Example:\n  ionflow schema > pipeline.schema.json")]
    Schema,
    /// Create an integration project: an example pipeline, .gitignore and README
    #[command(after_help = "Example:\n  ionflow init acme-integrations")]
    Init(project::InitArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  ionflow completions bash > ~/.local/share/bash-completion/completions/ionflow"
    )]
    Completions(project::CompletionsArgs),
    /// Start the local ION API Gateway simulator and write its .ionapi file
    #[command(after_help = SIM_HELP)]
    Sim(sim::SimArgs),
    /// Describe a connection's .ionapi file, secrets masked, and warn about risky settings
    #[command(
        after_help = "CONNECTION is a .ionapi file, env:NAME or PIPELINE.toml#NAME.\n\nExamples:\n  ionflow inspect secrets/acme-test.ionapi\n  ionflow inspect pipelines/m3-items-to-csv.toml#m3 --var INFOR_ENV=test"
    )]
    Inspect(inspect::InspectArgs),
    /// Get a token for a connection and show its metadata (the token only with --show-token)
    #[command(after_help = "Example:\n  ionflow token pipelines/m3-items-to-csv.toml#m3")]
    Token(connection::TokenArgs),
    /// Show the user a connection authenticates as (ifsservice users/me)
    #[command(
        after_help = "Prints: USER (DISPLAY NAME), tenant TENANT, grant GRANT\n\nExample:\n  ionflow whoami secrets/acme-test.ionapi --json"
    )]
    Whoami(connection::WhoamiArgs),
    /// Log a user in (authorization code + PKCE, loopback redirect) and keep the refresh token
    #[command(after_help = "Example:\n  ionflow login secrets/acme-web.ionapi --port 8765")]
    Login(auth::LoginArgs),
    /// Revoke a connection's refresh token and forget its tokens
    #[command(after_help = "Example:\n  ionflow logout secrets/acme-web.ionapi")]
    Logout(auth::StoredGrantArgs),
    /// Run every scheduled pipeline of a folder on its cron schedule until SIGTERM
    #[command(after_help = "Example:\n  ionflow serve pipelines/ --status-addr 127.0.0.1:9187")]
    Serve(schedule::ServeArgs),
    /// List scheduled pipelines: last and next run, and which worker holds a lease
    #[command(
        after_help = "Example:\n  IONFLOW_STORE=postgres://ionflow@db:5432/ionflow ionflow status"
    )]
    Status(status::StatusArgs),
    /// Print the next fire times of a pipeline's schedule, in its time zone and UTC
    #[command(
        after_help = "Example:\n  ionflow schedule pipelines/ido-items-to-jsonl.toml --count 5"
    )]
    Schedule(schedule::ScheduleArgs),
    /// Spend and rotate the stored refresh token now, so it never reaches the idle cut-off
    #[command(
        after_help = "Example (cron, weekly):\n  0 6 * * 1  ionflow keepalive /secrets/acme-web.ionapi"
    )]
    Keepalive(auth::StoredGrantArgs),
    /// Check which API paths the connection's authorized app may call (one GET each)
    #[command(
        name = "check-scope",
        after_help = "Exit code 0: all allowed; 3: some forbidden (403); 1: some answered otherwise.\n\nExample:\n  ionflow check-scope secrets/acme-test.ionapi M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm IDM/api/items/search"
    )]
    CheckScope(connection::CheckScopeArgs),
    /// The connector component and its WIT contract, for embedding in other hosts
    #[command(subcommand)]
    Connector(connector::ConnectorCommand),
}

/// What `ionflow sim --help` says it serves.
const SIM_HELP: &str =
    "Serves, under {iu}/{tenant}/, behind OAuth (all grants), scopes, quota and faults:
  M3        MMS200MI: LstItmByItm, GetItmBasic, AddItmBasic; bulk POST M3/m3api-rest/v2/execute
  IDO       SLItems: ido/load (filter, bookmarks), ido/update
  ION       IONSERVICES/api/ion/messaging/service/v2/message and v2/multipartMessage
  Data Lake IONSERVICES/datalakeapi/v1/payloads/list and payloads/streambyid (the ION
            messages received, and objects put with /__sim/datalake)
  Compass   DATAFABRIC/compass/v2/jobs (SQL over MITMAS)
  IFS       ifsservice/usermgt/v2/users/me
  Yours     --fixtures DIR: M3 programs, IDO collections and gateway paths from
            TOML files (docs/PIPELINES.md, \"Fixtures\"; `ionflow init` writes one)
Record mode (--record DIR --upstream CONNECTION): the simulator issues its own tokens
as usual but forwards every gateway call to CONNECTION's tenant (authenticated by the
connector; its token never leaves it), answers with what the tenant answered, and saves
M3 transactions, IDO loads and JSON GET answers in DIR in the --fixtures format, merged
with what DIR holds. Not saved: headers, tokens, secrets, write bodies, the tenant's URL
and id, or refused calls (401, 403, 429, 5xx). Writes are forwarded: they happen.
Control (loopback, no token): /__sim/counters, /__sim/faults, /__sim/quota,
/__sim/throttle, /__sim/token-faults, /__sim/expire-tokens, /__sim/revoke-tokens,
/__sim/messages, /__sim/datalake

Examples:
  ionflow sim --port 8787 --ionapi-out sim.ionapi
  ionflow sim --fixtures fixtures/ --ionapi-out secrets/dev.ionapi
  ionflow sim --record fixtures/ --upstream secrets/acme-test.ionapi --ionapi-out secrets/dev.ionapi";

/// Parses the command line, runs the command and turns its outcome into an
/// exit code that a scheduler can act on (see README, "Exit codes").
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match Settings::resolve(cli.store.as_deref(), cli.config.as_deref()) {
        Ok(settings) => {
            let _ = SETTINGS.set(settings);
        }
        Err(error) => return fail(&error.into(), Exit::Config),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            let error = anyhow::Error::from(e).context("could not start the async runtime");
            return fail(&error, Exit::Failure);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::demo(args, cli.quiet).await,
            Command::Run(args) => run::run(args, cli.quiet).await,
            Command::Validate(args) => run::validate(args).await,
            Command::Test(args) => run::test(args, cli.quiet),
            Command::State(command) => state::state(command).await,
            Command::Jq(args) => jq::jq(args).await,
            Command::Api(args) => api::api(args).await,
            Command::Replay(args) => replay::replay(args).await,
            Command::List { json } => list::list(json),
            Command::Schema => project::schema(),
            Command::Init(args) => project::init(args, cli.quiet),
            Command::Completions(args) => project::completions(args),
            Command::Sim(args) => sim::sim(args).await,
            Command::Inspect(args) => inspect::inspect(args).await,
            Command::Token(args) => connection::token(args).await,
            Command::Whoami(args) => connection::whoami(args).await,
            Command::Login(args) => auth::login(args, cli.quiet).await,
            Command::Logout(args) => auth::logout(args).await,
            Command::Keepalive(args) => auth::keepalive(args).await,
            Command::Serve(args) => schedule::serve_command(args).await,
            Command::Schedule(args) => schedule::schedule(args).await,
            Command::Status(args) => status::status(args).await,
            Command::CheckScope(args) => connection::check_scope(args).await,
            Command::Connector(command) => connector::connector(command).await,
        }
    });
    // The last spans are sent, with a bounded wait.
    crate::traces::flush();
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            let exit = Exit::classify(&error);
            fail(&error, exit)
        }
    }
}

/// The command's last word: `error: ...` on stderr, or with JSON logs a
/// JSON line (message, exit code, error kind) like every other line.
fn fail(error: &anyhow::Error, exit: Exit) -> ExitCode {
    if json_logs() {
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "ERROR",
            "fields": {
                "message": format!("{error:#}"),
                "exit_code": exit as u8,
                "error_kind": exit.kind(),
            },
            "target": "ionflow",
        });
        eprintln!("{line}");
    } else {
        eprintln!("error: {error:#}");
    }
    exit.into()
}

static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--log-format json` was chosen: then stderr holds JSON lines only.
pub fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

fn init_logging(cli: &Cli) {
    // A daemon's run events are its output; a one-shot command stays quiet.
    let daemon = matches!(cli.command, Command::Serve(_));
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // Our own crates at the chosen level; dependencies stay at warn unless
    // IONFLOW_LOG says otherwise.
    let directives = std::env::var("IONFLOW_LOG").unwrap_or_else(|_| {
        if cli.verbose >= 3 {
            // Everything, but wasmtime's and cranelift's compiler internals
            // (type registries, code generation), which are most of the
            // lines and say nothing about a run.
            "trace,wasmtime=info,wasmtime_environ=info,wasmtime_cranelift=info,\
             wasmtime_internal_cranelift=info,wasmtime_internal_environ=info,\
             cranelift=info,cranelift_codegen=info,cranelift_frontend=info,\
             cranelift_wasm=info,cranelift_entity=info,regalloc2=info,\
             wasmparser=info,wit_parser=info,wit_component=info,\
             h2=info,hyper=info,hyper_util=info,rustls=info"
                .into()
        } else {
            format!("warn,ionflow={default},ionflow_runtime={default}")
        }
    });
    // tokio-postgres logs every statement's parameters at debug level, and
    // those parameters are token-store values: warnings only, whatever the
    // directives say (its info lines are server notices, noise here). Page
    // and call spans are for traces only: in a log line, the span stays the
    // run's, with the pipeline and run id.
    let always = format!(
        "tokio_postgres=warn,postgres_protocol=warn,{}=off",
        crate::traces::SPAN_TARGET
    );
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{directives},{always}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},{always}")));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match cli.log_format {
        LogFormat::Text => Box::new(lines),
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            Box::new(lines.json())
        }
    };
    // Each layer filters for itself: the log level never hides a span from
    // the traces, and traces never add a line to the log.
    let lines = tracing_subscriber::registry().with(lines.with_filter(filter));
    if let Some(e) = crate::traces::init(lines) {
        tracing::warn!("{e}");
    }
}

/// Where precompiled connector artifacts are cached between runs.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("IONFLOW_CACHE_DIR") {
        return Some(dir.into());
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("ionflow"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/ionflow"))
}

/// Where ionflow keeps state between runs: tokens, run locks, watermarks
/// and schedule status. Created 0700 (and narrowed to 0700 if an older run
/// left it wider), whatever the umask: nobody else may read or swap what
/// is inside.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let dir = if let Some(dir) = std::env::var_os("IONFLOW_STATE_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        PathBuf::from(dir).join("ionflow")
    } else {
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".local/state/ionflow"))
            .ok_or_else(|| {
                anyhow::anyhow!("set IONFLOW_STATE_DIR (or HOME) to a folder for ionflow's state")
            })?
    };
    ionflow_runtime::private_files::create_dir(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the state folder {} ({e}); set IONFLOW_STATE_DIR to a folder you may write",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// The process's storage and lease settings, resolved once from the command
/// line, the environment and the config file.
#[derive(Debug)]
pub struct Settings {
    pub store: StoreSetting,
    pub lease_secs: f64,
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

/// A schedule lease lasts this long without renewal unless set otherwise.
pub const DEFAULT_LEASE_SECS: f64 = 30.0;

impl Settings {
    /// `--store`/`IONFLOW_STORE` wins over `store` in the config file.
    pub fn resolve(
        store: Option<&str>,
        config: Option<&std::path::Path>,
    ) -> Result<Settings, crate::store::StorageError> {
        let file = match config {
            Some(path) => HostConfig::load(path)?,
            None => HostConfig::default(),
        };
        let config_origin = config.map(|p| format!("`store` in {}", p.display()));
        let store = match (store, &file.store) {
            (Some(value), _) => StoreSetting::parse(value, "IONFLOW_STORE (--store)")?,
            (None, Some(value)) => {
                StoreSetting::parse(value, config_origin.as_deref().unwrap_or("store"))?
            }
            (None, None) => StoreSetting::Files,
        };
        let lease_secs = file.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
        if !(lease_secs.is_finite() && (0.2..=86_400.0).contains(&lease_secs)) {
            return Err(crate::store::StorageError::Setting(format!(
                "`lease_secs` in {}: {lease_secs} is out of range; use 0.2 to 86400 seconds",
                config.map(|p| p.display().to_string()).unwrap_or_default()
            )));
        }
        Ok(Settings { store, lease_secs })
    }
}

pub fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        store: StoreSetting::Files,
        lease_secs: DEFAULT_LEASE_SECS,
    })
}

/// The configured storage: files under the state folder, or PostgreSQL
/// (connected and migrated here).
pub async fn open_storage() -> anyhow::Result<Arc<dyn Storage>> {
    crate::store::open(&settings().store, &state_dir()?, &crate::store::worker_id()).await
}

/// One runtime per process, its tokens in the configured store, shared with
/// every other ionflow process that uses the same store.
pub async fn new_runtime() -> anyhow::Result<Runtime> {
    Ok(new_session().await?.0)
}

/// The runtime and this process's holds on grants, in the configured store.
pub async fn new_session() -> anyhow::Result<(Runtime, Grants)> {
    let storage = open_storage().await?;
    let runtime = runtime_on(storage.tokens())?;
    Ok((runtime, grants_of(storage.as_ref())))
}

/// This process's holds on the grants of `storage`; on PostgreSQL a hold
/// lapses `lease_secs` after its process stopped renewing it.
pub fn grants_of(storage: &dyn Storage) -> Grants {
    Grants::of(
        storage,
        std::time::Duration::from_secs_f64(settings().lease_secs),
    )
}
/// The runtime over a token store: the connector from the cache folder,
/// under this process's sandbox limits.
pub fn runtime_on(tokens: Arc<dyn TokenStore>) -> anyhow::Result<Runtime> {
    let limits = sandbox_limits()?;
    Ok(Runtime::new(tokens, cache_dir().as_deref())?.with_limits(limits))
}

const MAX_RESPONSE_VAR: &str = "IONFLOW_MAX_RESPONSE_BYTES";

/// The default sandbox limits, with the response cap of
/// `IONFLOW_MAX_RESPONSE_BYTES` when it is set (for hosts with less memory
/// to spare than the default 512 MiB per answer).
pub fn sandbox_limits() -> Result<SandboxLimits, ConfigError> {
    let mut limits = SandboxLimits::default();
    let Some(value) = std::env::var_os(MAX_RESPONSE_VAR) else {
        return Ok(limits);
    };
    let bytes = value
        .to_str()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|b| (1024..=DEFAULT_MAX_RESPONSE_BYTES * 8).contains(b))
        .ok_or_else(|| {
            ConfigError::new(
                std::path::Path::new(MAX_RESPONSE_VAR),
                format!(
                    "must be a number of bytes from 1024 to {} (default {DEFAULT_MAX_RESPONSE_BYTES}); \
                     fix or unset the variable",
                    DEFAULT_MAX_RESPONSE_BYTES * 8
                ),
            )
        })?;
    limits.response_bytes = bytes;
    Ok(limits)
}

/// `KEY=VALUE` pairs from `--var`.
pub fn parse_vars(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    crate::pipeline::UsageError(format!("--var {pair}: write NAME=VALUE")).into()
                })
        })
        .collect()
}

/// Progress bars only on an interactive terminal.
pub fn interactive(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that
/// arrives while a run is starting is not lost to the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
