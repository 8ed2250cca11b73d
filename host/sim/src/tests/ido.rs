//! Mongoose IDO REST: bookmark paging and filters.
//! Public shape checked: the one `ido.rs` follows.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use super::{Harness, bearer};
use crate::codec::form_encode;

#[tokio::test]
async fn ido_bookmark_paging_and_incremental_filter() {
    let items = 750;
    let h = Harness::with_items(items).await;
    let token = h.password_token().await;
    let base = "CSI/IDORequestService/ido/load/SLItems";
    let load = |query: String, with_config: bool| {
        let mut request = h
            .http
            .get(h.api_url(&format!("{base}?{query}")))
            .bearer_auth(bearer(&token));
        if with_config {
            request = request.header("X-Infor-MongooseConfig", "ACME_TST_DALS");
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };

    let no_config = load("properties=Item".into(), false).await;
    assert_eq!(no_config["Success"], false);
    assert!(
        no_config["Message"]
            .as_str()
            .unwrap()
            .contains("X-Infor-MongooseConfig")
    );

    let mut seen = Vec::new();
    let mut bookmark = String::new();
    let mut pages = 0;
    loop {
        let page = load(
            format!(
                "properties=Item,Description,UM,ProductCode,RecordDate&recordCap=200&loadType=NEXT&bookmark={}",
                form_encode(&bookmark)
            ),
            true,
        )
        .await;
        pages += 1;
        assert_eq!(page["Success"], true);
        assert!(page["Message"].is_null());
        for item in page["Items"].as_array().unwrap() {
            assert!(item["RecordDate"].as_str().unwrap().starts_with("2026-"));
            seen.push(item["Item"].as_str().unwrap().to_owned());
        }
        if page["MoreRowsExist"] == false {
            break;
        }
        bookmark = page["Bookmark"].as_str().unwrap().to_owned();
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), items);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), items);

    let all = load("properties=Item,RecordDate&recordCap=0".into(), true).await;
    let all_items = all["Items"].as_array().unwrap();
    assert_eq!(all_items.len(), items);
    assert_eq!(all["MoreRowsExist"], false);
    let default_cap = load("properties=Item&recordCap=-1".into(), true).await;
    assert_eq!(default_cap["Items"].as_array().unwrap().len(), 200);

    let cutoff = "2026-07-01 00:00:00";
    let expected = all_items
        .iter()
        .filter(|i| i["RecordDate"].as_str().unwrap() > "2026-07-01T00:00:00.000")
        .count();
    let filtered = load(
        format!(
            "properties=Item,RecordDate&recordCap=0&filter={}",
            form_encode(&format!("RecordDate > '{cutoff}'"))
        ),
        true,
    )
    .await;
    assert_eq!(filtered["Success"], true);
    assert_eq!(filtered["Items"].as_array().unwrap().len(), expected);
    assert!(expected > 0 && expected < items);

    for query in [
        "properties=Item&loadType=NEXT&bookmark=garbage",
        "properties=Nope",
        "properties=Item&recordCap=lots",
        "properties=Item&filter=RecordDate%20%3E%20%27whenever%27",
    ] {
        let page = load(query.into(), true).await;
        assert_eq!(page["Success"], false, "{query}");
        assert!(page["Message"].is_string(), "{query}");
    }
    h.sim.shutdown().await;
}
