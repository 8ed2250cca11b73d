//! Unit tests of the token registry and the token endpoint's parsing.
//! Public shape checked: the one the parent module's top comment names.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::codec::form_encode;

fn registry(ttl: u64, refresh: bool) -> TokenRegistry {
    TokenRegistry::new(ttl, refresh)
}

#[test]
fn tokens_are_distinct_hex() {
    let mut reg = registry(60, true);
    let now = Instant::now();
    let a = reg.issue("s".into(), true, now);
    let b = reg.issue("s".into(), true, now);
    let all = [
        &a.access_token,
        a.refresh_token.as_ref().unwrap(),
        &b.access_token,
        b.refresh_token.as_ref().unwrap(),
    ];
    for (i, t) in all.iter().enumerate() {
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(all[i + 1..].iter().all(|o| o != t));
    }
    let issued = reg.issued();
    assert_eq!(issued.access_tokens, [a.access_token, b.access_token]);
    assert_eq!(issued.refresh_tokens.len(), 2);
}

#[test]
fn access_tokens_expire_with_the_clock() {
    let mut reg = registry(60, true);
    let t0 = Instant::now();
    let issued = reg.issue("s".into(), false, t0);
    assert!(issued.refresh_token.is_none());
    assert_eq!(issued.expires_in, 60);
    let token = &issued.access_token;
    assert_eq!(reg.check_access(token, t0), AccessStatus::Valid);
    assert_eq!(
        reg.check_access(token, t0 + Duration::from_secs(59)),
        AccessStatus::Valid
    );
    assert_eq!(
        reg.check_access(token, t0 + Duration::from_secs(60)),
        AccessStatus::Expired
    );
    assert_eq!(reg.check_access("nope", t0), AccessStatus::Unknown);
    assert_eq!(reg.expire_all(t0), 1);
    assert_eq!(reg.check_access(token, t0), AccessStatus::Expired);
    assert_eq!(reg.expire_all(t0), 0);
    let forever = registry(u64::MAX, false).issue("s".into(), false, t0);
    assert_eq!(forever.expires_in, u64::MAX);
}

#[test]
fn refresh_rotates_and_detects_reuse() {
    let mut reg = registry(60, true);
    let now = Instant::now();
    let first = reg.issue("s".into(), true, now);
    let r1 = first.refresh_token.unwrap();
    let second = reg.refresh(&r1, now).unwrap();
    let r2 = second.refresh_token.unwrap();
    assert_ne!(r1, r2);
    assert_eq!(reg.refresh(&r1, now).unwrap_err(), RefreshFailure::Reused);
    // Old access tokens stay valid until they expire.
    assert_eq!(
        reg.check_access(&first.access_token, now),
        AccessStatus::Valid
    );
    assert!(reg.refresh(&r2, now).is_ok());
    assert_eq!(
        reg.refresh("nope", now).unwrap_err(),
        RefreshFailure::Unknown
    );
    // An access token is not a refresh token and vice versa.
    assert_eq!(
        reg.refresh(&second.access_token, now).unwrap_err(),
        RefreshFailure::Unknown
    );
    assert_eq!(reg.check_access(&r2, now), AccessStatus::Unknown);
}

#[test]
fn revoking_a_refresh_token_kills_its_family_only() {
    let mut reg = registry(60, true);
    let now = Instant::now();
    let a = reg.issue("s".into(), true, now);
    let a2 = reg.refresh(a.refresh_token.as_ref().unwrap(), now).unwrap();
    let b = reg.issue("s".into(), true, now);
    assert!(reg.revoke(a2.refresh_token.as_ref().unwrap()));
    assert_eq!(
        reg.check_access(&a.access_token, now),
        AccessStatus::Revoked
    );
    assert_eq!(
        reg.check_access(&a2.access_token, now),
        AccessStatus::Revoked
    );
    assert_eq!(reg.check_access(&b.access_token, now), AccessStatus::Valid);
    assert_eq!(
        reg.refresh(a2.refresh_token.as_ref().unwrap(), now)
            .unwrap_err(),
        RefreshFailure::Revoked
    );
    assert!(reg.refresh(b.refresh_token.as_ref().unwrap(), now).is_ok());
    assert!(reg.revoke(&b.access_token));
    assert_eq!(
        reg.check_access(&b.access_token, now),
        AccessStatus::Revoked
    );
    assert!(!reg.revoke("unknown"));
}

#[test]
fn no_refresh_tokens_when_the_app_does_not_issue_them() {
    let mut reg = registry(60, false);
    let issued = reg.issue("s".into(), true, Instant::now());
    assert!(issued.refresh_token.is_none());
    assert!(reg.issued().refresh_tokens.is_empty());
}

#[test]
fn basic_credentials_are_form_decoded() {
    let id = "ACME_TST~abc";
    let secret = "a+b/c=d%";
    let proper = format!("{}:{}", form_encode(id), form_encode(secret));
    let header =
        HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(proper.as_bytes()))).unwrap();
    assert_eq!(
        decode_basic(&header).unwrap(),
        (id.to_owned(), secret.to_owned())
    );

    // Raw values: `+` becomes a space and the lone `%` is malformed.
    let naive = format!("{id}:{secret}");
    let header =
        HeaderValue::from_str(&format!("basic {}", STANDARD.encode(naive.as_bytes()))).unwrap();
    assert!(decode_basic(&header).is_err());
    let naive = format!("{id}:a+b");
    let header =
        HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(naive.as_bytes()))).unwrap();
    assert_eq!(decode_basic(&header).unwrap().1, "a b");

    for bad in ["Bearer abc", "Basic", "Basic !!!!", "Basic Zm9v"] {
        assert!(
            decode_basic(&HeaderValue::from_static(bad)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn scopes() {
    let parse = |body: &str| requested_scope(&Params::parse(body.as_bytes()).unwrap());
    assert_eq!(parse("").unwrap(), DEFAULT_SCOPE);
    assert_eq!(parse("scope=a+b:c").unwrap(), "a b:c");
    assert!(parse("scope=a++b").is_err());
    assert!(parse("scope=").is_err());
    assert!(parse("scope=a%22").is_err());
}
