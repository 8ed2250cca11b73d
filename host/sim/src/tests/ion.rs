//! ION Messaging and the control API that shows what arrived.
//! Public shape checked: the one `ion.rs` follows.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Harness, bearer};
use crate::Counters;

#[tokio::test]
async fn ion_messages_are_kept_for_inspection() {
    let h = Harness::with_items(1).await;
    let token = h.password_token().await;
    let path = "IONSERVICES/api/ion/messaging/service/v2/message";
    let response = h
        .http
        .post(h.api_url(path))
        .bearer_auth(bearer(&token))
        .json(&json!({ "documentName": "Sync.ItemMaster", "payload": { "ITNO": "ITM000001" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.json::<Value>().await.unwrap()["messageId"].is_string());
    let response = h
        .http
        .post(h.api_url(path))
        .bearer_auth(bearer(&token))
        .body("<SyncItemMaster/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let messages = h.control("messages").await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["body"]["documentName"], "Sync.ItemMaster");
    assert_eq!(messages[1]["body"], "<SyncItemMaster/>");
    assert_eq!(h.sim.counters().messages_received, 2);

    let counters = h.control("counters").await;
    assert_eq!(counters["messages_received"], 2);
    assert_eq!(counters["api_calls"], 2);
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
