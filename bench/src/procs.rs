//! P3..P6: whole processes (`ionflow run`, Python `requests` scripts, the
//! `jq` binary), each timed and measured with wait4(2).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::report::{Figure, median};
use crate::sim::SimProcess;

/// What one child process took.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    pub max_rss_kib: u64,
}

/// Runs `cmd` to completion; fails unless it exits 0.
pub fn measure(cmd: &mut Command, what: &str) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if reaped != pid {
        bail!("{what}: wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{what} failed (wait status {status})");
    }
    Ok(Measured {
        wall,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: usage.ru_maxrss as u64,
    })
}

pub struct Tools {
    pub ionflow: PathBuf,
    /// `None`, or why Python with `requests` cannot be used.
    pub python_missing: Option<String>,
    pub jq_missing: Option<String>,
    pub python_dir: PathBuf,
}

impl Tools {
    pub fn detect(ionflow: PathBuf) -> Tools {
        let works = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let python_missing = (!works(Command::new("python3").args(["-c", "import requests"])))
            .then(|| {
                "Python 3 with `requests` is not installed: `pip install requests` \
                 (bench/run does this), then run again"
                    .to_owned()
            });
        let jq_missing = (!works(Command::new("jq").arg("--version"))).then(|| {
            "the jq command-line tool is not installed: `apt-get install -y jq` \
             (bench/run does this), then run again"
                .to_owned()
        });
        Tools {
            ionflow,
            python_missing,
            jq_missing,
            python_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        }
    }

    fn ionflow_run(&self, pipeline: &Path, state: &Path, cache: &Path) -> Command {
        let mut cmd = Command::new(&self.ionflow);
        cmd.arg("--quiet")
            .arg("run")
            .arg(pipeline)
            .env("IONFLOW_STATE_DIR", state)
            .env("IONFLOW_CACHE_DIR", cache)
            .stdout(Stdio::null());
        cmd
    }

    fn python(&self, script: &str) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(self.python_dir.join(script)).stdout(Stdio::null());
        cmd
    }

    pub fn version(&self, program: &str, arg: &str) -> String {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text).trim().to_owned()
            })
            .unwrap_or_default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lines_of(path: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.iter().filter(|b| **b == b'\n').count())
}

const LIFTED_LIMIT: &str = "rate_limit = { requests = 1000000, window_secs = 1 }";

pub fn p3(tools: &Tools, sim: &SimProcess, work: &Path, quick: bool) -> anyhow::Result<Figure> {
    let measure_text = "wall time of `ionflow run` on a one-call pipeline (token, M3 GetItmBasic, \
                        JSONL out, revoke) ÷ a Python `requests` script doing the same call";
    let goal = "≤ 0.33×";
    if let Some(why) = &tools.python_missing {
        return Ok(Figure::not_measured("P3", measure_text, goal, why.clone()));
    }
    let dir = work.join("p3");
    std::fs::create_dir_all(&dir)?;
    let pipeline = dir.join("one-call.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"[connections.m3]
ionapi_file = "{}"
{LIFTED_LIMIT}

[source]
kind = "gateway"
connection = "m3"
path = "M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic"
query = {{ ITNO = "ITM000042" }}
records_pointer = "/results/0/records"

[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            sim.ionapi_path.display()
        ),
    )?;
    let state = dir.join("state");
    let (cold_runs, warm_runs) = if quick { (1, 3) } else { (3, 15) };
    let mut cold = Vec::new();
    for i in 0..cold_runs {
        // An empty cache: the connector is compiled with Cranelift.
        let cache = dir.join(format!("cold-cache-{i}"));
        cold.push(ms(measure(
            &mut tools.ionflow_run(&pipeline, &state, &cache),
            "ionflow run (first run)",
        )?
        .wall));
    }
    let cache = dir.join("cache");
    measure(
        &mut tools.ionflow_run(&pipeline, &state, &cache),
        "ionflow run",
    )?;
    let artifacts = std::fs::read_dir(&cache)?.count();
    let py_out = dir.join("py-out.jsonl");
    let (mut warm, mut python) = (Vec::new(), Vec::new());
    for i in 0..warm_runs {
        let ionflow = || -> anyhow::Result<f64> {
            Ok(ms(measure(
                &mut tools.ionflow_run(&pipeline, &state, &cache),
                "ionflow run",
            )?
            .wall))
        };
        let py = || -> anyhow::Result<f64> {
            Ok(ms(measure(
                tools
                    .python("one_call.py")
                    .arg(&sim.ionapi_path)
                    .arg(&py_out),
                "python3 one_call.py",
            )?
            .wall))
        };
        if i % 2 == 0 {
            warm.push(ionflow()?);
            python.push(py()?);
        } else {
            python.push(py()?);
            warm.push(ionflow()?);
        }
    }
    if lines_of(&dir.join("out.jsonl"))? != 1 || lines_of(&py_out)? != 1 {
        bail!("P3: a one-call run did not write exactly one record");
    }
    let (cold, warm, python) = (median(&mut cold), median(&mut warm), median(&mut python));
    let mut figure = Figure::new("P3", measure_text, goal);
    let (r_cold, r_warm) = (cold / python, warm / python);
    figure.result = format!("later runs {r_warm:.2}×, first run {r_cold:.2}×");
    figure.met = Some(r_warm <= 0.33);
    figure.detail(format!(
        "median wall time: ionflow later runs {warm:.1} ms ({warm_runs} runs, precompiled \
         connector loaded from the cache: {artifacts} artifact file), first run {cold:.1} ms \
         ({cold_runs} runs, empty cache: Cranelift compiles the component), Python {python:.1} ms \
         ({warm_runs} runs, {})",
        tools.version("python3", "--version")
    ));
    figure.value(
        "values",
        json!({"ionflow_first_ms": cold, "ionflow_later_ms": warm, "python_ms": python,
               "ratio_later": r_warm, "ratio_first": r_cold}),
    );
    Ok(figure)
}

/// The records of P4 and P5: M3-like items, a third of them blocked.
fn write_records(path: &Path, count: usize) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..count {
        writeln!(
            out,
            r#"{{"ITNO":"ITM{i:07}","ITDS":"Item number {i} with a description","STAT":"{}","GRWE":"{}.125","UNMS":"EA"}}"#,
            if i % 3 == 0 { "90" } else { "20" },
            i % 1000
        )?;
    }
    out.flush()?;
    Ok(())
}

const FILTER: &str =
    r#"select(.STAT == "20") | {item: .ITNO, name: .ITDS, kg: (.GRWE | tonumber)}"#;

fn file_pipeline(dir: &Path, count: usize) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let input = dir.join(format!("in-{count}.jsonl"));
    if !input.exists() {
        write_records(&input, count)?;
    }
    let output = dir.join(format!("out-{count}.jsonl"));
    let pipeline = dir.join(format!("file-{count}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            r#"[source]
kind = "file"
path = "{}"

[[transforms]]
kind = "jq"
filter = '{FILTER}'

[[sinks]]
kind = "file"
path = "{}"
"#,
            input.display(),
            output.display()
        ),
    )?;
    Ok((input, output, pipeline))
}

/// P4 and P5 together: the 1M-record `ionflow run` of P4 is also P5's large run.
pub fn p4_p5(tools: &Tools, work: &Path, cache: &Path, quick: bool) -> anyhow::Result<Vec<Figure>> {
    let dir = work.join("files");
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("state");
    let (small, large) = if quick {
        (10_000, 100_000)
    } else {
        (100_000, 1_000_000)
    };
    let rounds = if quick { 1 } else { 2 };

    let (_, small_out, small_pipeline) = file_pipeline(&dir, small)?;
    let mut small_rss = Vec::new();
    for _ in 0..rounds {
        let m = measure(
            &mut tools.ionflow_run(&small_pipeline, &state, cache),
            "ionflow run (file pipeline)",
        )?;
        small_rss.push(m.max_rss_kib as f64);
    }
    let expected = (0..small).filter(|i| i % 3 != 0).count();
    if lines_of(&small_out)? != expected {
        bail!("P5: the {small}-record run wrote the wrong number of records");
    }

    let (input, large_out, large_pipeline) = file_pipeline(&dir, large)?;
    let expected = (0..large).filter(|i| i % 3 != 0).count();
    let (mut ours, mut theirs, mut large_rss) = (Vec::new(), Vec::new(), Vec::new());
    let jq_out = dir.join("jq-out.jsonl");
    for round in 0..rounds {
        let mut ionflow = || -> anyhow::Result<()> {
            let m = measure(
                &mut tools.ionflow_run(&large_pipeline, &state, cache),
                "ionflow run (file pipeline)",
            )?;
            ours.push(large as f64 / m.wall.as_secs_f64());
            large_rss.push(m.max_rss_kib as f64);
            Ok(())
        };
        let mut jq = || -> anyhow::Result<()> {
            if tools.jq_missing.is_some() {
                return Ok(());
            }
            let m = measure(
                Command::new("jq")
                    .arg("-c")
                    .arg(FILTER)
                    .arg(&input)
                    .stdout(std::fs::File::create(&jq_out)?),
                "jq",
            )?;
            theirs.push(large as f64 / m.wall.as_secs_f64());
            Ok(())
        };
        if round % 2 == 0 {
            ionflow()?;
            jq()?;
        } else {
            jq()?;
            ionflow()?;
        }
    }
    if lines_of(&large_out)? != expected {
        bail!("P4: ionflow wrote the wrong number of records");
    }

    let p4_measure = &format!(
        "jq transform throughput, records/s of a {large}-record JSONL file to JSONL \
         (`ionflow run`: file source, one jq step, file sink) ÷ the `jq` command-line tool, same filter"
    );
    let p4 = match &tools.jq_missing {
        Some(why) => Figure::not_measured("P4", p4_measure, "≥ 1.5×", why.clone()),
        None => {
            if lines_of(&jq_out)? != expected {
                bail!("P4: jq wrote the wrong number of records");
            }
            let (o, t) = (median(&mut ours), median(&mut theirs));
            let mut f = Figure::new("P4", p4_measure, "≥ 1.5×");
            f.result = format!("{:.2}×", o / t);
            f.met = Some(o / t >= 1.5);
            f.detail(format!(
                "ionflow {o:.0} records/s, {} {t:.0} records/s (median of {rounds}; filter `{FILTER}`)",
                tools.version("jq", "--version")
            ));
            f.value(
                "values",
                json!({"ionflow_records_per_s": o, "jq_records_per_s": t, "ratio": o / t, "records": large}),
            );
            f
        }
    };

    let (s, l) = (median(&mut small_rss), median(&mut large_rss));
    let mut p5 = Figure::new(
        "P5",
        &format!(
            "peak RSS of `ionflow run` on the streamed file-to-file pipeline of P4, {large} vs {small} records"
        ),
        "1M ≤ 1.2× 100k, and < 100 MB",
    );
    let ratio = l / s;
    p5.result = format!(
        "{:.1} MiB vs {:.1} MiB: {ratio:.2}×",
        l / 1024.0,
        s / 1024.0
    );
    p5.met = Some(ratio <= 1.2 && l < 100.0 * 1000.0 * 1000.0 / 1024.0);
    p5.detail(format!(
        "peak RSS (wait4 ru_maxrss of the child): {small} records {s:.0} KiB, {large} records {l:.0} KiB"
    ));
    p5.value(
        "values",
        json!({"small_records": small, "large_records": large, "small_kib": s, "large_kib": l, "ratio": ratio}),
    );
    Ok(vec![p4, p5])
}

pub fn p6(
    tools: &Tools,
    sim: &SimProcess,
    work: &Path,
    cache: &Path,
    items: usize,
    quick: bool,
) -> anyhow::Result<Figure> {
    let measure_text = &format!(
        "end to end: {items} M3 items (LstItmByItm paged by key, 500 a page, reshaped, to JSONL): \
         a Python `requests` script's wall time ÷ `ionflow run`'s"
    );
    let goal = "≥ 5× faster";
    if let Some(why) = &tools.python_missing {
        return Ok(Figure::not_measured("P6", measure_text, goal, why.clone()));
    }
    let dir = work.join("p6");
    std::fs::create_dir_all(&dir)?;
    let pipeline = dir.join("m3-items.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"[connections.m3]
ionapi_file = "{}"
{LIFTED_LIMIT}

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 500

[[transforms]]
kind = "jq"
filter = '{{item: .ITNO, description: .ITDS, type: .ITTY, active: (.STAT == "20")}}'

[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            sim.ionapi_path.display()
        ),
    )?;
    let state = dir.join("state");
    let py_out = dir.join("py-out.jsonl");
    let rounds = if quick { 1 } else { 5 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut ionflow = || -> anyhow::Result<()> {
            let m = measure(
                &mut tools.ionflow_run(&pipeline, &state, cache),
                "ionflow run (M3 items)",
            )?;
            ours.push(ms(m.wall));
            Ok(())
        };
        let mut py = || -> anyhow::Result<()> {
            let m = measure(
                tools
                    .python("m3_items.py")
                    .arg(&sim.ionapi_path)
                    .arg(&py_out)
                    .arg("500"),
                "python3 m3_items.py",
            )?;
            theirs.push(ms(m.wall));
            Ok(())
        };
        if round % 2 == 0 {
            ionflow()?;
            py()?;
        } else {
            py()?;
            ionflow()?;
        }
    }
    for (who, path) in [("ionflow", dir.join("out.jsonl")), ("Python", py_out)] {
        let n = lines_of(&path)?;
        if n != items {
            bail!("P6: {who} wrote {n} records, not {items}");
        }
    }
    let (o, t) = (median(&mut ours), median(&mut theirs));
    let mut f = Figure::new("P6", measure_text, goal);
    f.result = format!("{:.1}× faster", t / o);
    f.met = Some(t / o >= 5.0);
    f.detail(format!(
        "median wall time: ionflow {o:.1} ms, Python {t:.1} ms ({rounds} runs each, alternated)"
    ));
    f.value(
        "values",
        json!({"ionflow_ms": o, "python_ms": t, "speedup": t / o, "items": items}),
    );
    Ok(f)
}
