//! Programs and data the user declares (`ionflow sim --fixtures DIR`): M3
//! programs with their transactions, Mongoose IDO collections and plain
//! gateway paths answering JSON, read from TOML files. They sit behind the
//! same gateway as the built-in ones (tokens, scopes, quota, faults, slow
//! answers), so a pipeline for `CRS610MI` runs offline like one for
//! `MMS200MI`.
//!
//! Public shape followed: the M3 REST v2 envelope (`results`, `records`,
//! `errorMessage`/`errorField`/`errorCode`, `nrOfFailedTransactions`, the
//! misspelt `nrOfSuccessfullTransactions`), M3 lists starting at a key and
//! capped by `maxrecs`, and the IDO `load` answer (`Items`, `Bookmark`,
//! `MoreRowsExist`) with `properties`, `filter`, `recordCap` and bookmarks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::codec::{Params, clip};

/// A fixture file larger than this is refused: fixtures are test data.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Records of one program or collection, at most.
const MAX_RECORDS: usize = 1_000_000;
/// M3 answers this many records when `maxrecs` is not given, and never
/// more than `LIST_CAP`.
const DEFAULT_MAXRECS: usize = 100;
const LIST_CAP: usize = 10_000;
const DEFAULT_RECORD_CAP: usize = 200;

/// One fixture file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default)]
    m3: Vec<ProgramDef>,
    #[serde(default)]
    ido: Vec<CollectionDef>,
    #[serde(default)]
    paths: Vec<PathDef>,
}

/// `[[m3]]`: an MI program and the records its transactions work on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramDef {
    program: String,
    /// The fields records are ordered and found by, e.g. `["CUNO"]`.
    key: Vec<String>,
    #[serde(default)]
    records: Vec<Map<String, Value>>,
    /// JSON Lines file of more records, relative to the fixture file.
    records_file: Option<String>,
    /// Fields set on every write: `"date"` (YYYYMMDD, today, as M3's
    /// `LMDT`) or `"timestamp"` (`yyyy-MM-dd HH:mm:ss.SSS`).
    #[serde(default)]
    stamp: BTreeMap<String, Stamp>,
    transactions: Vec<TransactionDef>,
    #[serde(default)]
    errors: Vec<ErrorDef>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Stamp {
    Date,
    Timestamp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionDef {
    name: String,
    #[serde(rename = "type")]
    kind: Kind,
    /// Each input field and what it does: `key` (a list starts at it; the
    /// others find the record by it), `set` (written by add and update),
    /// or a comparison a list applies: `eq`, `ne`, `gt`, `ge`, `lt`, `le`.
    #[serde(default)]
    inputs: BTreeMap<String, Role>,
    /// Output fields in order; every field of the record when absent.
    outputs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    List,
    Get,
    Add,
    Update,
    Delete,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Role {
    Key,
    Set,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// `[[m3.errors]]`: a transaction refused when its inputs match `when`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorDef {
    transaction: String,
    #[serde(default)]
    when: BTreeMap<String, String>,
    message: String,
    field: Option<String>,
    code: Option<String>,
}

/// `[[ido]]`: a Mongoose IDO collection for `ido/load`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionDef {
    name: String,
    key: Vec<String>,
    properties: Vec<String>,
    #[serde(default)]
    records: Vec<Map<String, Value>>,
    records_file: Option<String>,
}

/// `[[paths]]`: a gateway path that answers fixed JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathDef {
    /// Below the tenant, e.g. `LN/lnapi/odata/txsmi.opr/Orders`.
    path: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_status")]
    status: u16,
    body: Value,
    /// Pages an array of the body by offset and limit query parameters.
    paging: Option<PagingDef>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PagingDef {
    /// JSON pointer to the array to page; the whole body when absent.
    records_pointer: Option<String>,
    #[serde(default = "default_offset")]
    offset_param: String,
    #[serde(default = "default_limit")]
    limit_param: String,
}

fn default_offset() -> String {
    "offset".into()
}

fn default_limit() -> String {
    "limit".into()
}

/// A program ready to serve: records by key, kept in key order.
#[derive(Debug)]
struct Program {
    key: Vec<String>,
    records: BTreeMap<Vec<String>, Map<String, Value>>,
    stamp: BTreeMap<String, Stamp>,
    transactions: BTreeMap<String, TransactionDef>,
    errors: Vec<ErrorDef>,
    /// Where it was declared, for `ionflow sim`'s list.
    origin: PathBuf,
}

#[derive(Debug)]
struct Collection {
    properties: Vec<String>,
    records: BTreeMap<Vec<String>, Map<String, Value>>,
    origin: PathBuf,
}

/// Every fixture of a folder.
#[derive(Debug, Default)]
pub(crate) struct Fixtures {
    programs: BTreeMap<String, Program>,
    collections: BTreeMap<String, Collection>,
    paths: Vec<PathDef>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn key_of(record: &Map<String, Value>, key: &[String]) -> Vec<String> {
    key.iter()
        .map(|k| record.get(k).map(text).unwrap_or_default())
        .collect()
}

fn read_records(
    inline: Vec<Map<String, Value>>,
    file: Option<&str>,
    fixture: &Path,
) -> anyhow::Result<Vec<Map<String, Value>>> {
    let mut records = inline;
    if let Some(name) = file {
        let path = fixture.parent().unwrap_or(Path::new("")).join(name);
        let text = read_bounded(&path)?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: Map<String, Value> = serde_json::from_str(line).with_context(|| {
                format!(
                    "{}:{}: a record must be a JSON object",
                    path.display(),
                    i + 1
                )
            })?;
            records.push(record);
        }
    }
    if records.len() > MAX_RECORDS {
        bail!(
            "{}: more than {MAX_RECORDS} records; fixtures are samples",
            fixture.display()
        );
    }
    Ok(records)
}

fn read_bounded(path: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{} is {size} bytes; a fixture file may have at most {MAX_FILE_BYTES}",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

impl Fixtures {
    /// Reads every `*.toml` file of `dir`; a mistake names the file and,
    /// for TOML, the line and column.
    pub(crate) fn load_dir(dir: &Path) -> anyhow::Result<Fixtures> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("--fixtures: cannot read the folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("--fixtures: {} holds no .toml fixture file", dir.display());
        }
        let mut fixtures = Fixtures::default();
        for file in files {
            fixtures.load_file(&file)?;
        }
        Ok(fixtures)
    }

    fn load_file(&mut self, file: &Path) -> anyhow::Result<()> {
        let text = read_bounded(file)?;
        let parsed: FixtureFile = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("{line}:{col}: ")
            });
            anyhow::anyhow!(
                "{}:{}{}",
                file.display(),
                at.unwrap_or_else(|| " ".into()),
                e.message()
            )
        })?;
        for def in parsed.m3 {
            let name = def.program.clone();
            if self.programs.contains_key(&name) {
                bail!("{}: program {name} is declared twice", file.display());
            }
            if def.key.is_empty() {
                bail!("{}: program {name}: `key` names no field", file.display());
            }
            let records = read_records(def.records, def.records_file.as_deref(), file)?;
            let mut by_key = BTreeMap::new();
            for record in records {
                by_key.insert(key_of(&record, &def.key), record);
            }
            let mut transactions = BTreeMap::new();
            for tx in def.transactions {
                if matches!(tx.kind, Kind::Get | Kind::Update | Kind::Delete)
                    && !tx.inputs.values().any(|r| *r == Role::Key)
                {
                    bail!(
                        "{}: {name}/{}: a {:?} transaction needs a `key` input",
                        file.display(),
                        tx.name,
                        tx.kind
                    );
                }
                transactions.insert(tx.name.clone(), tx);
            }
            for error in &def.errors {
                if !transactions.contains_key(&error.transaction) {
                    bail!(
                        "{}: {name}: errors name transaction {}, which is not declared",
                        file.display(),
                        error.transaction
                    );
                }
            }
            self.programs.insert(
                name,
                Program {
                    key: def.key,
                    records: by_key,
                    stamp: def.stamp,
                    transactions,
                    errors: def.errors,
                    origin: file.to_owned(),
                },
            );
        }
        for def in parsed.ido {
            let records = read_records(def.records, def.records_file.as_deref(), file)?;
            let mut by_key = BTreeMap::new();
            for record in records {
                by_key.insert(key_of(&record, &def.key), record);
            }
            self.collections.insert(
                def.name,
                Collection {
                    properties: def.properties,
                    records: by_key,
                    origin: file.to_owned(),
                },
            );
        }
        for def in parsed.paths {
            if def.path.starts_with('/') || def.path.contains('?') {
                bail!(
                    "{}: paths: `{}` must be a path below the tenant, without / in front or a query",
                    file.display(),
                    def.path
                );
            }
            self.paths.push(def);
        }
        Ok(())
    }

    /// One line per fixture, for `ionflow sim` to say what it serves.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, p) in &self.programs {
            lines.push(format!(
                "M3 {name} ({}), {} records, from {}",
                p.transactions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                p.records.len(),
                p.origin.display()
            ));
        }
        for (name, c) in &self.collections {
            lines.push(format!(
                "IDO {name}, {} records, from {}",
                c.records.len(),
                c.origin.display()
            ));
        }
        for p in &self.paths {
            lines.push(format!("{} {}", p.method.to_ascii_uppercase(), p.path));
        }
        lines
    }

    pub(crate) fn has_program(&self, program: &str) -> bool {
        self.programs.contains_key(program)
    }

    pub(crate) fn has_collection(&self, ido: &str) -> bool {
        self.collections.contains_key(ido)
    }
}

/// A failed M3 transaction: message, field, code, and the HTTP status of a
/// single-transaction GET (400 for reads and malformed calls, 200 for a
/// refused write, as the real gateway mixes both).
struct MiError {
    message: String,
    field: String,
    code: String,
    status: StatusCode,
}

fn mi_error(code: &str, field: &str, message: String) -> MiError {
    MiError {
        message,
        field: field.to_owned(),
        code: code.to_owned(),
        status: StatusCode::BAD_REQUEST,
    }
}

fn result_json(transaction: &str, outcome: &Result<Vec<Value>, MiError>) -> Value {
    match outcome {
        Ok(records) => json!({"transaction": clip(transaction, 32), "records": records}),
        Err(e) => json!({
            "transaction": clip(transaction, 32),
            "errorMessage": e.message,
            "errorType": "ServerReturnedNOK",
            "errorCode": e.code,
            "errorField": e.field,
            "records": [],
        }),
    }
}

fn envelope(results: Vec<Value>, failed: usize) -> Value {
    json!({
        "results": results,
        "wasTerminated": false,
        "nrOfSuccessfullTransactions": results.len() - failed,
        "nrOfFailedTransactions": failed,
    })
}

/// `GET .../execute/{program}/{transaction}` for a fixture program.
pub(crate) fn m3_get(
    fixtures: &mut Fixtures,
    program: &str,
    transaction: &str,
    query: &str,
) -> Response {
    let outcome = Params::parse(query.as_bytes())
        .map_err(|e| mi_error("XPA0001", "", format!("Malformed query string: {e}")))
        .and_then(|params| {
            let pairs: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            execute(fixtures, program, transaction, &pairs)
        });
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    let failed = usize::from(outcome.is_err());
    let body = envelope(vec![result_json(transaction, &outcome)], failed);
    (status, Json(body)).into_response()
}

/// The transactions of one bulk request for a fixture program.
pub(crate) fn m3_bulk(fixtures: &mut Fixtures, request: &Value) -> Response {
    let program = request.get("program").and_then(Value::as_str).unwrap_or("");
    let Some(transactions) = request.get("transactions").and_then(Value::as_array) else {
        let body = json!({"results": [], "wasTerminated": true,
            "terminationReason": "Malformed bulk request: transactions is missing",
            "nrOfSuccessfullTransactions": 0, "nrOfFailedTransactions": 0});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let mut results = Vec::new();
    let mut failed = 0;
    for tx in transactions.iter().take(LIST_CAP) {
        let name = tx.get("transaction").and_then(Value::as_str).unwrap_or("");
        let inputs: Vec<(String, String)> = tx
            .get("record")
            .and_then(Value::as_object)
            .map(|r| r.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default();
        let outcome = execute(fixtures, program, name, &inputs);
        failed += usize::from(outcome.is_err());
        results.push(result_json(name, &outcome));
    }
    Json(envelope(results, failed)).into_response()
}

fn execute(
    fixtures: &mut Fixtures,
    program_name: &str,
    transaction: &str,
    query: &[(String, String)],
) -> Result<Vec<Value>, MiError> {
    let program = fixtures.programs.get_mut(program_name).ok_or_else(|| {
        mi_error(
            "XPG0001",
            "",
            format!("Program {} does not exist", clip(program_name, 20)),
        )
    })?;
    let tx = program
        .transactions
        .get(transaction)
        .cloned()
        .ok_or_else(|| {
            mi_error(
                "XTR0001",
                "",
                format!(
                    "Transaction {} does not exist in program {program_name}",
                    clip(transaction, 20)
                ),
            )
        })?;
    // MI settings are lower case; everything else is an input field.
    let mut maxrecs = DEFAULT_MAXRECS;
    let mut returncols: Option<Vec<String>> = None;
    let mut exclude_empty = false;
    let mut inputs: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in query {
        match name.as_str() {
            "maxrecs" => {
                let n: usize = value.parse().map_err(|_| {
                    mi_error(
                        "XPA0003",
                        "maxrecs",
                        "Parameter maxrecs must be a non-negative integer".into(),
                    )
                })?;
                maxrecs = if n == 0 { LIST_CAP } else { n.min(LIST_CAP) };
            }
            "returncols" => {
                returncols = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "excludeempty" => exclude_empty = value.eq_ignore_ascii_case("true"),
            "righttrim" | "dateformat" | "cono" | "divi" => {}
            _ => {
                if !tx.inputs.contains_key(name) {
                    return Err(mi_error(
                        "XIN0001",
                        &clip(name, 10),
                        format!(
                            "Field {} is not an input field of {program_name}/{transaction}",
                            clip(name, 20)
                        ),
                    ));
                }
                inputs.insert(name.clone(), value.trim_end_matches(' ').to_owned());
            }
        }
    }
    let write = matches!(tx.kind, Kind::Add | Kind::Update | Kind::Delete);
    if let Some(e) = program.errors.iter().find(|e| {
        e.transaction == transaction
            && e.when
                .iter()
                .all(|(k, v)| inputs.get(k).map(String::as_str) == Some(v.as_str()))
    }) {
        let mut error = mi_error(
            e.code.as_deref().unwrap_or("XFX0001"),
            e.field.as_deref().unwrap_or(""),
            e.message.clone(),
        );
        if write {
            error.status = StatusCode::OK;
        }
        return Err(error);
    }
    let key_inputs: Vec<String> = program
        .key
        .iter()
        .filter(|k| tx.inputs.get(*k) == Some(&Role::Key))
        .map(|k| inputs.get(k).cloned().unwrap_or_default())
        .collect();
    let outputs = |record: &Map<String, Value>| -> Result<Value, MiError> {
        let columns: Vec<String> = match (&returncols, &tx.outputs) {
            (Some(wanted), outputs) => {
                for column in wanted {
                    let known = outputs
                        .as_ref()
                        .map_or_else(|| record.contains_key(column), |o| o.contains(column));
                    if !known {
                        return Err(mi_error(
                            "XPA0004",
                            "returncols",
                            format!("Column {} does not exist in the output", clip(column, 20)),
                        ));
                    }
                }
                wanted.clone()
            }
            (None, Some(outputs)) => outputs.clone(),
            (None, None) => record.keys().cloned().collect(),
        };
        Ok(Value::Object(
            columns
                .into_iter()
                .map(|c| {
                    (
                        c.clone(),
                        Value::String(record.get(&c).map(text).unwrap_or_default()),
                    )
                })
                .filter(|(_, v)| !(exclude_empty && v.as_str() == Some("")))
                .collect(),
        ))
    };
    let missing_key = || {
        let field = program
            .key
            .iter()
            .find(|k| inputs.get(*k).is_none_or(String::is_empty))
            .cloned()
            .unwrap_or_default();
        mi_error("WKEY001", &field, format!("{field} must be entered"))
    };
    match tx.kind {
        Kind::List => {
            let comparisons: Vec<(&String, Role, &String)> = tx
                .inputs
                .iter()
                .filter(|(_, r)| !matches!(r, Role::Key | Role::Set))
                .filter_map(|(f, r)| inputs.get(f).map(|v| (f, *r, v)))
                .collect();
            let start: Vec<String> = key_inputs;
            program
                .records
                .range(start..)
                .map(|(_, r)| r)
                .filter(|r| {
                    comparisons.iter().all(|(field, role, value)| {
                        let have = r.get(*field).map(text).unwrap_or_default();
                        let order = have.as_str().cmp(value.as_str());
                        match role {
                            Role::Eq => order.is_eq(),
                            Role::Ne => order.is_ne(),
                            Role::Gt => order.is_gt(),
                            Role::Ge => order.is_ge(),
                            Role::Lt => order.is_lt(),
                            Role::Le => order.is_le(),
                            Role::Key | Role::Set => true,
                        }
                    })
                })
                .take(maxrecs)
                .map(outputs)
                .collect()
        }
        Kind::Get => {
            if key_inputs.iter().any(String::is_empty) {
                return Err(missing_key());
            }
            let record = program.records.get(&key_inputs).ok_or_else(|| {
                mi_error(
                    "WKEY003",
                    &program.key[0],
                    format!("Record {} does not exist", key_inputs.join("/")),
                )
            })?;
            Ok(vec![outputs(record)?])
        }
        Kind::Add | Kind::Update => {
            if key_inputs.len() != program.key.len() || key_inputs.iter().any(String::is_empty) {
                let mut e = missing_key();
                e.status = StatusCode::OK;
                return Err(e);
            }
            let exists = program.records.contains_key(&key_inputs);
            if tx.kind == Kind::Add && exists {
                return Err(MiError {
                    status: StatusCode::OK,
                    ..mi_error(
                        "WKEY002",
                        &program.key[0],
                        format!("Record {} already exists", key_inputs.join("/")),
                    )
                });
            }
            if tx.kind == Kind::Update && !exists {
                return Err(MiError {
                    status: StatusCode::OK,
                    ..mi_error(
                        "WKEY003",
                        &program.key[0],
                        format!("Record {} does not exist", key_inputs.join("/")),
                    )
                });
            }
            let stamp = program.stamp.clone();
            let record = program.records.entry(key_inputs).or_default();
            for (field, value) in &inputs {
                if tx
                    .inputs
                    .get(field)
                    .is_some_and(|r| matches!(r, Role::Key | Role::Set))
                {
                    record.insert(field.clone(), Value::String(value.clone()));
                }
            }
            let now = chrono::Utc::now();
            for (field, kind) in stamp {
                let value = match kind {
                    Stamp::Date => now.format("%Y%m%d").to_string(),
                    Stamp::Timestamp => now.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                };
                record.insert(field, Value::String(value));
            }
            Ok(Vec::new())
        }
        Kind::Delete => {
            if key_inputs.iter().any(String::is_empty) {
                return Err(missing_key());
            }
            match program.records.remove(&key_inputs) {
                Some(_) => Ok(Vec::new()),
                None => Err(MiError {
                    status: StatusCode::OK,
                    ..mi_error(
                        "WKEY003",
                        &program.key[0],
                        format!("Record {} does not exist", key_inputs.join("/")),
                    )
                }),
            }
        }
    }
}

/// `GET .../ido/load/{ido}` for a fixture collection: `properties`,
/// `filter` (`Property op 'value'` joined by AND, compared as text),
/// `recordCap` and bookmark paging.
pub(crate) fn ido_load(fixtures: &Fixtures, ido: &str, query: &str) -> Value {
    let failure = |message: String| {
        json!({"Success": false, "Message": message, "Items": null,
               "Bookmark": null, "MoreRowsExist": false})
    };
    let Some(collection) = fixtures.collections.get(ido) else {
        return failure(format!("IDO {} does not exist", clip(ido, 40)));
    };
    let params = match Params::parse_case_insensitive(query.as_bytes()) {
        Ok(p) => p,
        Err(e) => return failure(format!("Malformed query string: {e}")),
    };
    let Some(requested) = params.get("properties") else {
        return failure("The properties parameter is required".into());
    };
    let mut properties = Vec::new();
    for name in requested
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if name == "*" {
            properties.extend(collection.properties.iter().cloned());
        } else if let Some(p) = collection
            .properties
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
        {
            properties.push(p.clone());
        } else {
            return failure(format!(
                "Property {} does not exist on IDO {ido}",
                clip(name, 40)
            ));
        }
    }
    let cap = match params.get("recordcap").map(str::trim) {
        None | Some("") | Some("-1") => DEFAULT_RECORD_CAP,
        Some("0") => usize::MAX,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return failure("recordCap must be -1, 0 or positive".into()),
        },
    };
    let conditions = match params.get("filter").map(parse_filter).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return failure(format!("Invalid filter: {e}")),
    };
    let after: Option<Vec<String>> = match params.get("bookmark") {
        Some(b) if !b.is_empty() => match serde_json::from_str(b) {
            Ok(key) => Some(key),
            Err(_) => return failure("The bookmark is not valid".into()),
        },
        _ => None,
    };
    let candidates: Box<dyn Iterator<Item = Row<'_>>> = match &after {
        Some(key) => Box::new(collection.records.range((
            std::ops::Bound::Excluded(key.clone()),
            std::ops::Bound::Unbounded,
        ))),
        None => Box::new(collection.records.iter()),
    };
    let mut matching = candidates.filter(|(_, r)| {
        conditions.iter().all(|(field, op, value)| {
            let have = r.get(field).map(text).unwrap_or_default().to_lowercase();
            let order = have.cmp(&value.to_lowercase());
            match op.as_str() {
                "=" => order.is_eq(),
                "<>" | "!=" => order.is_ne(),
                ">" => order.is_gt(),
                ">=" => order.is_ge(),
                "<" => order.is_lt(),
                _ => order.is_le(),
            }
        })
    });
    let page: Vec<Row<'_>> = matching.by_ref().take(cap).collect();
    let more = matching.next().is_some();
    let items: Vec<Value> = page
        .iter()
        .map(|(_, r)| {
            Value::Object(
                properties
                    .iter()
                    .map(|p| {
                        (
                            p.clone(),
                            Value::String(r.get(p).map(text).unwrap_or_default()),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    json!({
        "Success": true,
        "Message": null,
        "Items": items,
        "Bookmark": page.last().map(|(k, _)| serde_json::to_string(k).unwrap_or_default()),
        "MoreRowsExist": more,
    })
}

/// One record of a collection with its key.
type Row<'a> = (&'a Vec<String>, &'a Map<String, Value>);

/// `Property op 'value' [AND ...]`, the filter subset fixtures understand.
fn parse_filter(filter: &str) -> Result<Vec<(String, String, String)>, String> {
    if filter.len() > 4000 {
        return Err("filter is longer than 4000 characters".into());
    }
    let mut out = Vec::new();
    let mut rest = filter.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let op = ["<>", "!=", ">=", "<=", "=", ">", "<"]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or("expected `Property operator 'value'`")?;
        rest = rest[op.len()..].trim_start();
        let value = if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').ok_or("unterminated string literal")?;
            let value = &quoted[..end];
            rest = quoted[end + 1..].trim_start();
            value.to_owned()
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let value = &rest[..end];
            rest = rest[end..].trim_start();
            value.to_owned()
        };
        if name.is_empty() {
            return Err("expected `Property operator 'value'`".into());
        }
        out.push((name.to_owned(), op.to_owned(), value));
        if rest.is_empty() {
            break;
        }
        let and = rest.get(..3).filter(|w| w.eq_ignore_ascii_case("and"));
        match and {
            Some(_) => rest = rest[3..].trim_start(),
            None => return Err("conditions can only be joined with AND".into()),
        }
    }
    Ok(out)
}

/// A fixture path's answer, paged when it says so; `None` when no fixture
/// matches (the gateway's 404 then).
pub(crate) fn path_answer(
    fixtures: &Fixtures,
    method: &str,
    path: &str,
    query: &str,
) -> Option<Response> {
    let def = fixtures
        .paths
        .iter()
        .find(|p| p.path == path && p.method.eq_ignore_ascii_case(method))?;
    let status = StatusCode::from_u16(def.status).unwrap_or(StatusCode::OK);
    let Some(paging) = &def.paging else {
        return Some((status, Json(def.body.clone())).into_response());
    };
    let params = Params::parse(query.as_bytes()).ok();
    let number = |name: &str| {
        params
            .as_ref()
            .and_then(|p| p.get(name))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let offset = number(&paging.offset_param).unwrap_or(0);
    let limit = number(&paging.limit_param).unwrap_or(usize::MAX);
    let mut body = def.body.clone();
    let target = match &paging.records_pointer {
        Some(pointer) => body.pointer_mut(pointer),
        None => Some(&mut body),
    };
    if let Some(Value::Array(items)) = target {
        let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
        *items = page;
    }
    Some((status, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUSTOMERS: &str = r#"
[[m3]]
program = "CRS610MI"
key = ["CUNO"]
stamp = { LMDT = "date" }
records = [
  { CUNO = "C2", CUNM = "Beta", LMDT = "20260102" },
  { CUNO = "C1", CUNM = "Alpha", LMDT = "20260101" },
  { CUNO = "C3", CUNM = "Gamma", LMDT = "20260103" },
]

[[m3.transactions]]
name = "LstByNumber"
type = "list"
inputs = { CUNO = "key", LMDT = "gt" }
outputs = ["CUNO", "CUNM", "LMDT"]

[[m3.transactions]]
name = "ChgBasicData"
type = "update"
inputs = { CUNO = "key", CUNM = "set" }

[[m3.errors]]
transaction = "ChgBasicData"
when = { CUNO = "C3" }
message = "Customer C3 is blocked"
field = "CUNO"
"#;

    fn load(text: &str) -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, text).unwrap();
        Fixtures::load_dir(dir.path()).unwrap()
    }

    fn run(f: &mut Fixtures, tx: &str, q: &[(&str, &str)]) -> Result<Vec<Value>, String> {
        let q: Vec<(String, String)> = q.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect();
        execute(f, "CRS610MI", tx, &q).map_err(|e| e.message)
    }

    #[test]
    fn lists_start_at_a_key_select_and_cap() {
        let mut f = load(CUSTOMERS);
        let all = run(&mut f, "LstByNumber", &[]).unwrap();
        let keys: Vec<&str> = all.iter().map(|r| r["CUNO"].as_str().unwrap()).collect();
        assert_eq!(keys, ["C1", "C2", "C3"], "in key order");
        let page = run(&mut f, "LstByNumber", &[("CUNO", "C2"), ("maxrecs", "1")]).unwrap();
        assert_eq!(page[0]["CUNO"], "C2");
        assert_eq!(page.len(), 1);
        let changed = run(&mut f, "LstByNumber", &[("LMDT", "20260101")]).unwrap();
        assert_eq!(changed.len(), 2);
        let e = run(&mut f, "LstByNumber", &[("XXX", "1")]).unwrap_err();
        assert!(e.contains("not an input field"), "{e}");
    }

    #[test]
    fn updates_stamp_and_errors_refuse() {
        let mut f = load(CUSTOMERS);
        run(&mut f, "ChgBasicData", &[("CUNO", "C1"), ("CUNM", "New")]).unwrap();
        let all = run(&mut f, "LstByNumber", &[]).unwrap();
        assert_eq!(all[0]["CUNM"], "New");
        let today = chrono::Utc::now().format("%Y%m%d").to_string();
        assert_eq!(all[0]["LMDT"], today.as_str());
        let e = run(&mut f, "ChgBasicData", &[("CUNO", "C3"), ("CUNM", "x")]).unwrap_err();
        assert_eq!(e, "Customer C3 is blocked");
        let e = run(&mut f, "ChgBasicData", &[("CUNO", "C9")]).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.toml"),
            "[[m3]]\nprogram = \"X\"\nkye = []\n",
        )
        .unwrap();
        let e = Fixtures::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bad.toml:3:1"), "{e}");
        assert!(e.contains("kye"), "{e}");
    }

    #[test]
    fn filters_and_bookmarks_page_a_collection() {
        let mut f = Fixtures::default();
        f.load_file_text(
            r#"
[[ido]]
name = "SLCustomers"
key = ["CustNum"]
properties = ["CustNum", "Name"]
records = [{ CustNum = "1", Name = "A" }, { CustNum = "2", Name = "B" }, { CustNum = "3", Name = "C" }]
"#,
        );
        let first = ido_load(
            &f,
            "SLCustomers",
            "properties=CustNum&recordCap=2&filter=CustNum%20%3E%3D%20'1'",
        );
        assert_eq!(first["Items"].as_array().unwrap().len(), 2);
        assert_eq!(first["MoreRowsExist"], true);
        let bookmark = first["Bookmark"].as_str().unwrap();
        let query = format!(
            "properties=CustNum,Name&loadType=NEXT&bookmark={}",
            crate::codec::form_encode(bookmark)
        );
        let next = ido_load(&f, "SLCustomers", &query);
        assert_eq!(next["Items"][0]["CustNum"], "3");
        assert_eq!(next["MoreRowsExist"], false);
        assert_eq!(parse_filter("A = 'x' AND B > 2").unwrap().len(), 2);
        assert!(parse_filter("A = 'x' OR B > 2").is_err());
    }

    impl Fixtures {
        fn load_file_text(&mut self, text: &str) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("t.toml");
            std::fs::write(&file, text).unwrap();
            self.load_file(&file).unwrap();
        }
    }
}
