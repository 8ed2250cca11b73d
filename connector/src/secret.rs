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

/// Replaces every occurrence of any secret in `text` with `*****`, in every
/// spelling a server may echo it back in (see [`spellings`]). Applied to
/// text that comes from the network (error descriptions, response bodies)
/// before it is put into an error, in case a server echoes what it was sent.
pub fn scrub<'a>(text: &str, secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut needles: Vec<String> = secrets
        .into_iter()
        // Very short values would mask innocent text; real secrets are long.
        .filter(|secret| secret.0.len() >= MIN_SCRUBBED_LEN)
        .flat_map(|secret| spellings(&secret.0))
        .filter(|needle| needle.len() >= MIN_SCRUBBED_LEN)
        .collect();
    // Longest first, so that a spelling containing another goes whole.
    needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
    needles.dedup();
    let mut out = text.to_owned();
    for needle in &needles {
        if out.contains(needle.as_str()) {
            out = out.replace(needle.as_str(), "*****");
        }
    }
    out
}

const MIN_SCRUBBED_LEN: usize = 6;

/// The ways a value sent in a form or a header comes back in an echo: as
/// sent raw, form-encoded (`#` as `%23`, space as `+`), percent-encoded in
/// either hex case or with `%20`, as a JSON string (`/` optionally as `\/`),
/// and HTML-escaped in an error page.
pub fn spellings(value: &str) -> Vec<String> {
    let form: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let percent = form.replace('+', "%20");
    let lower = |encoded: &str| {
        let mut out = String::with_capacity(encoded.len());
        let mut rest = encoded;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
            out.push_str(&escape.to_ascii_lowercase());
            rest = &rest[at + escape.len()..];
        }
        out.push_str(rest);
        out
    };
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(&json)
        .to_owned();
    let html = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let mut all = vec![
        value.to_owned(),
        lower(&form),
        lower(&percent),
        json.replace('/', "\\/"),
        html(value),
        value.replace('\'', "&#x27;").replace('&', "&amp;"),
        form,
        percent,
        json,
    ];
    all.sort();
    all.dedup();
    all
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

    #[test]
    fn scrub_removes_every_spelling_of_an_echo() {
        let saak = Secret::new("TENANT#SAAK key+/=&<x>'y\"");
        let echoes = [
            "TENANT#SAAK key+/=&<x>'y\"",
            "username=TENANT%23SAAK+key%2B%2F%3D%26%3Cx%3E%27y%22&grant_type=password",
            "TENANT%23SAAK%20key%2B%2F%3D%26%3Cx%3E%27y%22",
            "TENANT%23SAAK+key%2b%2f%3d%26%3cx%3e%27y%22",
            "{\"echo\":\"TENANT#SAAK key+\\/=&<x>'y\\\"\"}",
            "<pre>TENANT#SAAK key+/=&amp;&lt;x&gt;&#39;y&quot;</pre>",
        ];
        for echo in echoes {
            let scrubbed = scrub(echo, [&saak]);
            assert!(!scrubbed.contains("SAAK"), "{echo} -> {scrubbed}");
        }
    }
}
