//! The host's view of an access token: the WIT `token-info` with the token
//! itself moved into a [`Secret`] as soon as it leaves the sandbox.

use super::bindings::exports::ionflow::gateway::auth::{Grant, TokenInfo};
use super::secret::Secret;

/// What `token()` and `refresh()` return. Its `Debug` masks the token, so
/// the value can be logged or put in an error without leaking it.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub token_type: String,
    pub expires_in_secs: u32,
    pub scope: Option<String>,
    pub has_refresh_token: bool,
    pub grant: Grant,
    /// Served from the cache without a token request.
    pub cached: bool,
}

impl From<TokenInfo> for AccessToken {
    fn from(info: TokenInfo) -> Self {
        AccessToken {
            token: Secret::new(info.access_token),
            token_type: info.token_type,
            expires_in_secs: info.expires_in_secs,
            scope: info.scope,
            has_refresh_token: info.has_refresh_token,
            grant: info.grant,
            cached: info.cached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_the_token() {
        let token = AccessToken::from(TokenInfo {
            access_token: "0123456789abcdef-access".into(),
            token_type: "Bearer".into(),
            expires_in_secs: 7200,
            scope: None,
            has_refresh_token: true,
            grant: Grant::BackendService,
            cached: false,
        });
        let shown = format!("{token:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("Secret(*****)"), "{shown}");
        assert_eq!(token.token.expose(), "0123456789abcdef-access");
    }
}
