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

const EXAMPLE_PIPELINE: &str = r#"# M3 items to CSV. Run it with:
#   INFOR_ENV=dev ionflow run pipelines/items.toml
# Offline, against the simulator:
#   ionflow sim --ionapi-out secrets/dev.ionapi    (in another terminal)
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

const GITIGNORE: &str = "# Credentials: one .ionapi file per environment, never committed.
*.ionapi
secrets/
# ionflow's run state (watermarks) and outputs.
.ionflow/
out/
*.partial
";

const README: &str = "# Infor integration pipelines

Pipelines for [ionflow](https://github.com/) live in `pipelines/`, one TOML
file each. Credentials (`.ionapi` files, downloaded from Infor OS > API
Gateway > Authorized Apps) go in `secrets/`, one per environment
(`secrets/dev.ionapi`, `secrets/test.ionapi`, `secrets/prod.ionapi`); git
ignores them.

```sh
ionflow validate pipelines/*.toml          # keys, jq, templates, connections; no API call
ionflow test pipelines/*.toml              # the [[tests]] in each pipeline, offline
INFOR_ENV=test ionflow run pipelines/items.toml
ionflow schema > pipeline.schema.json      # JSON Schema for editor completion
```

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
    let files: [(&str, &str); 3] = [
        ("pipelines/items.toml", EXAMPLE_PIPELINE),
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
    for sub in ["pipelines", "secrets", "out"] {
        create_dir(&dir.join(sub))?;
    }
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !quiet {
        outln!("created {}:", dir.display());
        outln!("  pipelines/items.toml  an example pipeline (M3 items to CSV) with a test");
        outln!("  .gitignore            keeps *.ionapi, secrets/ and .ionflow/ out of git");
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
