//! The instance as a whole: the `.ionapi` file it writes and the
//! configurations it refuses.
//! Public shape checked: the `.ionapi` file `lib.rs` writes.

use serde_json::Value;

use super::Harness;
use crate::{SimConfig, Simulator};

#[tokio::test]
async fn ionapi_file_describes_the_running_instance() {
    let h = Harness::with_items(10).await;
    let port = h.sim.addr().port();
    assert_eq!(h.key("ti"), "ACME_TST");
    assert_eq!(h.key("iu"), format!("http://127.0.0.1:{port}"));
    assert_eq!(h.key("pu"), format!("http://localhost:{port}/ACME_TST/as/"));
    assert_eq!(h.sim.base_url(), h.key("iu"));
    for (key, value) in [
        ("cn", "ionflow simulator"),
        ("dt", "12"),
        ("oa", "authorization.oauth2"),
        ("ot", "token.oauth2"),
        ("or", "revoke_token.oauth2"),
        ("ev", "U0000000000"),
        ("v", "1.0"),
    ] {
        assert_eq!(h.key(key), value);
    }
    assert!(h.key("ci").starts_with("ACME_TST~"));
    assert!(h.key("saak").starts_with("ACME_TST#"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/sim.ionapi");
    h.sim.write_ionapi(&path).unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written, h.ionapi);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn start_rejects_bad_configuration() {
    for config in [
        SimConfig {
            tenant: "ACME/TST".into(),
            ..SimConfig::default()
        },
        SimConfig {
            tenant: String::new(),
            ..SimConfig::default()
        },
        SimConfig {
            items: 2_000_000,
            ..SimConfig::default()
        },
    ] {
        assert!(Simulator::start(config).await.is_err());
    }
}
