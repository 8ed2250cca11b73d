//! Thin wrappers over the imports the host lends: transport, token store, log.

use super::ionflow::gateway::{log, token_store, transport, types};
use crate::error::ConnectorError;
pub use transport::OutgoingRequest;

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn info(message: &str) {
    log::log(log::Level::Info, message);
}

pub fn debug(message: &str) {
    log::log(log::Level::Debug, message);
}

pub fn warn(message: &str) {
    log::log(log::Level::Warn, message);
}

pub struct Exchange<'a> {
    pub method: types::Method,
    pub url: &'a str,
    /// What to call the destination in errors: a URL without its query.
    pub what: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

pub fn send(exchange: Exchange<'_>) -> Result<transport::IncomingResponse, ConnectorError> {
    let request = transport::OutgoingRequest {
        method: exchange.method,
        url: exchange.url.to_owned(),
        headers: exchange.headers,
        body: exchange.body,
        timeout_ms: exchange.timeout_ms,
    };
    send_request(&request, exchange.what)
}

/// One exchange of a request the caller keeps, so that a business call
/// retried after a 401 sends its body again without a copy. `what` names
/// the destination in errors.
pub fn send_request(
    request: &transport::OutgoingRequest,
    what: &str,
) -> Result<transport::IncomingResponse, ConnectorError> {
    transport::send(request).map_err(|e| {
        ConnectorError::Transport(match e {
            transport::TransportError::Refused(why) => {
                format!("the host refused the request to {what}: {why}")
            }
            transport::TransportError::Connect(why) => {
                format!("could not connect to {what}: {why}")
            }
            transport::TransportError::Timeout => format!(
                "no complete answer from {what} within {} ms; raise the request timeout (at most 300 s) or ask for less data per call",
                request.timeout_ms
            ),
            transport::TransportError::Other(why) => format!("exchange with {what} failed: {why}"),
        })
    })
}

pub use token_store::Entry as StoreEntry;

fn store_error(e: token_store::StoreError) -> ConnectorError {
    ConnectorError::TokenStore(match e {
        token_store::StoreError::Conflict(_) => "the entry changed concurrently".into(),
        token_store::StoreError::Unavailable(why) => why,
        token_store::StoreError::LockTimeout => {
            "timed out waiting for another caller's token request to finish".into()
        }
    })
}

pub fn load(key: &str) -> Result<Option<StoreEntry>, ConnectorError> {
    token_store::load(key).map_err(store_error)
}

/// `Ok(None)` when another writer got there first.
pub fn save(key: &str, expected: u64, value: Option<&str>) -> Result<Option<u64>, ConnectorError> {
    match token_store::save(key, expected, value) {
        Ok(version) => Ok(Some(version)),
        Err(token_store::StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(store_error(e)),
    }
}

/// The exclusive right to request a token for one store key; released on drop
/// so that every exit path, errors included, lets the next caller in.
pub struct Lease<'a> {
    key: &'a str,
    id: u64,
}

impl<'a> Lease<'a> {
    pub fn acquire(key: &'a str, ttl_ms: u32, timeout_ms: u32) -> Result<Self, ConnectorError> {
        let id = token_store::lock(key, ttl_ms, timeout_ms).map_err(store_error)?;
        Ok(Lease { key, id })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        token_store::unlock(self.key, self.id);
    }
}
