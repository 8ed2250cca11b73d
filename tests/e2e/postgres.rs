//! A real PostgreSQL server for the tests of the shared store: each test gets
//! a database of its own on the server `IONFLOW_TEST_POSTGRES` names (started
//! by `.ci/postgres`). Without it the tests say they were skipped, and in CI
//! (`CI` or `IONFLOW_REQUIRE_POSTGRES` set) they fail.

use tokio_postgres::NoTls;

pub struct TestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

/// A fresh, empty database, or `None` (after saying so) when no server is configured.
pub async fn test_database(test: &str) -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("IONFLOW_TEST_POSTGRES") else {
        let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
            || std::env::var_os("IONFLOW_REQUIRE_POSTGRES").is_some();
        let why = "IONFLOW_TEST_POSTGRES is not set; start a server with \
                   `eval \"$(.ci/postgres)\"` (README, \"The two commands\")";
        assert!(!required, "{test} needs PostgreSQL in CI: {why}");
        // Straight to stderr: the test harness hides `eprintln!` of passing tests.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        return None;
    };
    let name = format!(
        "ionflow_{}_{}_{}",
        test.chars().take(30).collect::<String>(),
        std::process::id(),
        fastrand::u32(..)
    );
    let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("IONFLOW_TEST_POSTGRES does not answer: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = with_database(&admin_url, &name);
    Some(TestDb {
        admin_url,
        name,
        url,
    })
}

/// The same URL naming another database.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{root}/{name}{query}")
}

/// A line for the CI log even when the test passes (the harness captures
/// `println!`): the figures a test measured.
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

impl TestDb {
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// The password in the URL, to look for in output that must not hold it.
    pub fn password(&self) -> String {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default()
    }

    pub async fn drop(self) {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}
