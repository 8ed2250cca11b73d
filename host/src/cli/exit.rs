//! Exit codes: documented in the README, stable for cron jobs and schedulers.

use std::process::ExitCode;

use crate::pipeline::run_lock::LockHeld;
use crate::pipeline::{CallError, ConfigError, ConfigErrors, Interrupted, Unavailable, UsageError};
use crate::store::StorageError;
use ionflow_runtime::{ComponentError, ConnectorError, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked (or the reader of the output went away early).
    Success = 0,
    /// An unexpected failure (I/O, a product error that stopped the run, a bug).
    Failure = 1,
    /// The command line (an option's value), a pipeline file, the settings
    /// or a `.ionapi` file is wrong.
    Config = 2,
    /// The identity provider or gateway refused the credentials (401, 403, invalid_grant).
    Auth = 3,
    /// The run finished but some records failed: a sink refused them, or a
    /// jq filter or template failed or hit its time, memory or depth limit
    /// (`crate::sandbox`). `ionflow test`: a test failed.
    RecordsFailed = 4,
    /// The gateway or network was unavailable (timeouts, 429, 502/503/504
    /// after the retries, connection errors, a token endpoint that did not answer).
    Unavailable = 5,
    /// Another run of the same pipeline holds its lock (EX_TEMPFAIL).
    LockHeld = 75,
    /// Stopped by SIGINT or SIGTERM; grants were released as at the end of a run.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

impl Exit {
    /// A word for the kind of failure, for JSON summaries, `/status` and metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Config => "config",
            Exit::Auth => "auth",
            Exit::RecordsFailed => "records_failed",
            Exit::Unavailable => "unavailable",
            Exit::LockHeld => "lock_held",
            Exit::Interrupted => "interrupted",
        }
    }

    /// Picks the exit code from the first typed error in the chain.
    pub fn classify(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if cause.is::<Interrupted>() {
                return Exit::Interrupted;
            }
            if cause.is::<LockHeld>() {
                return Exit::LockHeld;
            }
            // A pipeline or connector component that cannot be used as
            // configured: the user fixes a file, not the network.
            if cause.is::<ConfigError>()
                || cause.is::<ConfigErrors>()
                || cause.is::<UsageError>()
                || cause.is::<ComponentError>()
            {
                return Exit::Config;
            }
            // The gateway, the product or an endpoint stayed unavailable.
            if cause.is::<Unavailable>() {
                return Exit::Unavailable;
            }
            if let Some(e) = cause.downcast_ref::<CallError>() {
                return match e {
                    CallError::Unavailable(_) => Exit::Unavailable,
                    CallError::Connector(e) => Exit::of_connector(e),
                };
            }
            if let Some(e) = cause.downcast_ref::<StorageError>() {
                return match e {
                    StorageError::Setting(_) => Exit::Config,
                    StorageError::Unavailable(_) => Exit::Unavailable,
                };
            }
            if let Some(e) = cause.downcast_ref::<ConnectorError>() {
                return Exit::of_connector(e);
            }
        }
        Exit::Failure
    }

    fn of_connector(e: &ConnectorError) -> Exit {
        match e.kind() {
            ErrorKind::Configuration => Exit::Config,
            ErrorKind::Authentication | ErrorKind::Forbidden => Exit::Auth,
            ErrorKind::Unavailable => Exit::Unavailable,
            ErrorKind::Failed | ErrorKind::Sandbox => Exit::Failure,
        }
    }
}
