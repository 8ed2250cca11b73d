//! M3 MI REST: key paging, single transactions and bulk requests.
//! Public shape checked: the one `m3.rs` follows.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::{Harness, bearer};
use crate::codec::form_encode;

#[tokio::test]
async fn m3_list_paging_by_key_covers_every_item_once() {
    let items = 1234;
    let h = Harness::with_items(items).await;
    let token = h.password_token().await;
    let base = "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm";

    let mut seen: Vec<String> = Vec::new();
    let mut next_key = String::new();
    loop {
        let page = h
            .get_json(
                &format!(
                    "{base}?ITNO={}&maxrecs=100&returncols=ITNO,ITDS",
                    form_encode(&next_key)
                ),
                bearer(&token),
            )
            .await;
        assert_eq!(page["nrOfSuccessfullTransactions"], 1);
        assert_eq!(page["nrOfFailedTransactions"], 0);
        assert_eq!(page["wasTerminated"], false);
        let result = &page["results"][0];
        assert_eq!(result["transaction"], "LstItmByItm");
        let records = result["records"].as_array().unwrap();
        assert!(records.iter().all(|r| r.as_object().unwrap().len() == 2));
        // Every page after the first starts with the last record already seen.
        let skip = usize::from(!seen.is_empty());
        if !seen.is_empty() {
            assert_eq!(records[0]["ITNO"], seen.last().unwrap().as_str());
        }
        let fresh: Vec<String> = records
            .iter()
            .skip(skip)
            .map(|r| r["ITNO"].as_str().unwrap().to_owned())
            .collect();
        if fresh.is_empty() {
            break;
        }
        next_key = fresh.last().unwrap().clone();
        seen.extend(fresh);
    }
    assert_eq!(seen.len(), items);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), items);
    assert_eq!(seen.first().unwrap(), "ITM000001");
    assert_eq!(seen.last().unwrap(), "ITM001234");

    let everything = h
        .get_json(&format!("{base}?maxrecs=0"), bearer(&token))
        .await;
    assert_eq!(
        everything["results"][0]["records"]
            .as_array()
            .unwrap()
            .len(),
        items
    );
    let default_page = h.get_json(base, bearer(&token)).await;
    assert_eq!(
        default_page["results"][0]["records"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn m3_single_transactions_and_bulk() {
    let h = Harness::with_items(20).await;
    let token = h.password_token().await;
    let exec = "M3/m3api-rest/v2/execute/MMS200MI";

    let item = h
        .get_json(
            &format!("{exec}/GetItmBasic?ITNO=ITM000007"),
            bearer(&token),
        )
        .await;
    let record = &item["results"][0]["records"][0];
    assert_eq!(record["ITNO"], "ITM000007");
    assert!(record.as_object().unwrap().values().all(Value::is_string));

    let missing = h
        .get(&format!("{exec}/GetItmBasic?ITNO=NOPE"), bearer(&token))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(missing["nrOfFailedTransactions"], 1);
    assert_eq!(missing["results"][0]["errorField"], "ITNO");
    assert!(
        missing["results"][0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("NOPE")
    );
    assert!(missing["results"][0]["errorCode"].is_string());

    let add = format!(
        "{exec}/AddItmBasic?ITNO=NEW-001&ITDS={}&UNMS=KG&GRWE=2.5",
        form_encode("New & improved")
    );
    let added = h.get_json(&add, bearer(&token)).await;
    assert_eq!(added["nrOfSuccessfullTransactions"], 1);
    let again = h.get_json(&add, bearer(&token)).await;
    assert_eq!(again["nrOfFailedTransactions"], 1);
    assert_eq!(
        again["results"][0]["errorMessage"],
        "Item number NEW-001 already exists"
    );
    let fetched = h
        .get_json(&format!("{exec}/GetItmBasic?ITNO=NEW-001"), bearer(&token))
        .await;
    assert_eq!(
        fetched["results"][0]["records"][0]["ITDS"],
        "New & improved"
    );
    assert_eq!(fetched["results"][0]["records"][0]["GRWE"], "2.5");

    for bad in [
        "M3/m3api-rest/v2/execute/MMS999MI/GetItmBasic?ITNO=X",
        "M3/m3api-rest/v2/execute/MMS200MI/Nope",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?maxrecs=lots",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?returncols=BOGUS",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?ITNO=%zz",
    ] {
        let response = h.get(bad, bearer(&token)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["nrOfFailedTransactions"], 1, "{bad}");
        assert!(body["results"][0]["errorMessage"].is_string(), "{bad}");
    }

    let bulk = json!({
        "program": "MMS200MI",
        "cono": 100,
        "transactions": [
            { "transaction": "AddItmBasic", "record": { "ITNO": "BULK-1", "ITDS": "Bulk one" } },
            { "transaction": "AddItmBasic", "record": { "ITNO": "NEW-001", "ITDS": "Duplicate" } },
            { "transaction": "GetItmBasic", "record": { "ITNO": "BULK-1" }, "selectedColumns": ["ITNO", "ITDS"] },
            { "transaction": "AddItmBasic", "record": { "ITNO": "BULK-2", "ITDS": 5 } },
        ]
    });
    let response = h
        .http
        .post(h.api_url("M3/m3api-rest/v2/execute"))
        .bearer_auth(bearer(&token))
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["nrOfSuccessfullTransactions"], 2);
    assert_eq!(body["nrOfFailedTransactions"], 2);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[0].get("errorMessage").is_none());
    assert_eq!(results[1]["errorField"], "ITNO");
    assert_eq!(
        results[2]["records"][0],
        json!({ "ITNO": "BULK-1", "ITDS": "Bulk one" })
    );
    assert_eq!(results[3]["errorField"], "ITDS");

    let malformed = h
        .http
        .post(h.api_url("M3/m3api-rest/v2/execute"))
        .bearer_auth(bearer(&token))
        .header(CONTENT_TYPE, "application/json")
        .body("{\"program\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["wasTerminated"],
        true
    );
    h.sim.shutdown().await;
}
