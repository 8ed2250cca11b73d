//! Unit tests of the MI layer: query parsing, transactions and the envelope.
//! Public shape checked: the one the parent module's top comment names.

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
    let day = NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
    assert_eq!(DateFormat::Ymd8.format(day), "20260304");
    assert_eq!(DateFormat::Ymd6.format(day), "260304");
    assert_eq!(DateFormat::Mdy8.format(day), "03042026");
    assert_eq!(DateFormat::Dmy6.format(day), "040326");
}
