//! M3 MI programs over the REST v2 API (`/M3/m3api-rest/v2/execute`), with
//! `MMS200MI` item transactions on the shared catalogue.
//!
//! The envelope reproduces the real one down to the misspelt
//! `nrOfSuccessfullTransactions`. Error codes follow M3's message-id style but
//! are the simulator's own; clients should key on `errorField` and the
//! failure counts, not on exact codes or texts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::catalogue::{self, COMPANY, Catalogue, Item, Record};
use super::codec::{Params, clip};
use super::datetime::{self, MS_PER_DAY};
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

    fn format(self, day: i64) -> String {
        let (year, month, dom) = datetime::civil_from_days(day);
        let yy = year.rem_euclid(100);
        match self {
            DateFormat::Ymd8 => format!("{year:04}{month:02}{dom:02}"),
            DateFormat::Ymd6 => format!("{yy:02}{month:02}{dom:02}"),
            DateFormat::Mdy8 => format!("{month:02}{dom:02}{year:04}"),
            DateFormat::Mdy6 => format!("{month:02}{dom:02}{yy:02}"),
            DateFormat::Dmy8 => format!("{dom:02}{month:02}{year:04}"),
            DateFormat::Dmy6 => format!("{dom:02}{month:02}{yy:02}"),
        }
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
    let now = datetime::now_ms();
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
        created_day: now.div_euclid(MS_PER_DAY),
        changed_ms: now,
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
            "RGDT" => options.date_format.format(item.created_day),
            "LMDT" => options
                .date_format
                .format(item.changed_ms.div_euclid(MS_PER_DAY)),
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
mod tests {
    use std::sync::RwLock;

    use super::*;

    fn run(
        cat: &RwLock<Catalogue>,
        transaction: Transaction,
        query: &str,
    ) -> Result<Vec<Record>, M3Error> {
        let params = Params::parse(query.as_bytes()).unwrap();
        let (options, inputs) = parse_query(&params)?;
        execute(cat, transaction, &inputs, &options)
    }

    fn catalogue(n: usize) -> RwLock<Catalogue> {
        RwLock::new(Catalogue::generate(n))
    }

    #[test]
    fn list_starts_at_the_key_inclusive() {
        let cat = catalogue(300);
        let page = run(&cat, Transaction::LstItmByItm, "ITNO=ITM000120&maxrecs=5").unwrap();
        let keys: Vec<_> = page.iter().map(|r| r.get("ITNO").unwrap()).collect();
        assert_eq!(
            keys,
            [
                "ITM000120",
                "ITM000121",
                "ITM000122",
                "ITM000123",
                "ITM000124"
            ]
        );
        assert_eq!(run(&cat, Transaction::LstItmByItm, "").unwrap().len(), 100);
        assert_eq!(
            run(&cat, Transaction::LstItmByItm, "maxrecs=0")
                .unwrap()
                .len(),
            300
        );
    }

    #[test]
    fn paging_by_key_visits_every_item_once() {
        let cat = catalogue(1003);
        let mut seen = Vec::new();
        let mut next = String::new();
        loop {
            let page = run(
                &cat,
                Transaction::LstItmByItm,
                &format!("ITNO={next}&maxrecs=50&returncols=ITNO"),
            )
            .unwrap();
            let skip = usize::from(!seen.is_empty());
            let fresh: Vec<String> = page
                .iter()
                .skip(skip)
                .map(|r| r.get("ITNO").unwrap().to_owned())
                .collect();
            if fresh.is_empty() {
                break;
            }
            next = fresh.last().unwrap().clone();
            seen.extend(fresh);
        }
        assert_eq!(seen.len(), 1003);
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup, seen);
    }

    #[test]
    fn limits_are_capped() {
        assert_eq!(effective_limit(0), LIST_CAP);
        assert_eq!(effective_limit(7), 7);
        assert_eq!(effective_limit(50_000), LIST_CAP);
        let cat = catalogue(10_050);
        assert_eq!(
            run(&cat, Transaction::LstItmByItm, "maxrecs=0")
                .unwrap()
                .len(),
            LIST_CAP
        );
    }

    #[test]
    fn options_shape_records() {
        let cat = catalogue(20);
        let rec = &run(
            &cat,
            Transaction::GetItmBasic,
            "ITNO=ITM000001&returncols=ITDS,ITNO,LMDT&righttrim=false&dateformat=DMY8",
        )
        .unwrap()[0];
        let names: Vec<_> = rec.0.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["ITNO", "ITDS", "LMDT"]);
        assert_eq!(rec.get("ITNO").unwrap(), "ITM000001      ");
        assert_eq!(rec.get("ITDS").unwrap().len(), 30);
        let lmdt = rec.get("LMDT").unwrap();
        assert!(lmdt.len() == 8 && lmdt.ends_with("2026"), "{lmdt}");

        let empty_fuds = cat
            .read()
            .unwrap()
            .iter()
            .find(|i| i.fuds.is_empty())
            .cloned();
        if let Some(item) = empty_fuds {
            let q = format!("ITNO={}&excludeempty=true", item.itno);
            let rec = &run(&cat, Transaction::GetItmBasic, &q).unwrap()[0];
            assert_eq!(rec.get("FUDS"), None);
            let q = format!("ITNO={}", item.itno);
            let rec = &run(&cat, Transaction::GetItmBasic, &q).unwrap()[0];
            assert_eq!(rec.get("FUDS"), Some(""));
        }
    }

    #[test]
    fn bad_requests_are_m3_errors() {
        let cat = catalogue(5);
        let cases = [
            ("ITNO=NOPE", "ITNO", StatusCode::BAD_REQUEST),
            ("", "ITNO", StatusCode::BAD_REQUEST),
            (
                "ITNO=ITM000001&maxrecs=-1",
                "maxrecs",
                StatusCode::BAD_REQUEST,
            ),
            (
                "ITNO=ITM000001&maxrecs=ten",
                "maxrecs",
                StatusCode::BAD_REQUEST,
            ),
            (
                "ITNO=ITM000001&returncols=ITNO,NOPE",
                "returncols",
                StatusCode::BAD_REQUEST,
            ),
            (
                "ITNO=ITM000001&excludeempty=yes",
                "excludeempty",
                StatusCode::BAD_REQUEST,
            ),
            (
                "ITNO=ITM000001&dateformat=ISO",
                "dateformat",
                StatusCode::BAD_REQUEST,
            ),
            ("ITNO=ITM000001&cono=200", "CONO", StatusCode::BAD_REQUEST),
            ("ITNO=ITM000001&cono=abc", "CONO", StatusCode::BAD_REQUEST),
            ("ITNO=ITM000001&ITDS=x", "ITDS", StatusCode::BAD_REQUEST),
            ("ITNO=ITM0000000000000001", "ITNO", StatusCode::BAD_REQUEST),
            ("ITNO=%01", "ITNO", StatusCode::BAD_REQUEST),
        ];
        for (query, field, status) in cases {
            let err = run(&cat, Transaction::GetItmBasic, query).unwrap_err();
            assert_eq!((err.field.as_str(), err.status), (field, status), "{query}");
        }
        assert!(run(&cat, Transaction::GetItmBasic, "ITNO=ITM000001&cono=100").is_ok());
        assert!(run(&cat, Transaction::GetItmBasic, "ITNO=ITM000001&cono=").is_ok());
        assert!(Transaction::lookup("MMS999MI", "GetItmBasic").is_err());
        assert!(Transaction::lookup(PROGRAM, "DltItmBasic").is_err());
    }

    #[test]
    fn add_validates_and_refuses_duplicates() {
        let cat = catalogue(5);
        let add = |q: &str| run(&cat, Transaction::AddItmBasic, q);
        assert_eq!(
            add("ITNO=NEW1&ITDS=Widget&GRWE=1.5&UNMS=KG").unwrap(),
            vec![]
        );
        let stored = cat.read().unwrap().get("NEW1").cloned().unwrap();
        assert_eq!((stored.grwe_milli, stored.unms.as_str()), (1500, "KG"));
        assert_eq!(stored.itty, "FIN");
        let dup = add("ITNO=NEW1&ITDS=Again").unwrap_err();
        assert_eq!(dup.message, "Item number NEW1 already exists");
        assert_eq!(dup.status, StatusCode::OK);
        for (query, field) in [
            ("ITDS=x", "ITNO"),
            ("ITNO=N2", "ITDS"),
            ("ITNO=N2&ITDS=x&UNMS=XX", "UNMS"),
            ("ITNO=N2&ITDS=x&STAT=99", "STAT"),
            ("ITNO=N2&ITDS=x&ITTY=ZZZ", "ITTY"),
            ("ITNO=N2&ITDS=x&GRWE=heavy", "GRWE"),
            ("ITNO=+N2&ITDS=x", "ITNO"),
        ] {
            assert_eq!(add(query).unwrap_err().field, field, "{query}");
        }
        assert!(cat.read().unwrap().get("N2").is_none());
    }

    #[test]
    fn envelope_uses_the_real_key_names() {
        let ok = TransactionResult::new("GetItmBasic", Ok(vec![]));
        let bad = TransactionResult::new(
            "GetItmBasic",
            Err(M3Error::bad_request("WITNO03", "ITNO", "gone".into())),
        );
        let json = serde_json::to_value(Envelope::of(vec![ok, bad])).unwrap();
        assert_eq!(json["nrOfSuccessfullTransactions"], 1);
        assert_eq!(json["nrOfFailedTransactions"], 1);
        assert_eq!(json["wasTerminated"], false);
        assert_eq!(json["results"][1]["errorField"], "ITNO");
        assert_eq!(json["results"][1]["errorCode"], "WITNO03");
        assert!(json["results"][0].get("errorMessage").is_none());
    }

    #[test]
    fn date_formats() {
        let day = datetime::days_from_civil(2026, 3, 4);
        assert_eq!(DateFormat::Ymd8.format(day), "20260304");
        assert_eq!(DateFormat::Ymd6.format(day), "260304");
        assert_eq!(DateFormat::Mdy8.format(day), "03042026");
        assert_eq!(DateFormat::Dmy6.format(day), "040326");
    }
}
