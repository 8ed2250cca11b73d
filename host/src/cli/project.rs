//! `ionflow schema`, `ionflow init` and `ionflow completions`: tooling around
//! pipeline files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};

use super::output::outln;
use super::{Cli, Exit};
use crate::pipeline::{PipelineConfig, UsageError};

/// The JSON Schema of the pipeline format, for editors (Taplo, VS Code Even Better TOML).
pub fn schema() -> anyhow::Result<Exit> {
    let schema = schemars::schema_for!(PipelineConfig);
    outln!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(Exit::Success)
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder for the new project (created if missing; must not hold a pipelines/ folder yet)
    dir: PathBuf,
}

const EXAMPLE_PIPELINE: &str = r#"#:schema ../pipeline.schema.json
# M3 items to CSV. Run it with:
#   INFOR_ENV=dev ionflow run pipelines/items.toml
# Offline, against the simulator (in another terminal, from the project folder):
#   ionflow sim --fixtures fixtures/ --ionapi-out secrets/dev.ionapi
name = "items"
description = "Active M3 items (MMS200MI/LstItmByItm) to out/items.csv"

[connections.m3]
# One credentials file per environment; never commit them (see .gitignore).
ionapi_file = "../secrets/${env.INFOR_ENV:-dev}.ionapi"

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 1000
returncols = ["ITNO", "ITDS", "UNMS", "STAT"]

[[transforms]]
kind = "jq"
filter = 'select(.STAT == "20") | {item: .ITNO, name: .ITDS, unit: .UNMS}'

[[sinks]]
kind = "file"
path = "../out/items.csv"
format = "csv"
csv_columns = ["item", "name", "unit"]

[dead_letter]
path = "../out/items.dead-letter.jsonl"

[[tests]]
name = "keeps active items and renames fields"
input = [
  { ITNO = "A1", ITDS = "Bolt", UNMS = "EA", STAT = "20" },
  { ITNO = "B2", ITDS = "Old", UNMS = "EA", STAT = "90" },
]
output = [{ item = "A1", name = "Bolt", unit = "EA" }]
"#;

/// One example fixture: `ionflow sim --fixtures fixtures/` serves it, so a
/// pipeline for a program the simulator does not know runs offline.
const EXAMPLE_FIXTURE: &str = r#"# Fixtures for `ionflow sim --fixtures fixtures/`: your own M3 programs, IDO
# collections and gateway paths, served behind the simulated gateway (tokens,
# quota, faults) like the built-in MMS200MI. The format: docs/PIPELINES.md,
# "Fixtures". This one is a small CRS610MI (customers).

[[m3]]
program = "CRS610MI"
key = ["CUNO"]
# Every add or change stamps LMDT with today's date (YYYYMMDD), as M3 does.
stamp = { LMDT = "date" }
records = [
  { CUNO = "C0001", CUNM = "Acme Tools AB", STAT = "20", LMDT = "20260112" },
  { CUNO = "C0002", CUNM = "Baltic Metal Oy", STAT = "20", LMDT = "20260203" },
  { CUNO = "C0003", CUNM = "Contoso GmbH", STAT = "20", LMDT = "20260219" },
  { CUNO = "C0004", CUNM = "Delta Parts Ltd", STAT = "90", LMDT = "20260305" },
  { CUNO = "C0005", CUNM = "Euro Fasteners SA", STAT = "20", LMDT = "20260311" },
]

# A list starts at CUNO (paged by key); LMDT selects records changed after it.
[[m3.transactions]]
name = "LstByNumber"
type = "list"
inputs = { CUNO = "key", LMDT = "gt" }
outputs = ["CUNO", "CUNM", "STAT", "LMDT"]

[[m3.transactions]]
name = "GetBasicData"
type = "get"
inputs = { CUNO = "key" }

[[m3.transactions]]
name = "ChgBasicData"
type = "update"
inputs = { CUNO = "key", CUNM = "set", STAT = "set" }

[[m3.transactions]]
name = "Add"
type = "add"
inputs = { CUNO = "key", CUNM = "set", STAT = "set" }

# A refusal, answered like M3's own (errorMessage, errorField, errorCode).
[[m3.errors]]
transaction = "ChgBasicData"
when = { CUNO = "C0004" }
message = "Customer C0004 is blocked for changes"
field = "CUNO"
code = "WCU0102"
"#;

/// Taplo (and VS Code's Even Better TOML, which uses it) reads this: the
/// pipelines get completion and checking from `ionflow schema`'s output.
const TAPLO: &str = r#"# Editor support: Even Better TOML (VS Code) and taplo read this file.
# Regenerate the schema after upgrading ionflow: ionflow schema > pipeline.schema.json
[[rule]]
include = ["pipelines/*.toml"]

[rule.schema]
path = "./pipeline.schema.json"
"#;

const GITIGNORE: &str = "# Credentials: one .ionapi file per environment, never committed.
*.ionapi
secrets/
# ionflow's run state (watermarks) and outputs.
.ionflow/
out/
*.partial
";

const README: &str = "# Infor integration pipelines

Pipelines for ionflow live in `pipelines/`, one TOML file each. Credentials (`.ionapi` files, downloaded from Infor OS > API
Gateway > Authorized Apps) go in `secrets/`, one per environment
(`secrets/dev.ionapi`, `secrets/test.ionapi`, `secrets/prod.ionapi`); git
ignores them.

```sh
ionflow validate pipelines/                # keys, jq, templates; no API call, no credentials needed
ionflow test pipelines/                    # the [[tests]] in each pipeline, offline
INFOR_ENV=test ionflow run pipelines/items.toml
ionflow schema > pipeline.schema.json      # refresh the JSON Schema after upgrading ionflow
```

Offline, against the gateway simulator and the fixtures in `fixtures/`
(your own M3 programs, IDO collections and paths):

```sh
ionflow sim --fixtures fixtures/ --ionapi-out secrets/dev.ionapi   # in another terminal
ionflow run pipelines/items.toml
```

Fixtures can be recorded from a test tenant instead of written by hand:
`ionflow sim --record fixtures/ --upstream secrets/test.ionapi` forwards
every call to that tenant and saves its answers (no token or secret) as
fixtures, which `--fixtures fixtures/` then serves offline.

Editors: `pipeline.schema.json` is the format's JSON Schema and
`.taplo.toml` points Even Better TOML (VS Code) and taplo at it, so keys
complete and mistakes are underlined as you type.

A run that saw failed records exits with code 4 and lists them, with their
errors, in the dead-letter file.
";

pub fn init(args: InitArgs, quiet: bool) -> anyhow::Result<Exit> {
    let dir = &args.dir;
    if dir.join("pipelines").exists() {
        return Err(UsageError(format!(
            "{} already has a pipelines/ folder; pick an empty or new folder",
            dir.display()
        ))
        .into());
    }
    let schema = serde_json::to_string_pretty(&schemars::schema_for!(PipelineConfig))? + "\n";
    let files: [(&str, &str); 6] = [
        ("pipelines/items.toml", EXAMPLE_PIPELINE),
        ("fixtures/crs610mi.toml", EXAMPLE_FIXTURE),
        ("pipeline.schema.json", &schema),
        (".taplo.toml", TAPLO),
        (".gitignore", GITIGNORE),
        ("README.md", README),
    ];
    for (name, _) in &files {
        if dir.join(name).exists() {
            return Err(UsageError(format!(
                "{} exists; not overwriting it: pick an empty or new folder",
                dir.join(name).display()
            ))
            .into());
        }
    }
    for sub in ["pipelines", "fixtures", "secrets", "out"] {
        create_dir(&dir.join(sub))?;
    }
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !quiet {
        outln!("created {}:", dir.display());
        outln!("  pipelines/items.toml    an example pipeline (M3 items to CSV) with a test");
        outln!(
            "  fixtures/crs610mi.toml  an example fixture for `ionflow sim --fixtures fixtures/`"
        );
        outln!("  pipeline.schema.json    the format's JSON Schema, and .taplo.toml for editors");
        outln!("  .gitignore              keeps *.ionapi, secrets/ and .ionflow/ out of git");
        outln!("  README.md");
        outln!(
            "next: ionflow test {}",
            dir.join("pipelines/items.toml").display()
        );
    }
    Ok(Exit::Success)
}

fn create_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    shell: clap_complete::Shell,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut command = Cli::command();
    // clap_complete panics on a write error, so the script is built in
    // memory and written like every other command's output.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ionflow", &mut script);
    super::output::write(&String::from_utf8_lossy(&script));
    Ok(Exit::Success)
}
