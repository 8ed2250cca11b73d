//! The `store` setting: `IONFLOW_STORE` (or `--store`), else `store = "..."`
//! in the config file (`--config` / `IONFLOW_CONFIG`), else files.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::StorageError;

/// Which backend holds tokens, state and schedule leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSetting {
    /// Files under the state folder (`IONFLOW_STATE_DIR`).
    Files,
    /// A PostgreSQL database shared by every worker.
    Postgres(MaskedUrl),
}

/// The settings file of a worker (`--config FILE`, `IONFLOW_CONFIG`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `"files"` (default) or `"postgres://USER:PASSWORD@HOST:PORT/DB"`.
    pub store: Option<String>,
    /// How long a schedule lease lasts without renewal (`ionflow serve`).
    pub lease_secs: Option<f64>,
}

impl HostConfig {
    pub fn load(path: &Path) -> Result<Self, StorageError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StorageError::Setting(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| {
            StorageError::Setting(format!(
                "the config file {} is not valid: {e}(known keys: store, lease_secs)",
                path.display()
            ))
        })
    }
}

impl StoreSetting {
    /// `origin` names where the value came from, for the error message.
    pub fn parse(value: &str, origin: &str) -> Result<Self, StorageError> {
        let value = value.trim();
        if value.is_empty() || value == "files" || value == "file" {
            return Ok(StoreSetting::Files);
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            let url = MaskedUrl(value.to_owned());
            // Checked now, so a typo is a configuration error at start-up.
            value.parse::<tokio_postgres::Config>().map_err(|e| {
                StorageError::Setting(format!(
                    "{origin}: {url} is not a PostgreSQL URL ({e}); write \
                     postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ))
            })?;
            return Ok(StoreSetting::Postgres(url));
        }
        Err(StorageError::Setting(format!(
            "{origin}: unknown store {:?}; use \"files\" (the default) or \
             \"postgres://USER:PASSWORD@HOST:PORT/DATABASE\"",
            mask(value)
        )))
    }
}

/// A database URL whose `Debug` and `Display` mask the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedUrl(String);

impl MaskedUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MaskedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

impl fmt::Debug for MaskedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaskedUrl({})", mask(&self.0))
    }
}

/// `scheme://user:****@host/db?password=****`: the password in the user
/// info and in a `password` query parameter are replaced.
fn mask(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            out.replace_range(start..end, "****");
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let masked: Vec<String> = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask("postgres://ionflow:s3cr%40t@db:5432/ionflow"),
            "postgres://ionflow:****@db:5432/ionflow"
        );
        assert_eq!(
            mask("postgresql://db/x?user=a&password=hunter2&sslmode=disable"),
            "postgresql://db/x?user=a&password=****&sslmode=disable"
        );
        assert_eq!(mask("postgres://a@db/x"), "postgres://a@db/x");
        let url = MaskedUrl("postgres://u:pw1234@h/d".into());
        assert!(!format!("{url} {url:?}").contains("pw1234"));
    }

    #[test]
    fn settings_parse_or_say_what_to_write() {
        assert_eq!(
            StoreSetting::parse("", "IONFLOW_STORE").unwrap(),
            StoreSetting::Files
        );
        assert!(matches!(
            StoreSetting::parse("postgres://u:p@127.0.0.1:5432/db", "x").unwrap(),
            StoreSetting::Postgres(_)
        ));
        let e = StoreSetting::parse("mysql://u:hunter2@h/d", "IONFLOW_STORE").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("IONFLOW_STORE") && text.contains("postgres://"));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
