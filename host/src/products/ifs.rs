//! Infor Federated Services user management: `users/me`, the call Infor
//! recommends for checking who a token acts for.

use serde_json::Value;

/// The current user below `{iu}/{ti}/`.
pub const USERS_ME_PATH: &str = "ifsservice/usermgt/v2/users/me";

/// An answer of `users/me` that names no user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IFS users/me{0}")]
pub struct IfsError(pub String);

/// Who the token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub user: String,
    pub display_name: Option<String>,
    /// The answer as it came, for `--json`.
    pub raw: Value,
}

/// Reads `{"response": {"userlist": [{"userName", "displayName", "name": {...}}]}}`;
/// a bare user object is accepted too.
pub fn me(status: u16, body: &[u8]) -> Result<Me, IfsError> {
    if !(200..300).contains(&status) {
        return Err(IfsError(format!(
            " answered HTTP {status}: {}",
            super::excerpt(body)
        )));
    }
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| IfsError(format!(": the answer is not JSON ({e})")))?;
    let user = raw.pointer("/response/userlist/0").unwrap_or(&raw).clone();
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let name = text(user.get("userName"))
        .or_else(|| text(user.get("email")))
        .ok_or_else(|| IfsError(": the answer names no user (no `userName`)".into()))?;
    let display_name = text(user.get("displayName")).or_else(|| {
        let given = text(user.pointer("/name/givenName"));
        let family = text(user.pointer("/name/familyName"));
        match (given, family) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            (g, f) => g.or(f),
        }
    });
    Ok(Me {
        user: name,
        display_name,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_userlist_and_falls_back_on_names() {
        let body = br#"{"response":{"userlist":[{"userName":"svc@acme","displayName":"Service","name":{"givenName":"A","familyName":"B"}}]}}"#;
        let me = me(200, body).unwrap();
        assert_eq!(me.user, "svc@acme");
        assert_eq!(me.display_name.as_deref(), Some("Service"));
        let bare = br#"{"userName":"u1","name":{"givenName":"Ada","familyName":"Lovelace"}}"#;
        assert_eq!(
            super::me(200, bare).unwrap().display_name.as_deref(),
            Some("Ada Lovelace")
        );
        assert!(super::me(200, b"{}").unwrap_err().0.contains("no user"));
        assert!(super::me(500, b"down").unwrap_err().0.contains("HTTP 500"));
    }
}
