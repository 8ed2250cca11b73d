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
    /// User plus system CPU time of the child (and of its own children).
    pub cpu: Duration,
}

/// The first argument that makes this binary the measuring helper.
pub const HELPER: &str = "__measure";

/// Runs `cmd` to completion; fails unless it exits 0.
///
/// The command runs under a fresh, small copy of this binary (`HELPER`)
/// that starts it and reaps it with wait4(2). A process started straight
/// from this one would inherit this process's peak RSS in its own
/// `ru_maxrss` (Linux keeps the high-water mark of the address space a
/// process had before exec), and this process holds 64 connector
/// instances by then.
pub fn measure(cmd: &mut Command, what: &str) -> anyhow::Result<Measured> {
    let result = tempfile::NamedTempFile::new()?;
    let mut helper = Command::new(std::env::current_exe()?);
    helper
        .arg(HELPER)
        .arg(result.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => helper.env(key, value),
            None => helper.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        helper.current_dir(dir);
    }
    let status = helper
        .stdout(cmd_stdout(cmd)?)
        .status()
        .with_context(|| format!("starting {what}"))?;
    let text = std::fs::read_to_string(result.path())?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    match (status.success(), fields.as_slice()) {
        (true, [0, wall_ns, rss, cpu_ns]) => Ok(Measured {
            wall: Duration::from_nanos(*wall_ns),
            max_rss_kib: *rss,
            cpu: Duration::from_nanos(*cpu_ns),
        }),
        _ => bail!("{what} failed ({status}; {})", text.trim()),
    }
}

/// Where the measured command's stdout goes: a file named by
/// `IONFLOW_BENCH_STDOUT` in its environment, else nowhere.
fn cmd_stdout(cmd: &Command) -> anyhow::Result<Stdio> {
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == "IONFLOW_BENCH_STDOUT")
        .and_then(|(_, v)| v);
    Ok(match path {
        Some(path) => std::fs::File::create(path)?.into(),
        None => Stdio::null(),
    })
}

/// `HELPER RESULT PROGRAM ARGS...`: runs PROGRAM, writes "exit-code
/// wall-ns max-rss-kib cpu-ns" to RESULT, exits.
pub fn helper(args: &[std::ffi::OsString]) -> ! {
    let outcome = (|| -> anyhow::Result<String> {
        let [result, program, rest @ ..] = args else {
            bail!("usage: {HELPER} RESULT PROGRAM [ARGS...]");
        };
        let started = Instant::now();
        let child = Command::new(program)
            .args(rest)
            .env_remove("IONFLOW_BENCH_STDOUT")
            .spawn()?;
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let wall = started.elapsed();
        if reaped != pid {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        let tv = |t: libc::timeval| t.tv_sec as u128 * 1_000_000_000 + t.tv_usec as u128 * 1000;
        let cpu_ns = tv(usage.ru_utime) + tv(usage.ru_stime);
        // Linux reports ru_maxrss in KiB.
        let line = format!("{code} {} {} {cpu_ns}", wall.as_nanos(), usage.ru_maxrss);
        std::fs::write(result, &line)?;
        Ok(line)
    })();
    match outcome {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("{HELPER}: {e:#}");
            std::process::exit(1)
        }
    }
}

pub struct Tools {
    pub ionflow: PathBuf,
    /// jaq's own command-line tool, the second comparator of P4.
    pub jaq: Option<PathBuf>,
    pub jaq_missing: Option<String>,
    /// Other ionflow binaries measured on P4 in the same rounds (`--p4-compare`).
    pub p4_compare: Vec<(String, PathBuf)>,
    /// `None`, or why Python with `requests` cannot be used.
    pub python_missing: Option<String>,
    pub jq_missing: Option<String>,
    pub python_dir: PathBuf,
}

impl Tools {
    pub fn detect(ionflow: PathBuf, p4_compare: Vec<(String, PathBuf)>) -> Tools {
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
        // bench/run installs jaq's CLI under target/ (the version of the
        // jaq crates ionflow uses); one on PATH will do too.
        let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools/bin/jaq");
        let jaq = [installed, PathBuf::from("jaq")]
            .into_iter()
            .find(|p| works(Command::new(p).arg("--version")));
        let jaq_missing = jaq.is_none().then(|| {
            "jaq's command-line tool is not installed: `cargo install jaq --version 3.1.2 \
             --locked --root target/bench-tools` (bench/run does this), then run again"
                .to_owned()
        });
        Tools {
            ionflow,
            jaq,
            jaq_missing,
            p4_compare,
            python_missing,
            jq_missing,
            python_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        }
    }

    pub fn ionflow_run(&self, pipeline: &Path, state: &Path, cache: &Path) -> Command {
        let mut cmd = Command::new(&self.ionflow);
        cmd.arg("--quiet")
            .arg("run")
            .arg(pipeline)
            .env("IONFLOW_STATE_DIR", state)
            .env("IONFLOW_CACHE_DIR", cache);
        cmd
    }

    pub fn python(&self, script: &str) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(self.python_dir.join(script));
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

/// The connection settings of the pipelines compared with Python scripts:
/// no client-side limiter, and a grant per run, revoked at its end, as the
/// scripts do (`ionflow run` keeps its grant for the next run by default).
const LIFTED_LIMIT: &str = "rate_limit = { requests = 1000000, window_secs = 1 }
revoke_on_exit = true";

pub fn p3(tools: &Tools, sim: &SimProcess, work: &Path, quick: bool) -> anyhow::Result<Figure> {
    let measure_text = "wall time of `ionflow run` on a one-call pipeline (token, M3 GetItmBasic, \
                        JSONL out, revoke) ÷ a Python `requests` script doing the same call";
    let goal = "later runs ≤ 0.33×, first run ≤ 0.5×";
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
    let (mut cold, mut cold_cpu, mut image) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..cold_runs {
        // An empty cache: the connector is compiled with Cranelift.
        let cache = dir.join(format!("cold-cache-{i}"));
        let m = measure(
            &mut tools.ionflow_run(&pipeline, &state, &cache),
            "ionflow run (first run)",
        )?;
        cold.push(ms(m.wall));
        cold_cpu.push(ms(m.cpu));
        // A fresh container of an image whose build ran `ionflow connector
        // precompile` (docs/DEPLOY.md): the cache holds the artifact before
        // the first run. Builds without the command skip this.
        let cache = dir.join(format!("image-cache-{i}"));
        let precompiled = Command::new(&tools.ionflow)
            .args(["--quiet", "connector", "precompile"])
            .env("IONFLOW_CACHE_DIR", &cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if precompiled {
            image.push(ms(measure(
                &mut tools.ionflow_run(&pipeline, &state, &cache),
                "ionflow run (first run in a precompiled image)",
            )?
            .wall));
        }
    }
    let cold_cpu_raw = rounded(&cold_cpu);
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
    let raw = format!(
        "ionflow later {:?}, empty cache {:?} (CPU {cold_cpu_raw:?}), precompiled image {:?}, \
         Python {:?}",
        rounded(&warm),
        rounded(&cold),
        rounded(&image),
        rounded(&python)
    );
    let (cold, warm, python) = (median(&mut cold), median(&mut warm), median(&mut python));
    let image_first = (!image.is_empty()).then(|| median(&mut image));
    let mut figure = Figure::new("P3", measure_text, goal);
    let (r_cold, r_warm) = (cold / python, warm / python);
    let r_image = image_first.map(|i| i / python);
    figure.result = match r_image {
        Some(r) => format!(
            "later runs {r_warm:.2}×; first run {r:.2}× in a precompiled image, {r_cold:.2}× \
             with an empty cache"
        ),
        None => format!("later runs {r_warm:.2}×, first run {r_cold:.2}× (empty cache)"),
    };
    figure.met = Some(r_warm <= 0.33 && r_image.is_some_and(|r| r <= 0.5));
    figure.detail(format!(
        "median wall time: ionflow later runs {warm:.1} ms ({warm_runs} runs, precompiled \
         connector loaded from the cache: {artifacts} artifact file), first run in an image \
         prepared with `ionflow connector precompile` {} ({cold_runs} runs, each with a fresh \
         cache that the command filled), first run with an empty cache {cold:.1} ms \
         ({cold_runs} runs: the component is compiled), Python {python:.1} ms ({warm_runs} runs, \
         {}); raw ms: {raw}",
        image_first.map_or("not available in this build".to_owned(), |i| format!(
            "{i:.1} ms"
        )),
        tools.version("python3", "--version")
    ));
    figure.value(
        "values",
        json!({"ionflow_first_ms": cold, "ionflow_later_ms": warm, "python_ms": python,
               "ionflow_first_in_image_ms": image_first, "ratio_first_in_image": r_image,
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
    let mut large_rss = Vec::new();
    // The sides of P4, each run once per round, the order rotated every
    // round: ionflow, jq 1.6, jaq's CLI, ionflow with one evaluation
    // thread, and any other ionflow binaries given (`--p4-compare`).
    struct Side {
        label: String,
        command: Command,
        out: PathBuf,
        rates: Vec<f64>,
    }
    let mut sides: Vec<Side> = Vec::new();
    sides.push(Side {
        label: "ionflow".into(),
        command: tools.ionflow_run(&large_pipeline, &state, cache),
        out: large_out.clone(),
        rates: Vec::new(),
    });
    if tools.jq_missing.is_none() {
        let mut jq = Command::new("jq");
        jq.arg("-c")
            .arg(FILTER)
            .arg(&input)
            .env("IONFLOW_BENCH_STDOUT", dir.join("jq-out.jsonl"));
        sides.push(Side {
            label: "jq".into(),
            command: jq,
            out: dir.join("jq-out.jsonl"),
            rates: Vec::new(),
        });
    }
    if let Some(jaq) = &tools.jaq {
        let mut cmd = Command::new(jaq);
        cmd.arg("-c")
            .arg(FILTER)
            .arg(&input)
            .env("IONFLOW_BENCH_STDOUT", dir.join("jaq-out.jsonl"));
        sides.push(Side {
            label: "jaq".into(),
            command: cmd,
            out: dir.join("jaq-out.jsonl"),
            rates: Vec::new(),
        });
    }
    if !quick {
        let mut one = tools.ionflow_run(&large_pipeline, &state, cache);
        one.env("IONFLOW_EVAL_THREADS", "1");
        sides.push(Side {
            label: "ionflow, 1 evaluation thread".into(),
            command: one,
            out: large_out.clone(),
            rates: Vec::new(),
        });
    }
    for (label, binary) in &tools.p4_compare {
        let mut cmd = tools.ionflow_run(&large_pipeline, &state, cache);
        let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
            .collect();
        cmd = Command::new(binary);
        cmd.args(args);
        for (k, v) in envs {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        sides.push(Side {
            label: label.clone(),
            command: cmd,
            out: large_out.clone(),
            rates: Vec::new(),
        });
    }
    for round in 0..rounds {
        for k in 0..sides.len() {
            let at = (k + round) % sides.len();
            let side = &mut sides[at];
            let what = side.label.clone();
            let out = side.out.clone();
            let m = measure(&mut side.command, &what)?;
            side.rates.push(large as f64 / m.wall.as_secs_f64());
            if what == "ionflow" {
                large_rss.push(m.max_rss_kib as f64);
            }
            if lines_of(&out)? != expected {
                bail!("P4: {what} wrote the wrong number of records");
            }
        }
    }

    let p4_measure = &format!(
        "jq transform throughput, records/s of a {large}-record JSONL file to JSONL \
         (`ionflow run`: file source, one jq step, file sink) ÷ the `jq` command-line tool (1.6) \
         and ÷ jaq's command-line tool, same filter"
    );
    let goal = "≥ 2× jq, ≥ 1.2× jaq";
    let rate = |label: &str| -> Option<(f64, Vec<f64>)> {
        sides.iter().find(|s| s.label == label).map(|s| {
            let mut r = s.rates.clone();
            (median(&mut r), s.rates.clone())
        })
    };
    let p4 = match (rate("ionflow"), rate("jq")) {
        (Some((o, _)), Some((t, _))) => {
            let mut f = Figure::new("P4", p4_measure, goal);
            let jaq = rate("jaq").map(|(j, _)| j);
            f.result = match jaq {
                Some(j) => format!("{:.2}× jq, {:.2}× jaq", o / t, o / j),
                None => format!("{:.2}× jq (jaq not measured)", o / t),
            };
            f.met = Some(o / t >= 2.0 && jaq.is_some_and(|j| o / j >= 1.2));
            f.detail(format!(
                "median of {rounds} rounds, order rotated each round; filter `{FILTER}`; {} and {}",
                tools.version("jq", "--version"),
                tools
                    .jaq
                    .as_ref()
                    .map(|j| tools.version(&j.to_string_lossy(), "--version"))
                    .unwrap_or_else(|| "no jaq".into())
            ));
            let mut raw = serde_json::Map::new();
            for side in &sides {
                let mut r = side.rates.clone();
                f.detail(format!(
                    "{}: {:.0} records/s (rounds: {})",
                    side.label,
                    median(&mut r),
                    side.rates
                        .iter()
                        .map(|r| format!("{r:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                raw.insert(side.label.clone(), json!(side.rates));
            }
            f.value(
                "values",
                json!({"ionflow_records_per_s": o, "jq_records_per_s": t,
                       "jaq_records_per_s": jaq, "ratio_jq": o / t,
                       "ratio_jaq": jaq.map(|j| o / j), "records": large,
                       "rounds_records_per_s": raw}),
            );
            f
        }
        _ => Figure::not_measured(
            "P4",
            p4_measure,
            goal,
            tools.jq_missing.clone().unwrap_or_default(),
        ),
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

/// `floor_ms`: the pages alone, fetched by a bare reqwest loop.
pub fn p6(
    tools: &Tools,
    sim: &SimProcess,
    work: &Path,
    cache: &Path,
    items: usize,
    floor_ms: f64,
    quick: bool,
) -> anyhow::Result<Figure> {
    let measure_text = &format!(
        "end to end: {items} M3 items (LstItmByItm paged by key, 500 a page, reshaped, to JSONL): \
         a Python `requests` script's wall time and client CPU time ÷ `ionflow run`'s"
    );
    let goal = "wall ≥ 3× faster, CPU ≥ 10× less";
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
    let (mut our_cpu, mut their_cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut ionflow = || -> anyhow::Result<()> {
            let m = measure(
                &mut tools.ionflow_run(&pipeline, &state, cache),
                "ionflow run (M3 items)",
            )?;
            ours.push(ms(m.wall));
            our_cpu.push(ms(m.cpu));
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
            their_cpu.push(ms(m.cpu));
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
    let raw = format!(
        "ionflow wall {:?} ms, CPU {:?} ms; Python wall {:?} ms, CPU {:?} ms",
        rounded(&ours),
        rounded(&our_cpu),
        rounded(&theirs),
        rounded(&their_cpu)
    );
    let (o, t) = (median(&mut ours), median(&mut theirs));
    let (oc, tc) = (median(&mut our_cpu), median(&mut their_cpu));
    let mut f = Figure::new("P6", measure_text, goal);
    f.result = format!("wall {:.1}× faster, CPU {:.1}× less", t / o, tc / oc);
    f.met = Some(t / o >= 3.0 && tc / oc >= 10.0);
    f.detail(format!(
        "median wall time: ionflow {o:.1} ms, Python {t:.1} ms; median client CPU (user + system, \
         wait4): ionflow {oc:.1} ms, Python {tc:.1} ms ({rounds} runs each, alternated; raw: \
         {raw}); the same pages fetched by a bare in-process reqwest loop (no process start, no \
         transform, no output) take {floor_ms:.1} ms, so no client could beat Python's wall time \
         by more than {:.1}× on this simulator",
        t / floor_ms
    ));
    f.value(
        "values",
        json!({"ionflow_ms": o, "python_ms": t, "speedup": t / o, "items": items,
               "ionflow_cpu_ms": oc, "python_cpu_ms": tc, "cpu_ratio": tc / oc,
               "bare_page_fetch_ms": floor_ms, "speedup_bound": t / floor_ms}),
    );
    Ok(f)
}

/// Values to one decimal, for the raw numbers of a detail line.
pub fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 10.0).round() / 10.0).collect()
}
