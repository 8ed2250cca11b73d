//! ION Messaging, the Data Lake that lists what arrived, and the control
//! API that shows it. Public shapes checked: ION Messaging v2 `message`
//! (`document: {value, encoding, characterSet}`) and `multipartMessage`
//! (`ParameterRequest` + `MessagePayload`), as `ion.rs` follows them; the
//! Data Lake API v1 `payloads/list` (`fields` array of descriptors, `page`,
//! `records`) and `payloads/streambyid`, as `datalake.rs` follows them.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::{Harness, bearer};
use crate::Counters;

const MESSAGE: &str = "IONSERVICES/api/ion/messaging/service/v2/message";
const MULTIPART: &str = "IONSERVICES/api/ion/messaging/service/v2/multipartMessage";
const LIST: &str = "IONSERVICES/datalakeapi/v1/payloads/list";
const STREAM: &str = "IONSERVICES/datalakeapi/v1/payloads/streambyid";

fn message(name: &str, value: &str, encoding: &str) -> Value {
    json!({
        "documentName": name,
        "fromLogicalId": "lid://infor.ims.test",
        "toLogicalId": "lid://default",
        "document": {"value": value, "encoding": encoding, "characterSet": "UTF-8"},
    })
}

#[tokio::test]
async fn json_messages_carry_their_document_and_the_old_shape_is_refused() {
    let h = Harness::with_items(1).await;
    let token = h.password_token().await;
    let post = |body: Value| {
        h.http
            .post(h.api_url(MESSAGE))
            .bearer_auth(bearer(&token))
            .json(&body)
            .send()
    };
    let response = post(message(
        "Sync.ItemMaster",
        r#"{"ITNO":"ITM000001"}"#,
        "NONE",
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.json::<Value>().await.unwrap()["messageId"].is_string());
    // <SyncItemMaster/> in base64.
    let mut with_id = message("SyncItemMaster", "PFN5bmNJdGVtTWFzdGVyLz4=", "BASE64");
    with_id["messageId"] = json!("client-42");
    let response = post(with_id).await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["messageId"],
        "client-42"
    );

    // What ionflow sent before: the document in `messagePayload`.
    let old = json!({"documentName": "X", "fromLogicalId": "lid://a", "toLogicalId": "lid://default",
        "encoding": "NONE", "characterSet": "UTF-8", "messagePayload": "{}"});
    let refused = post(old).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["status"], 400);
    assert_eq!(error["error"], "Bad Request");
    assert_eq!(error["message"], "document is required");
    assert!(error["path"].as_str().unwrap().ends_with("v2/message"));
    let not_json = h
        .http
        .post(h.api_url(MESSAGE))
        .bearer_auth(bearer(&token))
        .body("<SyncItemMaster/>")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);

    let messages = h.control("messages").await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 2, "refused messages are not kept");
    assert_eq!(messages[0]["document_name"], "Sync.ItemMaster");
    assert_eq!(messages[0]["body"]["ITNO"], "ITM000001");
    assert_eq!(
        messages[1]["body"], "<SyncItemMaster/>",
        "BASE64 is decoded"
    );
    assert_eq!(h.sim.counters().messages_received, 2);

    let counters = h.control("counters").await;
    assert_eq!(counters["messages_received"], 2);
    let status = h
        .http
        .post(h.control_url("reset-counters"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.sim.counters(), Counters::default());
    h.sim.shutdown().await;
}

#[tokio::test]
async fn multipart_messages_need_both_parts() {
    let h = Harness::with_items(1).await;
    let token = h.password_token().await;
    let body = |parameters: &str, payload: &str| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"ParameterRequest\"\r\n\
             Content-Type: application/json\r\n\r\n{parameters}\r\n--XyZ\r\n\
             Content-Disposition: form-data; name=\"MessagePayload\"; filename=\"doc.xml\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n{payload}\r\n--XyZ--\r\n"
        )
    };
    let send = |text: String| {
        h.http
            .post(h.api_url(MULTIPART))
            .bearer_auth(bearer(&token))
            .header(CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body(text)
            .send()
    };
    let parameters = r#"{"documentName":"Process.PurchaseOrder","fromLogicalId":"lid://infor.ims.test","encoding":"NONE","characterSet":"UTF-8"}"#;
    let ok = send(body(parameters, "<PO>\r\n--X\r\n</PO>"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let missing = send(
        "--XyZ\r\nContent-Disposition: form-data; name=\"ParameterRequest\"\r\n\r\n{}\r\n--XyZ--\r\n"
            .into(),
    )
    .await
    .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let bad_lid = body(
        r#"{"documentName":"D","fromLogicalId":"infor.ims","encoding":"NONE"}"#,
        "x",
    );
    assert_eq!(
        send(bad_lid).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let messages = h.control("messages").await;
    assert_eq!(messages.as_array().unwrap().len(), 1);
    assert_eq!(messages[0]["endpoint"], "multipartMessage");
    assert_eq!(
        messages[0]["to_logical_id"], "lid://default",
        "toLogicalId defaults"
    );
    assert_eq!(messages[0]["body"], "<PO>\r\n--X\r\n</PO>");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn the_data_lake_lists_fields_by_page_and_streams_each_object() {
    let h = Harness::with_items(1).await;
    let token = h.password_token().await;
    for i in 0..5 {
        let response = h
            .http
            .post(h.api_url(MESSAGE))
            .bearer_auth(bearer(&token))
            .json(&message("ItemExport", &format!(r#"{{"n":{i}}}"#), "NONE"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let other = h
        .http
        .post(h.control_url("datalake"))
        .json(&json!({"document_name": "Binary", "content_base64": "AAEC/w=="}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let token = bearer(&token);
    let page = h
        .get_json(
            &format!("{LIST}?filter=dl_document_name%20eq%20%27ItemExport%27&page=2&records=2"),
            token,
        )
        .await;
    assert_eq!(page["page"], 2);
    assert_eq!(page["records"], 2, "records is the page size");
    assert_eq!(page["totalRecords"], 5);
    let fields = page["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 2);
    for key in [
        "dl_id",
        "dl_document_name",
        "dl_from_logical_id",
        "event_date",
        "dl_document_date",
        "dl_document_indexed_date",
        "dl_instance_count",
        "dl_size",
    ] {
        assert!(!fields[0][key].is_null(), "{key}: {}", fields[0]);
    }
    let last = h.get_json(&format!("{LIST}?page=4&records=2"), token).await;
    assert_eq!(last["fields"], json!([]), "an empty page past the end");
    let newest = h
        .get_json(&format!("{LIST}?sort=dl_id:desc&records=1"), token)
        .await;
    assert_eq!(newest["fields"][0]["dl_id"], other["dl_id"]);

    let id = fields[0]["dl_id"].as_str().unwrap();
    let bytes = h.get(&format!("{STREAM}?datalakeId={id}"), token).await;
    assert_eq!(bytes.status(), StatusCode::OK);
    assert_eq!(bytes.headers()[CONTENT_TYPE], "application/octet-stream");
    assert_eq!(bytes.text().await.unwrap(), r#"{"n":2}"#);
    let binary = h
        .get(
            &format!("{STREAM}?datalakeId={}", other["dl_id"].as_str().unwrap()),
            token,
        )
        .await;
    assert_eq!(binary.bytes().await.unwrap().as_ref(), &[0, 1, 2, 255]);
    let gone = h.get(&format!("{STREAM}?datalakeId=1-nope"), token).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let unsupported = h
        .get(
            &format!("{LIST}?filter=dl_document_name%20like%20%27x%27"),
            token,
        )
        .await;
    assert_eq!(unsupported.status(), StatusCode::BAD_REQUEST);
    h.sim.shutdown().await;
}
