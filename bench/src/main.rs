//! ionflow-bench: the figures P1..P7 of BENCHMARKS.md, each a ratio of two
//! measurements taken in the same run against the same local simulator.
//!
//! Usually started by `bench/run`, which builds ionflow and this binary with
//! the one release profile and installs the comparators (jq, Python
//! `requests`). `--quick` is the small-size run CI does: it checks that every
//! figure completes, not what it is.

mod calls;
mod procs;
mod report;
mod sim;
mod writes;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;

use report::{Context, Figure};
use sim::SimProcess;

#[derive(Debug, Parser)]
#[command(
    name = "ionflow-bench",
    about = "ionflow's benchmarks P1..P7 (see BENCHMARKS.md)"
)]
struct Args {
    /// Small sizes, one round: checks that every figure runs (CI)
    #[arg(long)]
    quick: bool,
    /// Write the Markdown table here
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every figure and its raw numbers as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// The ionflow binary to measure (default: next to this one)
    #[arg(long)]
    ionflow: Option<PathBuf>,
    /// Only these figures, e.g. --only P1,P4
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Another ionflow binary to measure on P4 in the same rounds, for a
    /// before/after figure (repeatable), e.g. --p4-compare main=/tmp/ionflow-main
    #[arg(long = "p4-compare", value_name = "LABEL=PATH")]
    p4_compare: Vec<String>,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Items in the catalogue of P1/P3/P6's simulator (P6 fetches all of them).
const ITEMS: usize = 10_000;
/// P2's tokens live this long, so that a run covers a token's whole life.
const P2_TOKEN_TTL_SECS: u64 = 8;

fn main() -> anyhow::Result<()> {
    // The measuring helper of `procs::measure`: before anything else, so
    // that its address space stays small.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == procs::HELPER) {
        procs::helper(&argv[2..]);
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let ionflow = match &args.ionflow {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder for this binary")?
            .join("ionflow"),
    };
    anyhow::ensure!(
        ionflow.exists(),
        "{} does not exist: build it first (`cargo build --release`, which bench/run does)",
        ionflow.display()
    );
    let wanted =
        |id: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let work = tempfile::tempdir()?;
    let cache = work.path().join("cache");
    let p4_compare = args
        .p4_compare
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(l, p)| (l.to_owned(), PathBuf::from(p)))
                .with_context(|| format!("--p4-compare {c}: expected LABEL=PATH"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tools = procs::Tools::detect(ionflow.clone(), p4_compare);
    for missing in [&tools.python_missing, &tools.jq_missing, &tools.jaq_missing]
        .into_iter()
        .flatten()
    {
        eprintln!("warning: {missing}; the figures that need it are reported as not measured");
    }

    let sim = SimProcess::start(&ionflow, work.path(), "sim", ITEMS, 7200, 0)?;
    let mut figures: Vec<Figure> = Vec::new();
    if wanted("P1") {
        eprintln!("P1: connector vs native reqwest ...");
        figures.push(calls::p1(&sim, &cache, args.quick).await?);
    }
    if wanted("P2") {
        eprintln!("P2: token requests ...");
        let short = SimProcess::start(
            &ionflow,
            work.path(),
            "sim-short",
            1000,
            P2_TOKEN_TTL_SECS,
            0,
        )?;
        figures.push(calls::p2(&short, &cache, P2_TOKEN_TTL_SECS).await?);
    }
    if wanted("P3") {
        eprintln!("P3: start-up of ionflow run vs Python ...");
        figures.push(procs::p3(&tools, &sim, work.path(), args.quick)?);
    }
    if wanted("P4") || wanted("P5") {
        eprintln!("P4/P5: jq throughput and peak RSS on files ...");
        let both = procs::p4_p5(&tools, work.path(), &cache, args.quick)?;
        figures.extend(both.into_iter().filter(|f| wanted(f.id)));
    }
    if wanted("P6") {
        eprintln!("P6: M3 items end to end vs Python ...");
        let floor = calls::page_floor(&sim, 500, if args.quick { 1 } else { 5 }).await?;
        figures.push(procs::p6(
            &tools,
            &sim,
            work.path(),
            &cache,
            ITEMS,
            floor,
            args.quick,
        )?);
    }
    drop(sim);
    if wanted("P7") {
        eprintln!("P7: M3 writes from a CSV file vs sequential Python ...");
        let slow = SimProcess::start(
            &ionflow,
            work.path(),
            "sim-slow",
            1000,
            7200,
            writes::ANSWER_MS,
        )?;
        figures.push(writes::p7(&tools, &slow, work.path(), &cache, args.quick).await?);
    }

    let cx = Context {
        command: command_line(),
        date: std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        machine: machine(),
        quick: args.quick,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let md = report::markdown(&figures, &cx);
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report::json(&figures, &cx))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn command_line() -> String {
    std::env::var("IONFLOW_BENCH_COMMAND").unwrap_or_else(|_| {
        std::env::args()
            .map(|a| a.rsplit('/').next().unwrap_or(&a).to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// CPU model, core count, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}
