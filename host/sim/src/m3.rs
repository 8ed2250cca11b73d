//! M3 MI programs over the REST v2 API (`/M3/m3api-rest/v2/execute`), with
//! `MMS200MI` item transactions on the shared catalogue.
//!
//! The envelope reproduces the real one down to the misspelt
//! `nrOfSuccessfullTransactions`. Error codes follow M3's message-id style but
//! are the simulator's own; clients should key on `errorField` and the
//! failure counts, not on exact codes or texts.
//!
//! Public shape followed: M3 API REST v2: `execute/{program}/{transaction}`
//! GETs with `maxrecs`, `returncols`, `excludeempty`, `righttrim` and
//! `dateformat`, bulk POSTs to `execute`, and the `results` /
//! `nrOf...Transactions` envelope both answer with.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::catalogue::{self, COMPANY, Catalogue, Item, Record};
use super::codec::{Params, clip};
use super::{SimState, read, write};

const PROGRAM: &str = "MMS200MI";
const DEFAULT_MAXRECS: usize = 100;
/// Lists never return more than this, whatever `maxrecs` says.
const LIST_CAP: usize = 10_000;
const MAX_BULK_TRANSACTIONS: usize = 10_000;
/// Who `AddItmBasic` records as responsible when the caller does not say.
const DEFAULT_RESPONSIBLE: &str = "IONFLOW";

/// Output columns of the item transactions in M3's order, with the field
/// lengths used for padding when `righttrim=false`.
const ITEM_COLUMNS: &[(&str, usize)] = &[
    ("CONO", 3),
    ("ITNO", 15),
    ("ITDS", 30),
    ("FUDS", 60),
    ("STAT", 2),
    ("ITTY", 3),
    ("ITGR", 5),
    ("ITCL", 5),
    ("UNMS", 3),
    ("RESP", 10),
    ("GRWE", 13),
    ("NEWE", 13),
    ("RGDT", 8),
    ("LMDT", 8),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    GetItmBasic,
    LstItmByItm,
    AddItmBasic,
}

impl Transaction {
    fn lookup(program: &str, transaction: &str) -> Result<Transaction, M3Error> {
        if program != PROGRAM {
            return Err(M3Error::bad_request(
                "XPG0001",
                "",
                format!("Program {} does not exist", clip(program, 20)),
            ));
        }
        match transaction {
            "GetItmBasic" => Ok(Transaction::GetItmBasic),
            "LstItmByItm" => Ok(Transaction::LstItmByItm),
            "AddItmBasic" => Ok(Transaction::AddItmBasic),
            _ => Err(M3Error::bad_request(
                "XTR0001",
                "",
                format!(
                    "Transaction {} does not exist in program {PROGRAM}",
                    clip(transaction, 20)
                ),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transaction::GetItmBasic => "GetItmBasic",
            Transaction::LstItmByItm => "LstItmByItm",
            Transaction::AddItmBasic => "AddItmBasic",
        }
    }

    /// Input fields with their maximum lengths.
    fn inputs(self) -> &'static [(&'static str, usize)] {
        match self {
            Transaction::GetItmBasic | Transaction::LstItmByItm => &[("ITNO", 15)],
            Transaction::AddItmBasic => &[
                ("ITNO", 15),
                ("ITDS", 30),
                ("FUDS", 60),
                ("ITTY", 3),
                ("ITGR", 5),
                ("ITCL", 5),
                ("UNMS", 3),
                ("STAT", 2),
                ("RESP", 10),
                ("GRWE", 13),
                ("NEWE", 13),
            ],
        }
    }
}

/// A failed transaction. `status` is the HTTP status a single-transaction GET
/// answers with: reads and malformed requests get 400, while write
/// validation comes back in a 200, as the gateway mixes both and clients must
/// check `nrOfFailedTransactions` either way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct M3Error {
    code: &'static str,
    field: String,
    message: String,
    status: StatusCode,
}

impl M3Error {
    fn bad_request(code: &'static str, field: &str, message: String) -> M3Error {
        M3Error {
            code,
            field: field.to_owned(),
            message,
            status: StatusCode::BAD_REQUEST,
        }
    }

    fn rejected(code: &'static str, field: &str, message: String) -> M3Error {
        M3Error {
            status: StatusCode::OK,
            ..M3Error::bad_request(code, field, message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateFormat {
    Ymd8,
    Ymd6,
    Mdy8,
    Mdy6,
    Dmy8,
    Dmy6,
}

impl DateFormat {
    fn parse(text: &str) -> Option<DateFormat> {
        Some(match text.to_ascii_uppercase().as_str() {
            "YMD8" => DateFormat::Ymd8,
            "YMD6" => DateFormat::Ymd6,
            "MDY8" => DateFormat::Mdy8,
            "MDY6" => DateFormat::Mdy6,
            "DMY8" => DateFormat::Dmy8,
            "DMY6" => DateFormat::Dmy6,
            _ => return None,
        })
    }

    fn format(self, date: NaiveDate) -> String {
        let pattern = match self {
            DateFormat::Ymd8 => "%Y%m%d",
            DateFormat::Ymd6 => "%y%m%d",
            DateFormat::Mdy8 => "%m%d%Y",
            DateFormat::Mdy6 => "%m%d%y",
            DateFormat::Dmy8 => "%d%m%Y",
            DateFormat::Dmy6 => "%d%m%y",
        };
        date.format(pattern).to_string()
    }
}

/// The request-level settings of an MI call (`maxrecs`, `returncols`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MiOptions {
    max_records: usize,
    return_columns: Option<Vec<&'static str>>,
    exclude_empty: bool,
    right_trim: bool,
    date_format: DateFormat,
    company: Option<String>,
}

impl Default for MiOptions {
    fn default() -> Self {
        MiOptions {
            max_records: DEFAULT_MAXRECS,
            return_columns: None,
            exclude_empty: false,
            right_trim: true,
            date_format: DateFormat::Ymd8,
            company: None,
        }
    }
}

/// `0` means "no limit", which M3 still caps.
fn effective_limit(maxrecs: usize) -> usize {
    if maxrecs == 0 {
        LIST_CAP
    } else {
        maxrecs.min(LIST_CAP)
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, M3Error> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(M3Error::bad_request(
            "XPA0002",
            name,
            format!("Parameter {name} must be true or false"),
        )),
    }
}

fn parse_maxrecs(name: &str, value: &str) -> Result<usize, M3Error> {
    let valid = !value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<usize>() {
        Ok(n) if valid => Ok(effective_limit(n)),
        _ => Err(M3Error::bad_request(
            "XPA0003",
            name,
            format!("Parameter {name} must be a non-negative integer"),
        )),
    }
}

fn parse_columns<'a>(
    name: &str,
    columns: impl Iterator<Item = &'a str>,
) -> Result<Vec<&'static str>, M3Error> {
    let mut out: Vec<&'static str> = Vec::new();
    for column in columns.map(str::trim).filter(|c| !c.is_empty()) {
        let known = ITEM_COLUMNS
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(c, _)| *c)
            .ok_or_else(|| {
                M3Error::bad_request(
                    "XPA0004",
                    name,
                    format!("Column {} does not exist in the output", clip(column, 20)),
                )
            })?;
        if !out.contains(&known) {
            out.push(known);
        }
    }
    Ok(out)
}

/// Splits a GET query into MI settings (lower-case names) and transaction
/// input fields (everything else, validated per transaction later).
fn parse_query(params: &Params) -> Result<(MiOptions, Vec<(String, String)>), M3Error> {
    let mut options = MiOptions::default();
    let mut inputs = Vec::new();
    for (name, value) in params.iter() {
        match name {
            "maxrecs" => options.max_records = parse_maxrecs(name, value)?,
            "returncols" => options.return_columns = Some(parse_columns(name, value.split(','))?),
            "excludeempty" => options.exclude_empty = parse_bool(name, value)?,
            "righttrim" => options.right_trim = parse_bool(name, value)?,
            "dateformat" => {
                options.date_format = DateFormat::parse(value).ok_or_else(|| {
                    M3Error::bad_request(
                        "XPA0005",
                        name,
                        "Parameter dateformat must be one of YMD8, YMD6, MDY8, MDY6, DMY8, DMY6"
                            .to_owned(),
                    )
                })?;
            }
            "cono" => options.company = Some(value.to_owned()),
            // Divisions are not modelled; any plausible code is accepted.
            "divi" if value.chars().count() <= 3 => {}
            "divi" => {
                return Err(M3Error::bad_request(
                    "XPA0006",
                    "DIVI",
                    "Division is longer than 3 characters".to_owned(),
                ));
            }
            _ => inputs.push((name.to_owned(), value.to_owned())),
        }
    }
    Ok((options, inputs))
}

fn check_company(company: Option<&str>) -> Result<(), M3Error> {
    match company.map(str::trim) {
        None | Some("") => Ok(()),
        Some(c) if c.parse::<u16>().ok() == COMPANY.parse().ok() => Ok(()),
        Some(c) if c.len() <= 3 && c.bytes().all(|b| b.is_ascii_digit()) => Err(
            M3Error::bad_request("WCONO03", "CONO", format!("Company {c} does not exist")),
        ),
        Some(_) => Err(M3Error::bad_request(
            "WCONO02",
            "CONO",
            "Company must be a number of at most 3 digits".to_owned(),
        )),
    }
}

/// Checks input names and lengths, then returns them right-trimmed as M3
/// stores them.
fn validate_inputs(
    transaction: Transaction,
    inputs: &[(String, String)],
) -> Result<BTreeMap<&'static str, String>, M3Error> {
    let mut fields = BTreeMap::new();
    for (name, value) in inputs {
        let Some((field, max_len)) = transaction
            .inputs()
            .iter()
            .find(|(f, _)| *f == name.as_str())
        else {
            return Err(M3Error::bad_request(
                "XIN0001",
                &clip(name, 10),
                format!(
                    "Field {} is not an input field of {PROGRAM}/{}",
                    clip(name, 20),
                    transaction.name()
                ),
            ));
        };
        let value = value.trim_end_matches(' ');
        if value.chars().any(char::is_control) {
            return Err(M3Error::bad_request(
                "XIN0002",
                field,
                format!("Field {field} contains control characters"),
            ));
        }
        if value.chars().count() > *max_len {
            return Err(M3Error::bad_request(
                "XIN0003",
                field,
                format!("Field {field} is longer than {max_len} characters"),
            ));
        }
        if fields.insert(*field, value.to_owned()).is_some() {
            return Err(M3Error::bad_request(
                "XIN0004",
                field,
                format!("Field {field} is given more than once"),
            ));
        }
    }
    Ok(fields)
}

fn execute(
    catalogue: &std::sync::RwLock<Catalogue>,
    transaction: Transaction,
    inputs: &[(String, String)],
    options: &MiOptions,
) -> Result<Vec<Record>, M3Error> {
    check_company(options.company.as_deref())?;
    let fields = validate_inputs(transaction, inputs)?;
    let input = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    match transaction {
        Transaction::LstItmByItm => {
            let catalogue = read(catalogue);
            Ok(catalogue
                .starting_at(input("ITNO"))
                .take(options.max_records)
                .map(|item| item_record(item, options))
                .collect())
        }
        Transaction::GetItmBasic => {
            let itno = input("ITNO");
            if itno.is_empty() {
                return Err(M3Error::bad_request(
                    "WITNO01",
                    "ITNO",
                    "Item number must be entered".to_owned(),
                ));
            }
            let catalogue = read(catalogue);
            let item = catalogue.get(itno).ok_or_else(|| {
                M3Error::bad_request(
                    "WITNO03",
                    "ITNO",
                    format!("Item number {itno} does not exist"),
                )
            })?;
            Ok(vec![item_record(item, options)])
        }
        Transaction::AddItmBasic => {
            let item = new_item(input)?;
            let itno = item.itno.clone();
            if write(catalogue).insert(item) {
                Ok(Vec::new())
            } else {
                Err(M3Error::rejected(
                    "WITNO02",
                    "ITNO",
                    format!("Item number {itno} already exists"),
                ))
            }
        }
    }
}

/// Builds the item `AddItmBasic` describes, applying M3's field checks.
fn new_item<'a>(input: impl Fn(&str) -> &'a str) -> Result<Item, M3Error> {
    let itno = input("ITNO");
    if itno.is_empty() {
        return Err(M3Error::rejected(
            "WITNO01",
            "ITNO",
            "Item number must be entered".to_owned(),
        ));
    }
    if itno.starts_with(' ') {
        return Err(M3Error::rejected(
            "WITNO04",
            "ITNO",
            "Item number must not start with a blank".to_owned(),
        ));
    }
    let itds = input("ITDS");
    if itds.trim().is_empty() {
        return Err(M3Error::rejected(
            "WITDS01",
            "ITDS",
            "Name must be entered".to_owned(),
        ));
    }
    let coded = |field: &'static str, allowed: &[&str], default: &str, what: &str| {
        let value = match input(field) {
            "" => default,
            given => given,
        };
        if allowed.contains(&value) {
            Ok(value.to_owned())
        } else {
            Err(M3Error::rejected(
                "WCODE03",
                field,
                format!("{what} {value} does not exist"),
            ))
        }
    };
    let weight = |field: &'static str| match input(field) {
        "" => Ok(0),
        given => catalogue::parse_milli(given).ok_or_else(|| {
            M3Error::rejected(
                "WNUM001",
                field,
                format!("Field {field} must be a non-negative number with at most 3 decimals"),
            )
        }),
    };
    let now = catalogue::now();
    Ok(Item {
        itno: itno.to_owned(),
        itds: itds.to_owned(),
        fuds: input("FUDS").to_owned(),
        itty: coded("ITTY", catalogue::ITEM_TYPES, "FIN", "Item type")?,
        itgr: input("ITGR").to_owned(),
        itcl: input("ITCL").to_owned(),
        unms: coded("UNMS", catalogue::UNITS, "EA", "Unit of measure")?,
        stat: coded("STAT", catalogue::STATUSES, "20", "Status")?,
        resp: match input("RESP") {
            "" => DEFAULT_RESPONSIBLE.to_owned(),
            given => given.to_owned(),
        },
        grwe_milli: weight("GRWE")?,
        newe_milli: weight("NEWE")?,
        created: now.date_naive(),
        changed: now,
    })
}

fn item_record(item: &Item, options: &MiOptions) -> Record {
    let value = |column: &str| -> String {
        match column {
            "CONO" => COMPANY.to_owned(),
            "ITNO" => item.itno.clone(),
            "ITDS" => item.itds.clone(),
            "FUDS" => item.fuds.clone(),
            "STAT" => item.stat.clone(),
            "ITTY" => item.itty.clone(),
            "ITGR" => item.itgr.clone(),
            "ITCL" => item.itcl.clone(),
            "UNMS" => item.unms.clone(),
            "RESP" => item.resp.clone(),
            "GRWE" => catalogue::format_milli(item.grwe_milli),
            "NEWE" => catalogue::format_milli(item.newe_milli),
            "RGDT" => options.date_format.format(item.created),
            "LMDT" => options.date_format.format(item.changed.date_naive()),
            _ => String::new(),
        }
    };
    let fields = ITEM_COLUMNS
        .iter()
        .filter(|(column, _)| {
            options
                .return_columns
                .as_ref()
                .is_none_or(|wanted| wanted.contains(column))
        })
        .filter_map(|&(column, width)| {
            let text = value(column);
            if options.exclude_empty && text.is_empty() {
                return None;
            }
            // Without righttrim M3 hands out its fixed-width fields as stored.
            let text = if options.right_trim {
                text
            } else {
                format!("{text:<width$}")
            };
            Some((column, text))
        })
        .collect();
    Record(fields)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TransactionResult {
    transaction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_field: Option<String>,
    records: Vec<Record>,
}

impl TransactionResult {
    fn new(transaction: &str, outcome: Result<Vec<Record>, M3Error>) -> TransactionResult {
        let transaction = clip(transaction, 32);
        match outcome {
            Ok(records) => TransactionResult {
                transaction,
                error_message: None,
                error_type: None,
                error_code: None,
                error_field: None,
                records,
            },
            Err(err) => TransactionResult {
                transaction,
                error_message: Some(err.message),
                error_type: Some("ServerReturnedNOK"),
                error_code: Some(err.code),
                error_field: Some(err.field),
                records: Vec::new(),
            },
        }
    }

    fn failed(&self) -> bool {
        self.error_message.is_some()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    results: Vec<TransactionResult>,
    was_terminated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    termination_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    termination_error_type: Option<&'static str>,
    #[serde(rename = "nrOfSuccessfullTransactions")]
    successful: usize,
    #[serde(rename = "nrOfFailedTransactions")]
    failed: usize,
}

impl Envelope {
    fn of(results: Vec<TransactionResult>) -> Envelope {
        let failed = results.iter().filter(|r| r.failed()).count();
        Envelope {
            successful: results.len() - failed,
            failed,
            results,
            was_terminated: false,
            termination_reason: None,
            termination_error_type: None,
        }
    }

    fn terminated(reason: String) -> Envelope {
        Envelope {
            was_terminated: true,
            termination_reason: Some(reason),
            termination_error_type: Some("ServerReturnedNOK"),
            ..Envelope::of(Vec::new())
        }
    }
}

/// `GET .../execute/{program}/{transaction}?FIELD=..&maxrecs=..`
pub(crate) async fn execute_get(
    State(state): State<Arc<SimState>>,
    Path((program, transaction)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    // A program the user declared (or recorded) is served from the
    // fixtures, even one the simulator has built in.
    if read(&state.fixtures).has_program(&program) {
        return super::fixtures::m3_get(
            &mut write(&state.fixtures),
            &program,
            &transaction,
            query.as_deref().unwrap_or(""),
        );
    }
    let outcome = run_get(
        &state,
        &program,
        &transaction,
        query.as_deref().unwrap_or(""),
    );
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(err) => err.status,
    };
    let envelope = Envelope::of(vec![TransactionResult::new(&transaction, outcome)]);
    (status, Json(envelope)).into_response()
}

fn run_get(
    state: &SimState,
    program: &str,
    transaction: &str,
    query: &str,
) -> Result<Vec<Record>, M3Error> {
    let tx = Transaction::lookup(program, transaction)?;
    let params = Params::parse(query.as_bytes())
        .map_err(|e| M3Error::bad_request("XPA0001", "", format!("Malformed query string: {e}")))?;
    let (options, inputs) = parse_query(&params)?;
    execute(&state.catalogue, tx, &inputs, &options)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BulkRequest {
    program: String,
    #[serde(default)]
    cono: Option<Company>,
    #[serde(default)]
    divi: Option<String>,
    #[serde(default)]
    exclude_empty_values: Option<bool>,
    #[serde(default)]
    right_trim: Option<bool>,
    #[serde(default)]
    max_returned_records: Option<u64>,
    transactions: Vec<BulkTransaction>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Company {
    Number(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BulkTransaction {
    transaction: String,
    #[serde(default)]
    record: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    selected_columns: Option<Vec<String>>,
}

/// `POST .../execute` with several transactions of one program.
pub(crate) async fn execute_bulk(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        let envelope = Envelope::terminated("Content-Type must be application/json".to_owned());
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(envelope)).into_response();
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(program) = value.get("program").and_then(|p| p.as_str())
        && read(&state.fixtures).has_program(program)
    {
        return super::fixtures::m3_bulk(&mut write(&state.fixtures), &value);
    }
    let request: BulkRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            let envelope = Envelope::terminated(format!("Malformed bulk request: {err}"));
            return (StatusCode::BAD_REQUEST, Json(envelope)).into_response();
        }
    };
    if request.transactions.len() > MAX_BULK_TRANSACTIONS {
        let envelope = Envelope::terminated(format!(
            "A bulk request may hold at most {MAX_BULK_TRANSACTIONS} transactions"
        ));
        return (StatusCode::BAD_REQUEST, Json(envelope)).into_response();
    }
    let results = request
        .transactions
        .iter()
        .map(|tx| {
            let outcome = bulk_options(&request, tx).and_then(|(options, inputs)| {
                let transaction = Transaction::lookup(&request.program, &tx.transaction)?;
                execute(&state.catalogue, transaction, &inputs, &options)
            });
            TransactionResult::new(&tx.transaction, outcome)
        })
        .collect();
    Json(Envelope::of(results)).into_response()
}

fn bulk_options(
    request: &BulkRequest,
    tx: &BulkTransaction,
) -> Result<(MiOptions, Vec<(String, String)>), M3Error> {
    if request.divi.as_ref().is_some_and(|d| d.chars().count() > 3) {
        return Err(M3Error::bad_request(
            "XPA0006",
            "DIVI",
            "Division is longer than 3 characters".to_owned(),
        ));
    }
    let max_records = match request.max_returned_records {
        None => DEFAULT_MAXRECS,
        Some(n) => effective_limit(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let return_columns = match &tx.selected_columns {
        None => None,
        Some(columns) => Some(parse_columns(
            "selectedColumns",
            columns.iter().map(String::as_str),
        )?),
    };
    let company = request.cono.as_ref().map(|c| match c {
        Company::Number(n) => n.to_string(),
        Company::Text(t) => t.clone(),
    });
    let options = MiOptions {
        max_records,
        return_columns,
        exclude_empty: request.exclude_empty_values.unwrap_or(false),
        right_trim: request.right_trim.unwrap_or(true),
        date_format: DateFormat::Ymd8,
        company,
    };
    let mut inputs = Vec::with_capacity(tx.record.len());
    for (name, value) in &tx.record {
        let serde_json::Value::String(text) = value else {
            return Err(M3Error::bad_request(
                "XIN0005",
                &clip(name, 10),
                format!("Field {} must be given as a string", clip(name, 20)),
            ));
        };
        inputs.push((name.clone(), text.clone()));
    }
    Ok((options, inputs))
}

#[cfg(test)]
mod tests;
