//! `ionflow validate`: one test per kind of mistake, each reported with
//! file:line:column, the key and the fix, without any API call.

use crate::support::{ionflow, run, simulator, workdir};

const BASE: &str = r#"name = "check"

[connections.m3]
ionapi_file = "IONAPI"

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"

[[transforms]]
kind = "jq"
filter = "{item: .ITNO}"

[[sinks]]
kind = "m3"
connection = "m3"
program = "MMS200MI"
transaction = "AddItmBasic"
fields = { ITNO = "{{ record.item }}" }
"#;

/// Each mistake: what to replace in BASE, and what the error must say.
const MISTAKES: &[(&str, &str, &str, &str)] = &[
    (
        "unknown key",
        "key_field = ",
        "key_feild = ",
        "check.toml:11:1: unknown field `key_feild`",
    ),
    (
        "unknown kind",
        "kind = \"m3_list\"",
        "kind = \"m3_lists\"",
        "check.toml:7:8: kind: unknown variant `m3_lists`",
    ),
    (
        "wrong type",
        "key_field = \"ITNO\"",
        "key_field = 7",
        "check.toml:11:13: key_field: invalid type: integer `7`, expected a string",
    ),
    (
        "missing key",
        "key_field = \"ITNO\"\n",
        "",
        "missing field `key_field`",
    ),
    (
        "undefined connection",
        "connection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"",
        "connection = \"ln\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"",
        "check.toml:8:1: source.connection: \"ln\" names no connection; define [connections.ln] or use one of: m3",
    ),
    (
        "out of range",
        "key_field = \"ITNO\"",
        "key_field = \"ITNO\"\npage_size = 20000",
        "check.toml:12:1: source.page_size: must be between 1 and 10000",
    ),
    (
        "jq syntax",
        "{item: .ITNO}",
        "{item: .ITNO",
        "check.toml:15:1: transforms[0].filter: jq filter does not parse",
    ),
    (
        "jq undefined function",
        "{item: .ITNO}",
        "{item: nosuch(.ITNO)}",
        "transforms[0].filter: undefined in jq filter: nosuch",
    ),
    (
        "template syntax",
        "{{ record.item }}",
        "{{ record.item ",
        "check.toml:22:1: sinks[0].fields: template does not compile",
    ),
    (
        "undefined state",
        "key_field = \"ITNO\"",
        "key_field = \"ITNO\"\nquery = { ITNO = \"${state.since}\" }",
        "check.toml:12:19: ${state.since} is not defined; declare it in [state.watermarks.NAME]",
    ),
    (
        "both credentials",
        "ionapi_file = \"IONAPI\"",
        "ionapi_file = \"IONAPI\"\nionapi_env = \"X\"",
        "check.toml:3:1: connections.m3: set exactly one of ionapi_file",
    ),
    (
        "variable in a jq filter",
        "{item: .ITNO}",
        "{item: .ITNO, at: \\\"${env.HOME}\\\"}",
        "transforms[0].filter: `${env.HOME}` is not expanded here: jq filters see the pipeline's values as jq variables; write $env.HOME",
    ),
    (
        "undefined template variable",
        "{{ record.item }}",
        "{{ recod.item }}",
        "check.toml:22:23: sinks[0].fields.ITNO: `recod` is not defined",
    ),
    (
        "unknown template filter",
        "{{ record.item }}",
        "{{ record.item | uper }}",
        "check.toml:22:37: sinks[0].fields.ITNO: the filter `uper` does not exist",
    ),
    (
        "unset environment variable",
        "ionapi_file = \"IONAPI\"",
        "ionapi_file = \"${env.IONFLOW_TEST_UNSET_VAR}\"",
        "environment variable IONFLOW_TEST_UNSET_VAR is not set",
    ),
    (
        "no sink",
        "[[sinks]]\nkind = \"m3\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"AddItmBasic\"\nfields = { ITNO = \"{{ record.item }}\" }\n",
        "",
        "sinks: a pipeline needs at least one sink",
    ),
    (
        "paging with jq",
        "[source]\nkind = \"m3_list\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"\nkey_field = \"ITNO\"",
        "[source]\nkind = \"http\"\nurl = \"https://example.com/x\"\nrecords_jq = \".data[]\"\npaging = { page_size = 10 }",
        "source.records_jq: cannot be combined with paging",
    ),
    (
        "inline secret",
        "[source]\nkind = \"m3_list\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"\nkey_field = \"ITNO\"",
        "[source]\nkind = \"http\"\nurl = \"https://example.com/x\"\nheaders = { Authorization = \"Bearer abc123\" }",
        "check.toml:9:1: source.headers: header Authorization carries a credential written into the file",
    ),
    (
        "cleartext url",
        "[source]\nkind = \"m3_list\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"\nkey_field = \"ITNO\"",
        "[source]\nkind = \"http\"\nurl = \"ftp://example.com/x\"",
        "source.url: must start with https://",
    ),
    (
        "bad delimiter",
        "[source]\nkind = \"m3_list\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"\nkey_field = \"ITNO\"",
        "[source]\nkind = \"file\"\npath = \"in.csv\"\nformat = \"csv\"\ncsv_delimiter = \"||\"",
        "source.csv_delimiter: must be one ASCII character",
    ),
];

#[tokio::test]
async fn each_kind_of_mistake_is_placed_and_explained() {
    let sim = simulator(3).await;
    let (dir, ionapi) = workdir(&sim);
    let base = BASE.replace("IONAPI", &ionapi.display().to_string());
    let good = dir.path().join("check.toml");
    std::fs::write(&good, &base).unwrap();
    let result = run(ionflow().arg("validate").arg(&good)).await;
    assert_eq!(
        result.code,
        0,
        "the base pipeline is valid: {}",
        result.all_output()
    );

    for (what, from, to, expected) in MISTAKES {
        let from = from.replace("IONAPI", &ionapi.display().to_string());
        let to = to.replace("IONAPI", &ionapi.display().to_string());
        assert!(base.contains(&from), "{what}: the test's anchor is missing");
        let bad_dir = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&bad_dir).unwrap();
        let bad = bad_dir.join("check.toml");
        std::fs::write(&bad, base.replacen(&from, &to, 1)).unwrap();
        let result = run(ionflow().arg("validate").arg(&bad)).await;
        assert_eq!(result.code, 2, "{what}: {}", result.all_output());
        assert!(
            result.stderr.contains(expected),
            "{what}: want `{expected}` in\n{}",
            result.stderr
        );
    }
    assert_eq!(sim.counters().api_calls, 0, "validate makes no API call");
    assert_eq!(sim.counters().token_requests.password, 0);
    sim.shutdown().await;
}

/// Credentials are not needed to validate: a `.ionapi` file that is not
/// there is a note, and the rest of the file is still checked.
#[tokio::test]
async fn a_missing_credentials_file_is_a_note_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("check.toml");
    std::fs::write(&file, BASE.replace("IONAPI", "nowhere.ionapi")).unwrap();
    let result = run(ionflow().arg("validate").arg(&file)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stderr.contains("connections.m3.ionapi_file: ")
            && result.stderr.contains("nowhere.ionapi is not there"),
        "{}",
        result.stderr
    );
    assert!(result.stderr.contains("note"), "{}", result.stderr);
}

#[tokio::test]
async fn all_problems_of_a_file_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE
        .replace("IONAPI", "x.ionapi")
        .replace(
            "key_field = \"ITNO\"",
            "key_field = \"ITNO\"\npage_size = 0",
        )
        .replace("{item: .ITNO}", "{item: .ITNO")
        .replace("{{ record.item }}", "{{ record.item ");
    let bad = dir.path().join("many.toml");
    std::fs::write(&bad, text).unwrap();
    let result = run(ionflow().arg("validate").arg(&bad)).await;
    assert_eq!(result.code, 2);
    let errors: Vec<&str> = result
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{}", result.stderr);
    assert!(
        errors[0].contains("many.toml:12:1: source.page_size"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("many.toml:16:1: transforms[0].filter"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("many.toml:23:1: sinks[0].fields"),
        "{}",
        errors[2]
    );
}
