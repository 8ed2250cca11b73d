//! The `ionflow` command line.

mod connection;
mod demo;
mod exit;
mod project;
mod run;
mod sim;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

pub use exit::Exit;

use crate::runtime::Runtime;
use crate::runtime::capabilities::MemoryTokenStore;

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
    #[command(after_help = "Example:\n  INFOR_ENV=test ionflow run pipelines/m3-items.toml --json")]
    Run(run::RunArgs),
    /// Check pipelines without calling any API: syntax, keys, jq filters, templates, connections
    #[command(after_help = "Example:\n  ionflow validate pipelines/*.toml")]
    Validate(run::ValidateArgs),
    /// Run the [[tests]] of pipelines offline: input records through the transforms and sink rendering
    #[command(after_help = "Example:\n  ionflow test pipelines/m3-items-to-csv.toml")]
    Test(run::TestArgs),
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
    #[command(after_help = "Example:\n  ionflow sim --port 8787 --ionapi-out sim.ionapi")]
    Sim(sim::SimArgs),
    /// Show the user a connection authenticates as (ifsservice users/me)
    #[command(after_help = "Example:\n  ionflow whoami secrets/acme-test.ionapi")]
    Whoami(connection::ConnectionArgs),
}

/// Parses the command line, runs the command and turns its outcome into an
/// exit code that a scheduler can act on (see README, "Exit codes").
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::demo(args, cli.quiet).await,
            Command::Run(args) => run::run(args, cli.quiet).await,
            Command::Validate(args) => run::validate(args).await,
            Command::Test(args) => run::test(args, cli.quiet),
            Command::Schema => project::schema(),
            Command::Init(args) => project::init(args, cli.quiet),
            Command::Completions(args) => project::completions(args),
            Command::Sim(args) => sim::sim(args).await,
            Command::Whoami(args) => connection::whoami(args).await,
        }
    });
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::classify(&error).into()
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // Our own crates at the chosen level; dependencies stay at warn unless
    // IONFLOW_LOG says otherwise.
    let directives = std::env::var("IONFLOW_LOG").unwrap_or_else(|_| {
        if cli.verbose >= 3 {
            "trace".into()
        } else {
            format!("warn,ionflow={default}")
        }
    });
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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

/// One runtime per process, with tokens kept in memory for the run.
pub fn new_runtime() -> anyhow::Result<Runtime> {
    Runtime::new(Arc::new(MemoryTokenStore::new()), cache_dir().as_deref())
}

/// `KEY=VALUE` pairs from `--var`.
pub fn parse_vars(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--var {pair}: write NAME=VALUE"))
        })
        .collect()
}

/// Progress bars only on an interactive terminal.
pub fn interactive(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}
