//! Where a connection's `.ionapi` JSON comes from, and the one resolver every
//! command uses to turn a CONNECTION argument into credentials and options.
//!
//! A CONNECTION is written as:
//! - `PATH`: a `.ionapi` file;
//! - `env:NAME`: an environment variable holding the file's JSON;
//! - `PIPELINE.toml#NAME`: the `[connections.NAME]` table of a pipeline,
//!   with its `${env.*}` variables, grant and timeout;
//! - `PIPELINE.toml`: the same, when the pipeline defines one connection.

pub mod hygiene;

use std::path::{Path, PathBuf};

use crate::config::{
    ClientAuthName, ConfigError, ConnectionConfig, ConnectionsTable, GrantName, Variables,
    parse_toml,
};
use ionflow_runtime::Secret;
use ionflow_runtime::{ClientAuth, ConnectionOptions, Grant, default_options};

/// Where the JSON was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IonapiSource {
    File(PathBuf),
    Env(String),
}

impl std::fmt::Display for IonapiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IonapiSource::File(path) => write!(f, "{}", path.display()),
            IonapiSource::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// A connection ready to open: its credentials, held as a secret, and the
/// options its pipeline sets (defaults for a bare file).
#[derive(Debug, Clone)]
pub struct ResolvedConnection {
    /// What to call it in logs and messages: `NAME` from a pipeline, or the source.
    pub label: String,
    pub source: IonapiSource,
    pub ionapi_json: Secret,
    pub options: ConnectionOptions,
    /// Whether a one-shot command (`whoami`, `check-scope`) should revoke
    /// the grant when it ends as its last holder: `revoke_on_exit` of a
    /// pipeline connection; false (keep it for the next run) for a bare file.
    pub revoke_on_exit: bool,
}

const ENV_PREFIX: &str = "env:";

/// A pipeline file named as a CONNECTION is read only for its connections.
const MAX_PIPELINE_BYTES: u64 = 16 * 1024 * 1024;

/// Resolves a CONNECTION argument (see the module documentation).
pub fn resolve(reference: &str, vars: &Variables) -> Result<ResolvedConnection, ConfigError> {
    if let Some(var) = reference.strip_prefix(ENV_PREFIX) {
        return from_env(var, Path::new(reference), "");
    }
    let (file, name) = match reference.rsplit_once('#') {
        Some((file, name)) if is_pipeline(Path::new(file)) => (file, Some(name)),
        _ => (reference, None),
    };
    let path = Path::new(file);
    if !is_pipeline(path) {
        let json = read(path, path, "", "the .ionapi file")?;
        return Ok(ResolvedConnection {
            label: path.display().to_string(),
            source: IonapiSource::File(path.to_owned()),
            ionapi_json: json,
            options: default_options(),
            revoke_on_exit: false,
        });
    }
    let text = read_regular_file(path, MAX_PIPELINE_BYTES)
        .map_err(|e| ConfigError::new(path, format!("cannot read the pipeline file: {e}")))?;
    // Only the connections and the variables they may use are read here;
    // the rest of the file is the pipeline's to check when it loads.
    let config: ConnectionsTable = parse_toml(&text, path, |_, _, _| None)?;
    let name = match name {
        Some(name) => name.to_owned(),
        None => only_connection(&config, path)?,
    };
    let Some(connection) = config.connections.get(&name) else {
        let known: Vec<_> = config.connections.keys().map(String::as_str).collect();
        return Err(ConfigError::new(
            path,
            format!(
                "defines no connection `{name}`; known: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let base_dir = path.parent().unwrap_or(Path::new(""));
    from_pipeline(&name, connection, path, base_dir, vars)
}

/// Resolves `[connections.NAME]` of a pipeline file; relative paths resolve
/// against `base_dir`, the pipeline's folder.
pub fn from_pipeline(
    name: &str,
    connection: &ConnectionConfig,
    pipeline_file: &Path,
    base_dir: &Path,
    vars: &Variables,
) -> Result<ResolvedConnection, ConfigError> {
    let key = format!("connections.{name}");
    let mut resolved = match (&connection.ionapi_env, &connection.ionapi_file) {
        (Some(var), None) => from_env(var, pipeline_file, &format!("{key}.ionapi_env: "))?,
        (None, Some(raw)) => {
            let context = format!("{key}.ionapi_file: ");
            let expanded = vars
                .expand(raw)
                .map_err(|e| ConfigError::new(pipeline_file, format!("{context}{e}")))?;
            let path = base_dir.join(expanded);
            let json = read(&path, pipeline_file, &context, "the .ionapi file")?;
            ResolvedConnection {
                label: String::new(),
                source: IonapiSource::File(path),
                ionapi_json: json,
                options: default_options(),
                revoke_on_exit: false,
            }
        }
        _ => {
            return Err(ConfigError::new(
                pipeline_file,
                format!(
                    "{key}: set exactly one of ionapi_file (a path) or ionapi_env \
                     (an environment variable holding the .ionapi JSON)"
                ),
            ));
        }
    };
    resolved.label = name.to_owned();
    resolved.options = options(connection);
    resolved.revoke_on_exit = connection.revokes_on_exit(false);
    resolved.options.saml_assertion =
        saml_assertion(name, connection, pipeline_file, base_dir, vars)?;
    Ok(resolved)
}

/// The SAML assertion of a `saml_bearer` connection, read from its file or
/// variable when the connection opens, never written in the pipeline.
fn saml_assertion(
    name: &str,
    connection: &ConnectionConfig,
    pipeline_file: &Path,
    base_dir: &Path,
    vars: &Variables,
) -> Result<Option<String>, ConfigError> {
    let key = format!("connections.{name}");
    if let Some(var) = &connection.saml_assertion_env {
        return std::env::var(var).map(Some).map_err(|_| {
            ConfigError::new(
                pipeline_file,
                format!("{key}.saml_assertion_env: environment variable {var} is not set"),
            )
        });
    }
    let Some(raw) = &connection.saml_assertion_file else {
        return Ok(None);
    };
    let context = format!("{key}.saml_assertion_file: ");
    let expanded = vars
        .expand(raw)
        .map_err(|e| ConfigError::new(pipeline_file, format!("{context}{e}")))?;
    let secret = read(
        &base_dir.join(expanded),
        pipeline_file,
        &context,
        "the SAML assertion",
    )?;
    Ok(Some(secret.expose().to_owned()))
}

fn options(connection: &ConnectionConfig) -> ConnectionOptions {
    ConnectionOptions {
        grant: connection.grant.map(|g| match g {
            GrantName::BackendService => Grant::BackendService,
            GrantName::ClientCredentials => Grant::ClientCredentials,
            GrantName::AuthorizationCode => Grant::AuthorizationCode,
            GrantName::SamlBearer => Grant::SamlBearer,
        }),
        client_auth: connection.client_auth.map(|c| match c {
            ClientAuthName::Form => ClientAuth::Form,
            ClientAuthName::Basic => ClientAuth::Basic,
        }),
        request_timeout_ms: connection.timeout_secs.map(|s| s * 1000),
        max_payload_bytes: connection.max_payload_bytes,
        ..default_options()
    }
}

fn from_env(var: &str, named_in: &Path, context: &str) -> Result<ResolvedConnection, ConfigError> {
    // Only the variable's name ever appears in a message, never its value.
    let json = std::env::var(var).map_err(|_| {
        ConfigError::new(
            named_in,
            format!(
                "{context}environment variable {var} is not set; export it with the .ionapi file's JSON"
            ),
        )
    })?;
    Ok(ResolvedConnection {
        label: format!("{ENV_PREFIX}{var}"),
        source: IonapiSource::Env(var.to_owned()),
        ionapi_json: Secret::new(json),
        options: default_options(),
        revoke_on_exit: false,
    })
}

/// The most a `.ionapi` file or a SAML assertion file may hold: real ones
/// are about 1 KiB and 10 KiB.
pub const MAX_CREDENTIAL_BYTES: u64 = 1024 * 1024;

fn read(path: &Path, named_in: &Path, context: &str, what: &str) -> Result<Secret, ConfigError> {
    read_regular_file(path, MAX_CREDENTIAL_BYTES)
        .map(Secret::new)
        .map_err(|problem| {
            let fix = match problem {
                Unreadable::Io(_) => {
                    "download it from Infor OS > API Gateway > Authorized Apps or fix the path"
                }
                Unreadable::NotAFile(_) | Unreadable::TooLarge(_) | Unreadable::NotText => {
                    "point the setting at the credentials file itself (a regular file; a symbolic \
                     link to one is fine)"
                }
            };
            let message = format!(
                "{context}cannot read {what} {}: {problem}; {fix}",
                path.display()
            );
            ConfigError::new(named_in, message)
        })
}

/// Why a credentials file was not read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("{0}")]
    Io(std::io::Error),
    /// A device, FIFO, socket or folder: reading it could block forever or
    /// never end (`/dev/zero`).
    #[error("it is {0}, not a regular file")]
    NotAFile(&'static str),
    #[error("it is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("it is not UTF-8 text")]
    NotText,
}

/// Reads a credentials file: only a regular file (symbolic links to one
/// are followed), at most `max` bytes. It is opened without blocking, so a
/// FIFO with no writer cannot hang the process, then checked through the
/// open handle, and read through `take`, so a file that grows while it is
/// read still stops at the limit.
pub fn read_regular_file(path: &Path, max: u64) -> Result<String, Unreadable> {
    use std::io::Read as _;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(Unreadable::Io)?;
    let meta = file.metadata().map_err(Unreadable::Io)?;
    if !meta.is_file() {
        return Err(Unreadable::NotAFile(file_kind(&meta)));
    }
    if meta.len() > max {
        return Err(Unreadable::TooLarge(max));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::Io)?;
    if bytes.len() as u64 > max {
        return Err(Unreadable::TooLarge(max));
    }
    String::from_utf8(bytes).map_err(|_| Unreadable::NotText)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn is_pipeline(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
}

fn only_connection(config: &ConnectionsTable, path: &Path) -> Result<String, ConfigError> {
    let mut names = config.connections.keys();
    match (names.next(), names.next()) {
        (Some(only), None) => Ok(only.clone()),
        (None, _) => Err(ConfigError::new(
            path,
            "defines no [connections.NAME] table",
        )),
        (Some(_), Some(_)) => Err(ConfigError::new(
            path,
            format!(
                "defines several connections; name one as {}#NAME (one of: {})",
                path.display(),
                config
                    .connections
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PIPELINE: &str = r#"
[connections.m3]
ionapi_file = "secrets/${env.IONFLOW_TEST_ENV:-dev}.ionapi"
timeout_secs = 30
grant = "client_credentials"

[connections.ln]
ionapi_env = "IONFLOW_TEST_SURELY_UNSET_VAR"

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"

[[sinks]]
kind = "file"
path = "out.jsonl"
"#;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/test.ionapi"), "{\"ti\":\"T\"}").unwrap();
        let pipeline = dir.path().join("p.toml");
        std::fs::write(&pipeline, PIPELINE).unwrap();
        (dir, pipeline)
    }

    fn vars() -> Variables {
        Variables::new(BTreeMap::from([(
            "IONFLOW_TEST_ENV".to_string(),
            "test".to_string(),
        )]))
    }

    #[test]
    fn a_pipeline_connection_brings_its_file_and_options() {
        let (dir, pipeline) = setup();
        let r = resolve(&format!("{}#m3", pipeline.display()), &vars()).unwrap();
        assert_eq!(r.label, "m3");
        assert_eq!(
            r.source,
            IonapiSource::File(dir.path().join("secrets/test.ionapi"))
        );
        assert_eq!(r.ionapi_json.expose(), "{\"ti\":\"T\"}");
        assert_eq!(r.options.request_timeout_ms, Some(30_000));
        assert_eq!(r.options.grant, Some(Grant::ClientCredentials));
    }

    #[test]
    fn a_bare_file_has_default_options() {
        let (dir, _) = setup();
        let file = dir.path().join("secrets/test.ionapi");
        let r = resolve(&file.display().to_string(), &vars()).unwrap();
        assert_eq!(r.source, IonapiSource::File(file));
        assert_eq!(r.options.grant, None);
    }

    #[test]
    fn mistakes_are_named() {
        let (dir, pipeline) = setup();
        let p = pipeline.display();
        let e = resolve(&p.to_string(), &vars()).unwrap_err();
        assert!(e.to_string().contains("#NAME (one of: ln, m3)"), "{e}");
        let e = resolve(&format!("{p}#erp"), &vars()).unwrap_err();
        assert!(e.to_string().contains("no connection `erp`"), "{e}");
        let e = resolve(&format!("{p}#ln"), &vars()).unwrap_err();
        assert!(
            e.to_string()
                .contains("connections.ln.ionapi_env: environment variable IONFLOW_TEST_SURELY_UNSET_VAR is not set"),
            "{e}"
        );
        let e = resolve(&format!("{p}#m3"), &Variables::default()).unwrap_err();
        assert!(e.to_string().contains("secrets/dev.ionapi"), "{e}");
        let missing = dir.path().join("nope.ionapi");
        let e = resolve(&missing.display().to_string(), &vars()).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the .ionapi file"),
            "{e}"
        );
        let e = resolve("env:IONFLOW_TEST_SURELY_UNSET_VAR", &vars()).unwrap_err();
        assert!(e.to_string().contains("is not set"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_of_a_sane_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.ionapi");
        std::fs::write(&good, "{}").unwrap();
        let link = dir.path().join("link.ionapi");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert_eq!(read_regular_file(&link, 10).unwrap(), "{}");

        let big = dir.path().join("big.ionapi");
        std::fs::write(&big, "x".repeat(11)).unwrap();
        assert!(matches!(
            read_regular_file(&big, 10),
            Err(Unreadable::TooLarge(10))
        ));
        let zero = dir.path().join("zero.ionapi");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read_regular_file(&zero, 10),
            Err(Unreadable::NotAFile("a device"))
        ));
        assert!(matches!(
            read_regular_file(dir.path(), 10),
            Err(Unreadable::NotAFile("a folder"))
        ));
        let fifo = dir.path().join("fifo.ionapi");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Without O_NONBLOCK this open would wait for a writer forever.
            assert!(matches!(
                read_regular_file(&fifo, 10),
                Err(Unreadable::NotAFile("a FIFO (named pipe)"))
            ));
        }
        std::fs::write(&big, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_regular_file(&big, 10),
            Err(Unreadable::NotText)
        ));
    }
}
