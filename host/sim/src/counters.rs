//! What the simulator has seen, for tests and for developers checking that a
//! pipeline is frugal with tokens and calls.
//!
//! Public shape followed: none; the JSON of `GET /__sim/counters` is the
//! simulator's own, counting what the gateway's usage analytics would show.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::lock;

/// Hostile or buggy clients can invent paths without end; the map stops
/// growing here and lumps the rest together.
const MAX_DISTINCT_PATHS: usize = 1000;
const OTHER_PATHS: &str = "(other paths)";

/// Token-endpoint requests by grant type, counted whether or not they succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenRequestCounts {
    pub password: u64,
    pub client_credentials: u64,
    pub refresh_token: u64,
    pub authorization_code: u64,
    pub saml_bearer: u64,
    /// Tokens handed out by the authorization endpoint (`response_type=token`).
    pub implicit: u64,
}

/// A snapshot of the simulator's counters (`GET /__sim/counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub token_requests: TokenRequestCounts,
    /// 429s sent by the quota policy, `/__sim/throttle` or a fault.
    pub rate_limited: u64,
    /// Answers replaced or delayed by `/__sim/faults`.
    pub faults_injected: u64,
    /// Error responses from the token endpoint (any grant, any reason).
    pub token_errors: u64,
    /// Refresh attempts with a refresh token that had already been rotated.
    pub refresh_token_reuse: u64,
    /// Accepted revocation requests, including those for unknown tokens.
    pub revocations: u64,
    /// Business requests that passed bearer authentication.
    pub api_calls: u64,
    /// 401 responses from business endpoints (token-endpoint client
    /// failures are counted in `token_errors` instead).
    pub unauthorized: u64,
    /// 403 responses: calls to an API suite the authorized app has no scope for.
    pub forbidden: u64,
    /// Requests sent to the wrong host: OAuth on `iu` or business on `pu`.
    pub wrong_host: u64,
    /// Every request the simulator received, control API included.
    pub requests: u64,
    /// Requests whose path, read as a lenient server would (decoded again
    /// and again, `\` as `/`, dot segments resolved), is not below
    /// `/{ti}/`: what a client that let a path escape the tenant sent.
    pub outside_tenant: u64,
    /// Authenticated business calls by URL path (no query string).
    pub calls_by_path: BTreeMap<String, u64>,
    pub messages_received: u64,
    /// Authenticated business calls being answered right now.
    pub in_flight: u64,
    /// The most business calls that were ever being answered at once.
    pub max_in_flight: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CounterStore {
    inner: Mutex<Counters>,
}

impl CounterStore {
    pub(crate) fn update(&self, change: impl FnOnce(&mut Counters)) {
        change(&mut lock(&self.inner));
    }

    pub(crate) fn snapshot(&self) -> Counters {
        lock(&self.inner).clone()
    }

    pub(crate) fn reset(&self) {
        *lock(&self.inner) = Counters::default();
    }

    pub(crate) fn count_token_request(&self, grant_type: &str) {
        self.update(|c| match grant_type {
            "password" => c.token_requests.password += 1,
            "client_credentials" => c.token_requests.client_credentials += 1,
            "refresh_token" => c.token_requests.refresh_token += 1,
            "authorization_code" => c.token_requests.authorization_code += 1,
            "urn:ietf:params:oauth:grant-type:saml2-bearer" => c.token_requests.saml_bearer += 1,
            _ => {}
        });
    }

    /// Marks a business call as being answered until the guard drops.
    pub(crate) fn call_started(&self) -> InFlightCall<'_> {
        self.update(|c| {
            c.in_flight += 1;
            c.max_in_flight = c.max_in_flight.max(c.in_flight);
        });
        InFlightCall { store: self }
    }

    pub(crate) fn count_api_call(&self, path: &str) {
        self.update(|c| {
            c.api_calls += 1;
            let key = if c.calls_by_path.contains_key(path)
                || c.calls_by_path.len() < MAX_DISTINCT_PATHS
            {
                path
            } else {
                OTHER_PATHS
            };
            *c.calls_by_path.entry(key.to_owned()).or_default() += 1;
        });
    }
}

pub(crate) struct InFlightCall<'a> {
    store: &'a CounterStore,
}

impl Drop for InFlightCall<'_> {
    fn drop(&mut self) {
        self.store
            .update(|c| c.in_flight = c.in_flight.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_map_is_bounded() {
        let store = CounterStore::default();
        for i in 0..MAX_DISTINCT_PATHS + 50 {
            store.count_api_call(&format!("/p/{i}"));
        }
        store.count_api_call("/p/0");
        let snap = store.snapshot();
        assert_eq!(snap.api_calls, (MAX_DISTINCT_PATHS + 51) as u64);
        assert_eq!(snap.calls_by_path.len(), MAX_DISTINCT_PATHS + 1);
        assert_eq!(snap.calls_by_path["/p/0"], 2);
        assert_eq!(snap.calls_by_path[OTHER_PATHS], 50);
        store.reset();
        assert_eq!(store.snapshot(), Counters::default());
    }

    #[test]
    fn calls_in_flight_and_their_peak() {
        let store = CounterStore::default();
        let first = store.call_started();
        let second = store.call_started();
        drop(first);
        let third = store.call_started();
        assert_eq!(store.snapshot().in_flight, 2);
        drop((second, third));
        let snap = store.snapshot();
        assert_eq!((snap.in_flight, snap.max_in_flight), (0, 2));
    }

    #[test]
    fn deserializes_partial_snapshots() {
        let c: Counters = serde_json::from_str(r#"{"api_calls":3}"#).unwrap();
        assert_eq!(c.api_calls, 3);
    }
}
