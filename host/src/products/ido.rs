//! Mongoose IDO REST (`CSI/IDORequestService/ido/...`): answers are HTTP 200
//! even when the request failed, with `"Success": false` and a `Message`.

use serde_json::Value;

/// The mandatory header naming the Mongoose configuration.
pub const CONFIG_HEADER: &str = "X-Infor-MongooseConfig";

pub fn load_path(ido: &str) -> String {
    format!("CSI/IDORequestService/ido/load/{ido}")
}

pub fn update_path(ido: &str) -> String {
    format!("CSI/IDORequestService/ido/update/{ido}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IDO {ido}: {message}")]
pub struct IdoError {
    pub ido: String,
    pub message: String,
}

/// One page of a `load` answer.
#[derive(Debug)]
pub struct LoadPage {
    pub items: Vec<Value>,
    pub bookmark: Option<String>,
    pub more_rows_exist: bool,
}

fn envelope(status: u16, body: &[u8], ido: &str) -> Result<Value, IdoError> {
    let fail = |message: String| IdoError {
        ido: ido.to_owned(),
        message,
    };
    let envelope: Value = serde_json::from_slice(body).map_err(|e| {
        fail(format!(
            "HTTP {status} with a body that is not JSON ({e}); is the path an IDO REST endpoint?"
        ))
    })?;
    let success = envelope.get("Success").and_then(Value::as_bool);
    if success != Some(true) || !(200..300).contains(&status) {
        let message = envelope
            .get("Message")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status} without Success: true"));
        return Err(fail(message));
    }
    Ok(envelope)
}

pub fn load_page(status: u16, body: &[u8], ido: &str) -> Result<LoadPage, IdoError> {
    let mut envelope = envelope(status, body, ido)?;
    let items = match envelope.get_mut("Items").map(Value::take) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(IdoError {
                ido: ido.to_owned(),
                message: "`Items` is not an array".into(),
            });
        }
    };
    Ok(LoadPage {
        items,
        bookmark: envelope
            .get("Bookmark")
            .and_then(Value::as_str)
            .map(str::to_owned),
        more_rows_exist: envelope
            .get("MoreRowsExist")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// What an `update` does with its item; Mongoose's action codes are 1
/// insert, 2 update, 4 delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "IdoAction")]
pub enum Action {
    Insert,
    #[default]
    Update,
    Delete,
}

impl Action {
    pub fn code(self) -> u8 {
        match self {
            Action::Insert => 1,
            Action::Update => 2,
            Action::Delete => 4,
        }
    }
}

/// The body of `ido/update/{ido}`: one change of one item, its properties
/// given as text. `item_id` is the `_ItemId` a load returned (empty for an insert).
pub fn update_body(
    ido: &str,
    action: Action,
    item_id: &str,
    properties: &[(String, String)],
) -> Value {
    serde_json::json!({
        "IDOName": ido,
        "RefreshAfterSave": false,
        "Changes": [{
            "Action": action.code(),
            "ItemId": item_id,
            "Properties": properties
                .iter()
                .map(|(name, value)| serde_json::json!({"Name": name, "Value": value, "Modified": true, "IsNull": false}))
                .collect::<Vec<_>>(),
        }],
    })
}

/// Checks an `update` answer.
pub fn update_result(status: u16, body: &[u8], ido: &str) -> Result<(), IdoError> {
    envelope(status, body, ido).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_false_in_a_200_is_an_error() {
        let e = load_page(
            200,
            br#"{"Success":false,"Message":"Property Nope does not exist"}"#,
            "SLItems",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "IDO SLItems: Property Nope does not exist");
        let page = load_page(
            200,
            br#"{"Success":true,"Items":[{"Item":"A"}],"Bookmark":"<B/>","MoreRowsExist":true}"#,
            "SLItems",
        )
        .unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(page.more_rows_exist);
        assert!(update_result(200, br#"{"Success":true,"Message":null}"#, "SLItems").is_ok());
    }
}
