//! A string that must never be shown: client secrets, sask, tokens.

use std::fmt;

/// Holds a secret value. `Debug` and `Display` print a mask, so a secret that
/// ends up in a log line, an error or a panic message by accident leaks nothing.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A description safe to show: how long it is, never what it holds.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// `*****` plus the length, so a user can tell an empty or truncated value
/// from a plausible one without seeing it.
pub fn mask(value: &str) -> String {
    format!("***** ({} chars)", value.chars().count())
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

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces every occurrence of any secret in `text` with `*****`. Applied to
/// text that comes from the network (error descriptions, response bodies)
/// before it is put into an error, in case a server echoes what it was sent.
pub fn scrub<'a>(text: &str, secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // Very short values would mask innocent text; real secrets are long.
        if secret.0.len() >= 6 {
            out = out.replace(&secret.0, "*****");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(*****)");
        assert_eq!(format!("{s}"), "*****");
        assert_eq!(s.masked(), "***** (19 chars)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn scrub_removes_echoed_secrets() {
        let s = Secret::new("abc+def/ghi=");
        assert_eq!(
            scrub("bad password abc+def/ghi= given", [&s]),
            "bad password ***** given"
        );
    }
}
