//! Infor Federated Services user management: `users/me`, the call Infor
//! recommends for checking that a token works.
//!
//! Public shape followed: IFS `usermgt/v2/users/me`, answering
//! `{"response": {"userlist": [...]}}` with one SCIM-like user.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::SimState;
use super::codec::hex;

pub(crate) const SERVICE_USER: &str = "svc_ionflow@acme.example";

/// `GET /{ti}/ifsservice/usermgt/v2/users/me`
pub(crate) async fn me(State(state): State<Arc<SimState>>) -> Json<Value> {
    // A GUID that is stable per tenant, like a real IFS user id.
    let digest = hex(&Sha256::digest(format!("ifs-user:{}", state.config.tenant).as_bytes())[..16]);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &digest[..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    );
    Json(json!({
        "response": {
            "userlist": [{
                "id": id,
                "userName": SERVICE_USER,
                "displayName": "ionflow Service Account",
                "name": { "givenName": "ionflow", "familyName": "Service Account" },
                "email": SERVICE_USER,
                "title": "Integration Service Account",
                "status": "Active",
                "tenant": state.config.tenant,
            }]
        }
    }))
}
