//! Secrets the host holds: the `.ionapi` JSON it reads and hands to the
//! connector, and the access tokens the connector returns from `token()`.
//!
//! The connector has a `Secret` of its own (`connector/src/secret.rs`) for
//! the guest side: the client secret and keys it parses out of the `.ionapi`
//! file and the tokens, codes and PKCE verifiers it handles in the sandbox. That crate is built
//! for `wasm32-wasip2` and reaches the host only as the component's bytes,
//! so the host cannot share its types; values cross the WIT boundary as
//! plain strings, and each side wraps them again in its own `Secret` as
//! soon as they arrive. This one is re-exported for embedders and for the
//! `ionflow` crate, which keeps `.ionapi` contents in it.

use std::fmt;

/// A value that must never be shown by accident. `Debug` and `Display`
/// print a mask, so a secret caught in a log line, an error or a panic
/// message leaks nothing; `expose` is the one deliberate way to read it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the few places that must pass it on.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(*****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("eyJhbGciOi-very-secret");
        assert_eq!(format!("{s}"), "*****");
        assert_eq!(format!("{s:?}"), "Secret(*****)");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    Secret(*****),\n)");
        assert_eq!(s.expose(), "eyJhbGciOi-very-secret");
    }
}
