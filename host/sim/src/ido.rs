//! Mongoose IDO REST (`/CSI/IDORequestService/ido/load/{ido}`), serving the
//! shared catalogue as the SyteLine `SLItems` IDO.
//!
//! Like the real service, problems are reported in an HTTP 200 with
//! `"Success": false`, so a client that only checks the status code is caught.
//! Parameter names are case-insensitive, as ASP.NET binds them, and unknown
//! parameters are ignored, as the real service does.
//!
//! Public shape followed: the Mongoose IDO Request Service REST API:
//! `ido/load/{ido}` with `properties`, `filter`, `recordCap`, `loadType`,
//! `bookmark` and `orderBy`, `ido/update/{ido}` with `Changes`, answers with
//! `Success`, `Message`, `Items`, `Bookmark` and `MoreRowsExist`, and
//! zone-less timestamps such as `2026-03-14T09:26:53.000`.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, SubsecRound as _, Timelike as _};
use serde::Serialize;

use super::catalogue::{self, Catalogue, Item, Record};
use super::codec::{Params, clip};
use super::{SimState, read};

const IDO_NAME: &str = "SLItems";
pub(crate) const CONFIG_HEADER: &str = "x-infor-mongooseconfig";
const DEFAULT_RECORD_CAP: usize = 200;
const MAX_FILTER_CHARS: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Property {
    Item,
    Description,
    Um,
    ProductCode,
    Stat,
    MatlType,
    UnitWeight,
    RecordDate,
    CreateDate,
    RowPointer,
}

const PROPERTIES: &[(&str, Property)] = &[
    ("Item", Property::Item),
    ("Description", Property::Description),
    ("UM", Property::Um),
    ("ProductCode", Property::ProductCode),
    ("Stat", Property::Stat),
    ("MatlType", Property::MatlType),
    ("UnitWeight", Property::UnitWeight),
    ("RecordDate", Property::RecordDate),
    ("CreateDate", Property::CreateDate),
    ("RowPointer", Property::RowPointer),
];

fn find_property(name: &str) -> Option<(&'static str, Property)> {
    PROPERTIES
        .iter()
        .find(|(canonical, _)| canonical.eq_ignore_ascii_case(name))
        .copied()
}

impl Property {
    fn text(self, item: &Item) -> String {
        match self {
            Property::Item => item.itno.clone(),
            Property::Description => item.itds.clone(),
            Property::Um => item.unms.clone(),
            Property::ProductCode => item.itgr.clone(),
            // SyteLine's item status: Active, Slow-moving, Obsolete.
            Property::Stat => match item.stat.as_str() {
                "10" | "20" => "A",
                "50" => "S",
                _ => "O",
            }
            .to_owned(),
            // Material type: Material, Tool, Other.
            Property::MatlType => match item.itty.as_str() {
                "SPR" => "T",
                "SRV" => "O",
                _ => "M",
            }
            .to_owned(),
            // Mongoose renders decimals with eight places.
            Property::UnitWeight => format!(
                "{}.{:03}00000",
                item.grwe_milli / 1000,
                item.grwe_milli % 1000
            ),
            Property::RecordDate | Property::CreateDate => {
                self.time(item).map(format_timestamp).unwrap_or_default()
            }
            Property::RowPointer => item.row_pointer(),
        }
    }

    fn time(self, item: &Item) -> Option<NaiveDateTime> {
        match self {
            Property::RecordDate => Some(item.changed.naive_utc()),
            Property::CreateDate => Some(item.created.and_time(NaiveTime::MIN)),
            _ => None,
        }
    }
}

/// `2026-03-14T09:26:53.000`: the zone-less timestamp, always with
/// milliseconds, that the IDO layer returns (UTC in the simulator).
fn format_timestamp(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

/// Parses the timestamp spellings a filter literal may use: `2026-03-14`,
/// `2026-03-14 09:26`, `2026-03-14T09:26:53.5`, `20260314 09:26:53.000`
/// (Mongoose's own), optionally followed by `Z`. Fractions beyond the
/// millisecond are cut off, as Mongoose stores milliseconds.
///
/// chrono's parser alone would be laxer than the simulator has always been
/// (one-digit fields, signed years, a leap second `:60`, any run of spaces),
/// so each part must first fit its exact template, `9` standing for an ASCII
/// digit; chrono then checks the calendar.
fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let date = if fits(date, "9999-99-99") {
        NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?
    } else if fits(date, "99999999") {
        NaiveDate::parse_from_str(date, "%Y%m%d").ok()?
    } else {
        return None;
    };
    let time = match time {
        None => NaiveTime::MIN,
        Some(time) if fits(time, "99:99") => NaiveTime::parse_from_str(time, "%H:%M").ok()?,
        Some(time) if fits(time, "99:99:99") => NaiveTime::parse_from_str(time, "%H:%M:%S").ok()?,
        Some(time)
            if time.split_once('.').is_some_and(|(whole, fraction)| {
                fits(whole, "99:99:99")
                    && !fraction.is_empty()
                    && fraction.bytes().all(|b| b.is_ascii_digit())
            }) =>
        {
            NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?
        }
        Some(_) => return None,
    };
    if time.nanosecond() >= 1_000_000_000 {
        return None; // chrono's leap second
    }
    Some(date.and_time(time).trunc_subsecs(3))
}

/// Whether `text` has the shape of `template`, where `9` is any ASCII digit
/// and every other byte stands for itself.
fn fits(text: &str, template: &str) -> bool {
    text.len() == template.len()
        && text.bytes().zip(template.bytes()).all(|(c, t)| match t {
            b'9' => c.is_ascii_digit(),
            _ => c == t,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Literal {
    /// Lower-cased: SQL Server's default collation ignores case.
    Text(String),
    Time(NaiveDateTime),
    Milli(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    property: Property,
    op: Op,
    literal: Literal,
}

impl Condition {
    fn matches(&self, item: &Item) -> bool {
        let ordering = match &self.literal {
            // A property without a time (`None`) sorts before every time.
            Literal::Time(t) => self.property.time(item).cmp(&Some(*t)),
            Literal::Milli(m) => item.grwe_milli.cmp(m),
            Literal::Text(t) => self.property.text(item).to_lowercase().cmp(t),
        };
        self.op.accepts(ordering)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Op(Op),
    Quoted(String),
}

fn tokenize(filter: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = filter.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".to_owned()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Quoted(text));
        } else if matches!(c, '=' | '<' | '>' | '!') {
            let next = chars.get(i + 1).copied();
            let (op, width) = match (c, next) {
                ('<', Some('>')) | ('!', Some('=')) => (Op::Ne, 2),
                ('<', Some('=')) => (Op::Le, 2),
                ('>', Some('=')) => (Op::Ge, 2),
                ('<', _) => (Op::Lt, 1),
                ('>', _) => (Op::Gt, 1),
                ('=', _) => (Op::Eq, 1),
                _ => return Err("'!' must be followed by '='".to_owned()),
            };
            tokens.push(Token::Op(op));
            i += width;
        } else if c.is_alphanumeric() || matches!(c, '_' | '.') {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(tokens)
}

/// The filter subset the simulator understands: `Property op literal`
/// comparisons joined by `AND`, e.g. `RecordDate > '2026-05-01 00:00:00'`.
fn parse_filter(filter: &str) -> Result<Vec<Condition>, String> {
    if filter.chars().count() > MAX_FILTER_CHARS {
        return Err(format!(
            "filter is longer than {MAX_FILTER_CHARS} characters"
        ));
    }
    let tokens = tokenize(filter)?;
    let mut conditions = Vec::new();
    let mut rest = tokens.as_slice();
    while !rest.is_empty() {
        let [Token::Word(name), Token::Op(op), literal, tail @ ..] = rest else {
            return Err("expected `Property operator 'value'`".to_owned());
        };
        let (canonical, property) = find_property(name)
            .ok_or_else(|| format!("property {} does not exist", clip(name, 40)))?;
        let literal_text = match literal {
            Token::Quoted(text) | Token::Word(text) => text.as_str(),
            Token::Op(_) => return Err(format!("{canonical} must be compared with a value")),
        };
        let literal = match property {
            Property::RecordDate | Property::CreateDate => Literal::Time(
                parse_timestamp(literal_text)
                    .ok_or_else(|| format!("{canonical} must be compared with a date"))?,
            ),
            Property::UnitWeight => Literal::Milli(
                catalogue::parse_milli(literal_text)
                    .ok_or_else(|| format!("{canonical} must be compared with a number"))?,
            ),
            _ => Literal::Text(literal_text.to_lowercase()),
        };
        conditions.push(Condition {
            property,
            op: *op,
            literal,
        });
        rest = match tail {
            [] => tail,
            [Token::Word(and), more @ ..]
                if and.eq_ignore_ascii_case("AND") && !more.is_empty() =>
            {
                more
            }
            _ => return Err("conditions can only be joined with AND".to_owned()),
        };
    }
    Ok(conditions)
}

const BOOKMARK_PREFIX: &str = "<B><P><p>";
const BOOKMARK_SUFFIX: &str = "</p></P></B>";

/// Mongoose bookmarks are small XML fragments naming the last key read.
fn encode_bookmark(key: &str) -> String {
    let escaped = key
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("{BOOKMARK_PREFIX}{escaped}{BOOKMARK_SUFFIX}")
}

fn decode_bookmark(bookmark: &str) -> Option<String> {
    let inner = bookmark
        .strip_prefix(BOOKMARK_PREFIX)?
        .strip_suffix(BOOKMARK_SUFFIX)?;
    if inner.contains(['<', '>']) {
        return None;
    }
    let mut key = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(at) = rest.find('&') {
        key.push_str(&rest[..at]);
        rest = &rest[at..];
        let (entity, text) = [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>')]
            .into_iter()
            .find(|(entity, _)| rest.starts_with(entity))?;
        key.push(text);
        rest = &rest[entity.len()..];
    }
    key.push_str(rest);
    Some(key)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadRequest {
    properties: Vec<(&'static str, Property)>,
    /// `None` is unlimited.
    cap: Option<usize>,
    /// Continue after this key (from a bookmark).
    after: Option<String>,
    filter: Vec<Condition>,
}

fn parse_request(params: &Params) -> Result<LoadRequest, String> {
    let requested = params
        .get("properties")
        .ok_or("The properties parameter is required")?;
    let mut properties: Vec<(&'static str, Property)> = Vec::new();
    for name in requested
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let wanted: Vec<(&'static str, Property)> = if name == "*" {
            PROPERTIES.to_vec()
        } else {
            vec![find_property(name).ok_or_else(|| {
                format!(
                    "Property {} does not exist on IDO {IDO_NAME}",
                    clip(name, 40)
                )
            })?]
        };
        for p in wanted {
            if !properties.contains(&p) {
                properties.push(p);
            }
        }
    }
    if properties.is_empty() {
        return Err("The properties parameter names no property".to_owned());
    }

    let cap = match params.get("recordcap").map(str::trim) {
        None | Some("") => Some(DEFAULT_RECORD_CAP),
        Some(text) => match text.parse::<i64>() {
            Ok(-1) => Some(DEFAULT_RECORD_CAP),
            Ok(0) => None,
            Ok(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err("recordCap must be -1 (default), 0 (unlimited) or positive".to_owned()),
        },
    };

    let load_type = params.get("loadtype").unwrap_or("FIRST").trim();
    let after = if load_type.eq_ignore_ascii_case("FIRST") || load_type.is_empty() {
        None
    } else if load_type.eq_ignore_ascii_case("NEXT") {
        match params.get("bookmark") {
            None | Some("") => None,
            Some(bookmark) => Some(decode_bookmark(bookmark).ok_or("The bookmark is not valid")?),
        }
    } else if load_type.eq_ignore_ascii_case("PREV") || load_type.eq_ignore_ascii_case("LAST") {
        return Err(format!(
            "loadType {} is not supported by the simulator",
            load_type.to_ascii_uppercase()
        ));
    } else {
        return Err("loadType must be FIRST, NEXT, PREV or LAST".to_owned());
    };

    match params.get("orderby").map(str::trim) {
        None | Some("") => {}
        Some(order)
            if order.eq_ignore_ascii_case("Item") || order.eq_ignore_ascii_case("Item ASC") => {}
        Some(_) => return Err("The simulator can only order SLItems by Item".to_owned()),
    }

    let filter = match params.get("filter") {
        None => Vec::new(),
        Some(text) => parse_filter(text).map_err(|e| format!("Invalid filter: {e}"))?,
    };

    Ok(LoadRequest {
        properties,
        cap,
        after,
        filter,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct IdoResponse {
    success: bool,
    message: Option<String>,
    items: Option<Vec<Record>>,
    bookmark: Option<String>,
    more_rows_exist: bool,
}

impl IdoResponse {
    fn failure(message: impl Into<String>) -> IdoResponse {
        IdoResponse {
            success: false,
            message: Some(message.into()),
            items: None,
            bookmark: None,
            more_rows_exist: false,
        }
    }
}

fn load(catalogue: &Catalogue, request: &LoadRequest) -> IdoResponse {
    let candidates: Box<dyn Iterator<Item = &Item>> = match &request.after {
        Some(key) => Box::new(catalogue.after(key)),
        None => Box::new(catalogue.iter()),
    };
    let mut matching = candidates.filter(|item| request.filter.iter().all(|c| c.matches(item)));
    let page: Vec<&Item> = matching
        .by_ref()
        .take(request.cap.unwrap_or(usize::MAX))
        .collect();
    let more_rows_exist = matching.next().is_some();
    let items = page
        .iter()
        .map(|item| {
            Record(
                request
                    .properties
                    .iter()
                    .map(|(name, property)| (*name, property.text(item)))
                    .collect(),
            )
        })
        .collect();
    IdoResponse {
        success: true,
        message: None,
        items: Some(items),
        bookmark: page.last().map(|item| encode_bookmark(&item.itno)),
        more_rows_exist,
    }
}

/// `GET .../ido/load/{ido}?properties=..&recordCap=..&loadType=NEXT&bookmark=..`
pub(crate) async fn load_collection(
    State(state): State<Arc<SimState>>,
    Path(ido): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let has_config = headers
        .get(CONFIG_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !has_config {
        return Json(IdoResponse::failure(
            "The X-Infor-MongooseConfig header is required: it names the Mongoose configuration to use.",
        ))
        .into_response();
    }
    // A collection the user declared is served from the fixtures.
    if read(&state.fixtures).has_collection(&ido) {
        let answer =
            super::fixtures::ido_load(&read(&state.fixtures), &ido, query.as_deref().unwrap_or(""));
        return Json(answer).into_response();
    }
    if !ido.eq_ignore_ascii_case(IDO_NAME) {
        return Json(IdoResponse::failure(format!(
            "IDO {} does not exist",
            clip(&ido, 40)
        )))
        .into_response();
    }
    let request = Params::parse_case_insensitive(query.as_deref().unwrap_or("").as_bytes())
        .map_err(|e| format!("Malformed query string: {e}"))
        .and_then(|params| parse_request(&params));
    match request {
        Ok(request) => Json(load(&read(&state.catalogue), &request)).into_response(),
        Err(message) => Json(IdoResponse::failure(message)).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateRequest {
    #[serde(default)]
    changes: Vec<Change>,
    #[serde(default, rename = "IDOName")]
    _ido_name: Option<String>,
    #[serde(default)]
    _refresh_after_save: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Change {
    action: u8,
    #[serde(default)]
    _item_id: Option<String>,
    #[serde(default)]
    properties: Vec<ChangedProperty>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangedProperty {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default = "yes")]
    modified: bool,
    #[serde(default)]
    _is_null: Option<bool>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateResponse {
    success: bool,
    message: Option<String>,
}

/// Applies one change to the catalogue: insert (1) or update (2) keyed by
/// `Item`; deletes (4) are refused, as SLItems deletes are in most sites.
fn apply_change(catalogue: &mut Catalogue, change: &Change) -> Result<(), String> {
    let mut values = std::collections::BTreeMap::new();
    for p in change.properties.iter().filter(|p| p.modified) {
        let (canonical, _) = find_property(&p.name).ok_or_else(|| {
            format!(
                "Property {} does not exist on IDO {IDO_NAME}",
                clip(&p.name, 40)
            )
        })?;
        values.insert(canonical, p.value.clone().unwrap_or_default());
    }
    let item = values
        .get("Item")
        .filter(|v| !v.trim().is_empty())
        .ok_or("The Item property is required")?
        .clone();
    if item.chars().count() > 30 {
        return Err("Item is longer than 30 characters".into());
    }
    for read_only in [
        "RecordDate",
        "CreateDate",
        "RowPointer",
        "UnitWeight",
        "ProductCode",
        "MatlType",
        "Stat",
    ] {
        if values.contains_key(read_only) {
            return Err(format!(
                "Property {read_only} cannot be changed by the simulator"
            ));
        }
    }
    let description = values.get("Description").cloned();
    let um = values.get("UM").cloned();
    if let Some(um) = &um
        && !catalogue::UNITS.contains(&um.as_str())
    {
        return Err(format!("U/M {} is not valid", clip(um, 10)));
    }
    match change.action {
        1 => {
            let description = description
                .filter(|d| !d.trim().is_empty())
                .ok_or("Description is required for a new item")?;
            let now = catalogue::now();
            let new = Item {
                itno: item.clone(),
                itds: description,
                fuds: String::new(),
                itty: "FIN".into(),
                itgr: String::new(),
                itcl: String::new(),
                unms: um.unwrap_or_else(|| "EA".into()),
                stat: "20".into(),
                resp: "IONFLOW".into(),
                grwe_milli: 0,
                newe_milli: 0,
                created: now.date_naive(),
                changed: now,
            };
            if catalogue.insert(new) {
                Ok(())
            } else {
                Err(format!("Item {item} already exists"))
            }
        }
        2 => {
            let found = catalogue.update(&item, |i| {
                if let Some(d) = description {
                    i.itds = d;
                }
                if let Some(u) = um {
                    i.unms = u;
                }
            });
            if found {
                Ok(())
            } else {
                Err(format!("Item {item} does not exist"))
            }
        }
        4 => Err("Deleting items is not allowed".into()),
        other => Err(format!(
            "Action {other} is not valid: use 1 (insert), 2 (update) or 4 (delete)"
        )),
    }
}

/// `POST .../ido/update/{ido}` with `{"Changes": [...]}`; all changes or none.
pub(crate) async fn update_collection(
    State(state): State<Arc<SimState>>,
    Path(ido): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<UpdateResponse> {
    let fail = |message: String| {
        Json(UpdateResponse {
            success: false,
            message: Some(message),
        })
    };
    let has_config = headers
        .get(CONFIG_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !has_config {
        return fail("The X-Infor-MongooseConfig header is required: it names the Mongoose configuration to use.".into());
    }
    if !ido.eq_ignore_ascii_case(IDO_NAME) {
        return fail(format!("IDO {} does not exist", clip(&ido, 40)));
    }
    let request: UpdateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "The update request is not valid: {}",
                clip(&e.to_string(), 200)
            ));
        }
    };
    if request.changes.is_empty() {
        return fail("The update request has no Changes".into());
    }
    let mut catalogue = super::write(&state.catalogue);
    if let [change] = request.changes.as_slice() {
        return match apply_change(&mut catalogue, change) {
            Ok(()) => Json(UpdateResponse {
                success: true,
                message: None,
            }),
            Err(message) => fail(message),
        };
    }
    // Mongoose saves a request's changes in one transaction.
    let mut trial = catalogue.clone();
    for change in &request.changes {
        if let Err(message) = apply_change(&mut trial, change) {
            return fail(message);
        }
    }
    *catalogue = trial;
    Json(UpdateResponse {
        success: true,
        message: None,
    })
}

#[cfg(test)]
mod tests;
