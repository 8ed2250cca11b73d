//! Sinks that send one request per record: M3 transactions, IDO updates,
//! ION messages, any gateway path and plain HTTP(S). A [`RequestPlan`] holds
//! what is fixed when the pipeline loads; rendering one record gives the
//! request to send, which `ionflow test` can show without sending it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Scope, field_text};
use crate::pipeline::config::{
    Envelope, GatewaySink, HttpMethod, HttpSink, IdoAction, IdoUpdateSink, IonMessageSink, M3Sink,
};
use crate::pipeline::interpolate::Variables;
use crate::pipeline::template::Templates;
use crate::products::{ido, m3};

/// A string that is either fixed or a template's name.
#[derive(Debug, Clone)]
pub enum Part {
    Fixed(String),
    Template(String),
}

impl Part {
    /// `${env.NAME}` and friends in a fixed part, for one run.
    pub fn expand(&self, vars: &Variables) -> Result<Part, String> {
        match self {
            Part::Fixed(s) => vars.expand(s).map(Part::Fixed),
            Part::Template(_) => Ok(self.clone()),
        }
    }
}

fn expand_pairs(pairs: &[(String, Part)], vars: &Variables) -> Result<Vec<(String, Part)>, String> {
    pairs
        .iter()
        .map(|(k, p)| {
            p.expand(vars)
                .map(|p| (k.clone(), p))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect()
}

#[derive(Debug, Clone)]
pub enum Body {
    None,
    /// The record itself as JSON.
    Record,
    Template(String),
    /// Mongoose `Changes` with one item built from properties.
    IdoChanges {
        ido: String,
        action: IdoAction,
        properties: Option<Vec<(String, Part)>>,
    },
    /// ION's message parameters with the document as payload.
    IonMessage {
        document_name: String,
        from_logical_id: String,
        to_logical_id: String,
        document: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct RequestPlan {
    pub method: HttpMethod,
    /// A gateway path below `{iu}/{ti}/`, or a full URL for plain HTTP.
    pub target: Part,
    pub query: Vec<(String, Part)>,
    /// When set, every top-level field of the record becomes a query parameter.
    pub query_from_record: bool,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub content_type: String,
    pub envelope: Envelope,
    /// Whether a call that timed out may be sent again.
    pub idempotent: bool,
    /// For error messages: `M3 MMS200MI/AddItmBasic`, `IDO SLItems`, ...
    pub label: String,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Records with the same rendered key never overlap in flight.
    pub order_key: Option<Part>,
}

/// One rendered request.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub method: HttpMethod,
    pub target: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Rendered {
    /// What `ionflow test` compares; headers are left out as they may hold secrets.
    pub fn to_json(&self, target_key: &str) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("method".into(), json!(method_name(self.method)));
        out.insert(target_key.into(), json!(self.target));
        if !self.query.is_empty() {
            out.insert(
                "query".into(),
                Value::Object(
                    self.query
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            );
        }
        if let Some(body) = &self.body {
            let value = serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
            out.insert("body".into(), value);
        }
        Value::Object(out)
    }
}

pub fn method_name(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
    }
}

/// Adds a template named `{prefix}.{key}` and returns its part.
fn template(
    templates: &mut Templates,
    errors: &mut Vec<(String, String)>,
    prefix: &str,
    key: &str,
    source: &str,
) -> Part {
    if !source.contains("{{") && !source.contains("{%") {
        return Part::Fixed(source.to_owned());
    }
    let name = format!("{prefix}.{key}");
    if let Err(e) = templates.add(&name, source) {
        errors.push((key.to_owned(), e));
    }
    Part::Template(name)
}

fn order_key(
    templates: &mut Templates,
    errors: &mut Vec<(String, String)>,
    prefix: &str,
    key: &Option<String>,
) -> Option<Part> {
    key.as_ref()
        .map(|k| template(templates, errors, prefix, "order_key", k))
}

fn template_map(
    templates: &mut Templates,
    errors: &mut Vec<(String, String)>,
    prefix: &str,
    key: &str,
    map: &BTreeMap<String, String>,
) -> Vec<(String, Part)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                template(templates, errors, prefix, &format!("{key}.{k}"), v),
            )
        })
        .collect()
}

/// Plans compile their templates into `templates`; problems come back as
/// `(key, message)` so that `validate` can place them in the file.
impl RequestPlan {
    pub fn m3(
        c: &M3Sink,
        prefix: &str,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        let mut query = c
            .fields
            .as_ref()
            .map(|f| template_map(templates, errors, prefix, "fields", f))
            .unwrap_or_default();
        if let Some(cono) = &c.cono {
            query.push((
                "cono".into(),
                template(templates, errors, prefix, "cono", cono),
            ));
        }
        RequestPlan {
            method: HttpMethod::Get,
            target: Part::Fixed(m3::execute_path(&c.program, &c.transaction)),
            query,
            query_from_record: c.fields.is_none(),
            headers: vec![],
            body: Body::None,
            content_type: String::new(),
            envelope: Envelope::M3,
            // M3 writes are not idempotent: an Add sent twice adds twice or fails.
            idempotent: false,
            label: format!("M3 {}/{}", c.program, c.transaction),
            concurrency: c.concurrency,
            order_key: order_key(templates, errors, prefix, &c.order_key),
        }
    }

    pub fn ido_update(
        c: &IdoUpdateSink,
        prefix: &str,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        RequestPlan {
            method: HttpMethod::Post,
            target: Part::Fixed(ido::update_path(&c.ido)),
            query: vec![],
            query_from_record: false,
            headers: vec![(ido::CONFIG_HEADER.into(), c.mongoose_config.clone())],
            body: Body::IdoChanges {
                ido: c.ido.clone(),
                action: c.action,
                properties: c
                    .properties
                    .as_ref()
                    .map(|p| template_map(templates, errors, prefix, "properties", p)),
            },
            content_type: "application/json".into(),
            envelope: Envelope::Ido,
            idempotent: c.action != IdoAction::Insert,
            label: format!("IDO {}", c.ido),
            concurrency: c.concurrency,
            order_key: order_key(templates, errors, prefix, &c.order_key),
        }
    }

    pub fn ion_message(
        c: &IonMessageSink,
        prefix: &str,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        let document = c.document.as_ref().map(|d| {
            let name = format!("{prefix}.document");
            if let Err(e) = templates.add(&name, d) {
                errors.push(("document".into(), e));
            }
            name
        });
        RequestPlan {
            method: HttpMethod::Post,
            target: Part::Fixed(ION_MESSAGE_PATH.into()),
            query: vec![],
            query_from_record: false,
            headers: vec![],
            body: Body::IonMessage {
                document_name: c.document_name.clone(),
                from_logical_id: c.from_logical_id.clone(),
                to_logical_id: c.to_logical_id.clone(),
                document,
            },
            content_type: "application/json".into(),
            envelope: Envelope::Status,
            idempotent: false,
            label: format!("ION message {}", c.document_name),
            concurrency: c.concurrency,
            order_key: order_key(templates, errors, prefix, &c.order_key),
        }
    }

    pub fn gateway(
        c: &GatewaySink,
        prefix: &str,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        RequestPlan {
            method: c.method,
            target: template(templates, errors, prefix, "path", &c.path),
            query: template_map(templates, errors, prefix, "query", &c.query),
            query_from_record: false,
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: body_plan(c.body.as_deref(), c.method, prefix, templates, errors),
            content_type: c.content_type.clone(),
            envelope: c.envelope,
            idempotent: c.idempotent,
            label: c.path.clone(),
            concurrency: c.concurrency,
            order_key: order_key(templates, errors, prefix, &c.order_key),
        }
    }

    pub fn http(
        c: &HttpSink,
        prefix: &str,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        RequestPlan {
            method: c.method,
            target: template(templates, errors, prefix, "url", &c.url),
            query: vec![],
            query_from_record: false,
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: body_plan(c.body.as_deref(), c.method, prefix, templates, errors),
            content_type: c.content_type.clone(),
            envelope: Envelope::Status,
            idempotent: matches!(
                c.method,
                HttpMethod::Put | HttpMethod::Delete | HttpMethod::Get
            ),
            label: c.url.clone(),
            concurrency: c.concurrency,
            order_key: order_key(templates, errors, prefix, &c.order_key),
        }
    }

    /// The plan with `${...}` expanded in its fixed parts, for one run.
    pub fn expand(&self, vars: &Variables) -> Result<RequestPlan, String> {
        let mut plan = self.clone();
        plan.target = self.target.expand(vars)?;
        plan.order_key = self
            .order_key
            .as_ref()
            .map(|k| k.expand(vars))
            .transpose()?;
        plan.query = expand_pairs(&self.query, vars)?;
        plan.headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                vars.expand(v)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| format!("headers.{k}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        plan.body = match &self.body {
            Body::IdoChanges {
                ido,
                action,
                properties,
            } => Body::IdoChanges {
                ido: ido.clone(),
                action: *action,
                properties: properties
                    .as_ref()
                    .map(|p| expand_pairs(p, vars))
                    .transpose()?,
            },
            Body::IonMessage {
                document_name,
                from_logical_id,
                to_logical_id,
                document,
            } => Body::IonMessage {
                document_name: vars.expand(document_name)?,
                from_logical_id: vars.expand(from_logical_id)?,
                to_logical_id: vars.expand(to_logical_id)?,
                document: document.clone(),
            },
            other => other.clone(),
        };
        Ok(plan)
    }

    /// Renders the request for one record; `Err` fails that record.
    pub fn render(&self, record: &Value, scope: &Scope) -> Result<Rendered, String> {
        let part = |p: &Part| match p {
            Part::Fixed(s) => Ok(s.clone()),
            Part::Template(name) => scope.render(name, record),
        };
        let mut query = Vec::new();
        if self.query_from_record {
            let object = record.as_object().ok_or(
                "the record is not a JSON object, so its fields cannot be the input fields; \
                 reshape it with jq or list the fields",
            )?;
            for (k, v) in object {
                query.push((k.clone(), field_text(v)));
            }
        }
        for (k, p) in &self.query {
            query.push((k.clone(), part(p)?));
        }
        let body = match &self.body {
            Body::None => None,
            Body::Record => Some(serde_json::to_vec(record).map_err(|e| e.to_string())?),
            Body::Template(name) => Some(scope.render(name, record)?.into_bytes()),
            Body::IdoChanges {
                ido,
                action,
                properties,
            } => {
                let props: Vec<(String, String)> = match properties {
                    Some(list) => list
                        .iter()
                        .map(|(k, p)| part(p).map(|v| (k.clone(), v)))
                        .collect::<Result<_, _>>()?,
                    None => record
                        .as_object()
                        .ok_or("the record is not a JSON object; list the properties")?
                        .iter()
                        .filter(|(k, _)| *k != "_ItemId")
                        .map(|(k, v)| (k.clone(), field_text(v)))
                        .collect(),
                };
                Some(
                    serde_json::to_vec(&ido_changes(ido, *action, record, &props))
                        .map_err(|e| e.to_string())?,
                )
            }
            Body::IonMessage {
                document_name,
                from_logical_id,
                to_logical_id,
                document,
            } => {
                let payload = match document {
                    Some(name) => scope.render(name, record)?,
                    None => serde_json::to_string(record).map_err(|e| e.to_string())?,
                };
                Some(
                    serde_json::to_vec(&json!({
                        "documentName": document_name,
                        "fromLogicalId": from_logical_id,
                        "toLogicalId": to_logical_id,
                        "encoding": "NONE",
                        "characterSet": "UTF-8",
                        "messagePayload": payload,
                    }))
                    .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(Rendered {
            method: self.method,
            target: part(&self.target)?,
            query,
            body,
        })
    }

    /// The request for one record and its order key; `Err` fails the record.
    pub fn render_keyed(
        &self,
        record: &Value,
        scope: &Scope,
    ) -> Result<(Rendered, Option<String>), String> {
        Ok((self.render(record, scope)?, self.order_key(record, scope)?))
    }

    /// The record's order key, when the sink has one.
    fn order_key(&self, record: &Value, scope: &Scope) -> Result<Option<String>, String> {
        match &self.order_key {
            None => Ok(None),
            Some(Part::Fixed(key)) => Ok(Some(key.clone())),
            Some(Part::Template(name)) => scope
                .render(name, record)
                .map(Some)
                .map_err(|e| format!("order_key: {e}")),
        }
    }

    /// Reads the answer's product envelope; `Err` fails the record.
    pub fn check_answer(&self, status: u16, body: &[u8]) -> Result<(), String> {
        match self.envelope {
            Envelope::M3 => {
                let transaction = self.label.rsplit('/').next().unwrap_or(&self.label);
                m3::records(status, body, transaction)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Envelope::Ido => {
                ido::update_result(status, body, self.label.trim_start_matches("IDO "))
                    .map_err(|e| e.to_string())
            }
            Envelope::Status if (200..300).contains(&status) => Ok(()),
            Envelope::Status => Err(format!(
                "{} answered HTTP {status}: {}",
                self.label,
                crate::pipeline::http::excerpt(body)
            )),
        }
    }
}

pub const ION_MESSAGE_PATH: &str = "IONSERVICES/api/ion/messaging/service/v2/message";

fn body_plan(
    body: Option<&str>,
    method: HttpMethod,
    prefix: &str,
    templates: &mut Templates,
    errors: &mut Vec<(String, String)>,
) -> Body {
    match body {
        Some(source) => {
            let name = format!("{prefix}.body");
            if let Err(e) = templates.add(&name, source) {
                errors.push(("body".into(), e));
            }
            Body::Template(name)
        }
        None if matches!(method, HttpMethod::Get | HttpMethod::Delete) => Body::None,
        None => Body::Record,
    }
}

/// Mongoose actions: 1 insert, 2 update, 4 delete.
fn ido_changes(ido: &str, action: IdoAction, record: &Value, props: &[(String, String)]) -> Value {
    let code = match action {
        IdoAction::Insert => 1,
        IdoAction::Update => 2,
        IdoAction::Delete => 4,
    };
    let item_id = record.get("_ItemId").and_then(Value::as_str).unwrap_or("");
    json!({
        "IDOName": ido,
        "RefreshAfterSave": false,
        "Changes": [{
            "Action": code,
            "ItemId": item_id,
            "Properties": props
                .iter()
                .map(|(name, value)| json!({"Name": name, "Value": value, "Modified": true, "IsNull": false}))
                .collect::<Vec<_>>(),
        }],
    })
}
