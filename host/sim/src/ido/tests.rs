//! Unit tests of the IDO layer: request parsing, filters, bookmarks, values.
//! Public shape checked: the one the parent module's top comment names.

use super::*;
use crate::codec::form_encode;

fn request(query: &str) -> Result<LoadRequest, String> {
    parse_request(&Params::parse_case_insensitive(query.as_bytes()).unwrap())
}

fn keys(response: &IdoResponse) -> Vec<String> {
    response
        .items
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.get("Item").unwrap().to_owned())
        .collect()
}

#[test]
fn record_cap_rules() {
    assert_eq!(request("properties=Item").unwrap().cap, Some(200));
    assert_eq!(
        request("properties=Item&recordCap=-1").unwrap().cap,
        Some(200)
    );
    assert_eq!(request("properties=Item&recordcap=0").unwrap().cap, None);
    assert_eq!(request("properties=Item&RECORDCAP=7").unwrap().cap, Some(7));
    for bad in ["-2", "x", "1.5", "99999999999999999999"] {
        assert!(request(&format!("properties=Item&recordCap={bad}")).is_err());
    }
}

#[test]
fn bookmark_paging_visits_every_item_once() {
    let cat = Catalogue::generate(1001);
    let mut seen = Vec::new();
    let mut bookmark = String::new();
    loop {
        let query = format!(
            "properties=Item&recordCap=100&loadType=NEXT&bookmark={}",
            form_encode(&bookmark)
        );
        let response = load(&cat, &request(&query).unwrap());
        seen.extend(keys(&response));
        if !response.more_rows_exist {
            break;
        }
        bookmark = response.bookmark.unwrap();
    }
    let expected: Vec<String> = cat.iter().map(|i| i.itno.clone()).collect();
    assert_eq!(seen, expected);
}

#[test]
fn exact_multiple_of_the_cap_ends_cleanly() {
    let cat = Catalogue::generate(200);
    let first = load(&cat, &request("properties=Item&recordCap=100").unwrap());
    assert!(first.more_rows_exist);
    let next = request(&format!(
        "properties=Item&recordCap=100&loadType=NEXT&bookmark={}",
        form_encode(first.bookmark.as_deref().unwrap())
    ))
    .unwrap();
    let second = load(&cat, &next);
    assert_eq!(keys(&second).len(), 100);
    assert!(!second.more_rows_exist);
}

#[test]
fn bookmarks_round_trip_and_reject_garbage() {
    for key in ["ITM000001", "A&B<C>", "", "x&amp;y"] {
        assert_eq!(decode_bookmark(&encode_bookmark(key)).as_deref(), Some(key));
    }
    for bad in [
        "garbage",
        "<B><P><p>x</p></P>",
        "<B><P><p>a<b</p></P></B>",
        "<B><P><p>&quot;</p></P></B>",
    ] {
        assert_eq!(decode_bookmark(bad), None, "{bad}");
    }
    assert!(request("properties=Item&loadType=NEXT&bookmark=garbage").is_err());
    // FIRST ignores whatever bookmark is sent.
    assert!(request("properties=Item&loadType=FIRST&bookmark=garbage").is_ok());
}

#[test]
fn filters() {
    let cat = Catalogue::generate(500);
    let cutoff = "2026-06-01";
    let cutoff_at = parse_timestamp(cutoff).unwrap();
    let query = format!(
        "properties=Item,RecordDate&recordCap=0&filter={}",
        form_encode(&format!("RecordDate > '{cutoff}'"))
    );
    let response = load(&cat, &request(&query).unwrap());
    let expected: Vec<String> = cat
        .iter()
        .filter(|i| i.changed.naive_utc() > cutoff_at)
        .map(|i| i.itno.clone())
        .collect();
    assert!(!expected.is_empty() && expected.len() < 500);
    assert_eq!(keys(&response), expected);
    assert!(!response.more_rows_exist);

    let conditions = parse_filter("item >= 'itm000010' and Item<'ITM000013'").unwrap();
    let hits: Vec<_> = cat
        .iter()
        .filter(|i| conditions.iter().all(|c| c.matches(i)))
        .map(|i| i.itno.as_str())
        .collect();
    assert_eq!(hits, ["ITM000010", "ITM000011", "ITM000012"]);
    assert_eq!(
        parse_filter("Description = 'it''s'").unwrap()[0].literal,
        Literal::Text("it's".into())
    );
    assert!(parse_filter("UnitWeight > 1.5").is_ok());
    assert!(parse_filter("   ").unwrap().is_empty());
    for bad in [
        "RecordDate > 'yesterday'",
        "Nope = 'x'",
        "Item = 'x' OR Item = 'y'",
        "Item = 'x' AND",
        "Item 'x'",
        "Item = 'unterminated",
        "Item = 'x'; DROP TABLE items",
        "Item ! 'x'",
        "(Item = 'x')",
    ] {
        assert!(parse_filter(bad).is_err(), "{bad}");
    }
}

#[test]
fn properties_are_checked_and_canonicalised() {
    let req = request("properties=item,%20description,*").unwrap();
    assert_eq!(req.properties[0].0, "Item");
    assert_eq!(req.properties[1].0, "Description");
    assert_eq!(req.properties.len(), PROPERTIES.len());
    assert!(request("properties=Item,Bogus").is_err());
    assert!(request("recordCap=5").is_err());
    assert!(request("properties=,").is_err());
    assert!(request("properties=Item&loadType=PREV").is_err());
    assert!(request("properties=Item&orderBy=Description").is_err());
    assert!(request("properties=Item&orderBy=item%20asc").is_ok());
}

#[test]
fn values_look_like_mongoose() {
    let cat = Catalogue::generate(3);
    let item = cat.get("ITM000001").unwrap();
    let weight = Property::UnitWeight.text(item);
    assert_eq!(weight.split_once('.').unwrap().1.len(), 8);
    assert!(Property::RecordDate.text(item).starts_with("2026-"));
    assert_eq!(Property::Item.text(item), "ITM000001");
}

#[test]
fn timestamps_format_and_parse() {
    let day = NaiveDate::from_ymd_opt(2026, 3, 14).unwrap();
    let at = day.and_hms_milli_opt(9, 26, 53, 7).unwrap();
    assert_eq!(format_timestamp(at), "2026-03-14T09:26:53.007");
    assert_eq!(parse_timestamp("2026-03-14T09:26:53.007"), Some(at));
    assert_eq!(parse_timestamp("20260314 09:26:53.007"), Some(at));
    assert_eq!(parse_timestamp("2026-03-14 09:26:53.0071Z"), Some(at));
    assert_eq!(
        parse_timestamp("2026-03-14"),
        Some(day.and_time(NaiveTime::MIN))
    );
    assert_eq!(
        parse_timestamp("2026-03-14 09:26").map(|v| v.and_utc().timestamp_subsec_millis()),
        Some(0)
    );
    assert_eq!(
        parse_timestamp(" 2026-03-14T09:26:53.5 "),
        day.and_hms_milli_opt(9, 26, 53, 500)
    );
    for bad in [
        "",
        "2026",
        "2026-02-30",
        "2026-13-01",
        "2026-03-14T25:00",
        "2026-03-14T09",
        "2026-03-14T09:26:53.",
        "2026-0314",
        "2026-03-14 junk",
        "２０２６-03-14",
        // What chrono's parser alone would let through.
        "2026-3-14",
        "+2026-03-14",
        "2026-03-14  09:26",
        "2026-03-14T9:26",
        "2026-03-14T23:59:60",
        "2026-03-14ZZ",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
}
