//! P7: writing records to M3 from a CSV file against a simulator that takes
//! 20 ms to answer each call, as a real gateway does: `ionflow run` with
//! requests in flight at once (`m3` sink, `concurrency = 64`) and in bulk
//! (`m3_bulk`, its default 100 transactions a request), against a Python
//! `requests` script sending one `AddItmBasic` after the other.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde_json::json;

use crate::procs::{Tools, measure, rounded};
use crate::report::{Figure, median};
use crate::sim::SimProcess;

/// The simulator's answer time for every business call in P7.
pub const ANSWER_MS: u64 = 20;
const CONCURRENCY: usize = 64;
const BULK_BATCH: usize = 100;

/// One CSV file of `count` items no other run adds (M3 refuses an item
/// number twice), named `P7{run}-{i}`.
fn write_items(path: &Path, run: usize, count: usize) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "item,name,unit")?;
    for i in 0..count {
        writeln!(out, "P7{run:02}-{i:07},Bench item {i} of run {run},EA")?;
    }
    out.flush()?;
    Ok(())
}

fn pipeline(dir: &Path, sim: &SimProcess, name: &str, sink: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[connections.m3]
ionapi_file = "{}"
rate_limit = {{ requests = 1000000, window_secs = 1 }}

[source]
kind = "file"
path = "items.csv"
format = "csv"

[[sinks]]
{sink}
connection = "m3"
program = "MMS200MI"
transaction = "AddItmBasic"
fields = {{ ITNO = "{{{{ record.item }}}}", ITDS = "{{{{ record.name }}}}", UNMS = "{{{{ record.unit }}}}" }}
"#,
            sim.ionapi_path.display()
        ),
    )?;
    Ok(path)
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Concurrent,
    Bulk,
    Python,
}

pub async fn p7(
    tools: &Tools,
    sim: &SimProcess,
    work: &Path,
    cache: &Path,
    quick: bool,
) -> anyhow::Result<Figure> {
    let records = if quick { 100 } else { 10_000 };
    let measure_text = &format!(
        "{records} M3 `AddItmBasic` records from a CSV file, the simulator answering each call in \
         {ANSWER_MS} ms: a sequential Python `requests` script's wall time ÷ `ionflow run`'s \
         (`m3` sink with `concurrency = {CONCURRENCY}`; `m3_bulk`, {BULK_BATCH} a request), rate \
         limit lifted"
    );
    let goal = "≥ 20× faster";
    if let Some(why) = &tools.python_missing {
        return Ok(Figure::not_measured("P7", measure_text, goal, why.clone()));
    }
    let dir = work.join("p7");
    std::fs::create_dir_all(&dir)?;
    let concurrent = pipeline(
        &dir,
        sim,
        "concurrent",
        &format!("kind = \"m3\"\nconcurrency = {CONCURRENCY}"),
    )?;
    let bulk = pipeline(
        &dir,
        sim,
        "bulk",
        &format!("kind = \"m3_bulk\"\nbatch_size = {BULK_BATCH}"),
    )?;
    let state = dir.join("state");
    let control = ionflow_runtime::tls::client();
    // Python takes about records × (answer time + ~1 ms): 3.5 minutes for
    // 10,000, so it runs once, between two runs of each ionflow variant.
    let order = [
        Side::Concurrent,
        Side::Bulk,
        Side::Python,
        Side::Bulk,
        Side::Concurrent,
    ];
    let (mut conc_ms, mut bulk_ms, mut py_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut conc_cpu, mut bulk_cpu, mut py_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for (run, side) in order.into_iter().enumerate() {
        let csv = dir.join("items.csv");
        write_items(&csv, run, records)?;
        let (suffix, expected) = match side {
            Side::Bulk => ("/v2/execute", records.div_ceil(BULK_BATCH) as u64),
            _ => ("MMS200MI/AddItmBasic", records as u64),
        };
        let before = sim.calls_to(&control, suffix).await?;
        let m = match side {
            Side::Concurrent => measure(
                &mut tools.ionflow_run(&concurrent, &state, cache),
                "ionflow run (m3 sink, concurrent)",
            )?,
            Side::Bulk => measure(
                &mut tools.ionflow_run(&bulk, &state, cache),
                "ionflow run (m3_bulk sink)",
            )?,
            Side::Python => measure(
                tools
                    .python("m3_add_items.py")
                    .arg(&sim.ionapi_path)
                    .arg(&csv),
                "python3 m3_add_items.py",
            )?,
        };
        let calls = sim.calls_to(&control, suffix).await? - before;
        if calls != expected {
            bail!("P7: a run made {calls} calls to {suffix}, not {expected}");
        }
        let (wall, cpu) = (m.wall.as_secs_f64() * 1000.0, m.cpu.as_secs_f64() * 1000.0);
        match side {
            Side::Concurrent => (conc_ms.push(wall), conc_cpu.push(cpu)),
            Side::Bulk => (bulk_ms.push(wall), bulk_cpu.push(cpu)),
            Side::Python => (py_ms.push(wall), py_cpu.push(cpu)),
        };
    }
    let raw = format!(
        "concurrent {:?} ms (CPU {:?}), bulk {:?} ms (CPU {:?}), Python {:?} ms (CPU {:?})",
        rounded(&conc_ms),
        rounded(&conc_cpu),
        rounded(&bulk_ms),
        rounded(&bulk_cpu),
        rounded(&py_ms),
        rounded(&py_cpu)
    );
    let (c, b, p) = (
        median(&mut conc_ms),
        median(&mut bulk_ms),
        median(&mut py_ms),
    );
    let mut f = Figure::new("P7", measure_text, goal);
    f.result = format!("{:.0}× with concurrency, {:.0}× in bulk", p / c, p / b);
    // Judged on the per-record sink: the simulator answers a bulk request
    // of 100 transactions in the same 20 ms as one, which flatters bulk.
    f.met = Some(p / c >= 20.0);
    f.detail(format!(
        "wall time: ionflow concurrent {c:.0} ms, bulk {b:.0} ms (median of 2 each), Python \
         {p:.0} ms (1 run: {:.2} ms a record); raw: {raw}; every run's calls counted by the \
         simulator",
        p / records as f64
    ));
    f.value(
        "values",
        json!({"records": records, "answer_ms": ANSWER_MS, "concurrency": CONCURRENCY,
               "bulk_batch": BULK_BATCH, "ionflow_concurrent_ms": c, "ionflow_bulk_ms": b,
               "python_ms": p, "ratio_concurrent": p / c, "ratio_bulk": p / b}),
    );
    Ok(f)
}
