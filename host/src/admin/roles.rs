//! The admin API's roles endpoints, which `panal roles grant|revoke|list` calls:
//!
//! - `GET /roles`: every grant, `{"grants": {ACCOUNT: [ROLE, ...]}}`
//! - `PUT /roles/ACCOUNT/ROLE`: grant; `DELETE /roles/ACCOUNT/ROLE`: revoke (each part
//!   percent-encoded); the answer says whether anything changed and what the account
//!   holds now.
//!
//! In a cluster the change is made in the cluster's roles bucket, which every host
//! follows; refused there, nothing changes anywhere (503 while the cluster's NATS
//! fails, 422 for a change the rules refuse).

use http::StatusCode;
use panal_gateway::{json_error, json_response, Body};
use serde_json::json;

use super::Admin;
use crate::roles::Change;

impl Admin {
    /// `GET /roles`.
    pub(super) fn roles(&self) -> http::Response<Body> {
        let grants = self.roles.table().grants;
        json_response(StatusCode::OK, &json!({ "grants": grants }))
    }

    /// `PUT|DELETE /roles/ACCOUNT/ROLE` (each percent-encoded).
    pub(super) async fn change_roles(
        &self,
        change: Change,
        account: &str,
        role: &str,
    ) -> http::Response<Body> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (user, role) = (decode(account), decode(role));
        // The cluster's NATS failing (a server lost, a leader being elected) is worth
        // trying again in a moment: 503. Anything else refuses the change itself: 422.
        let changed = match &self.cluster {
            Some(cluster) => cluster
                .change_roles(&self.roles, change, &user, &role)
                .await
                .map_err(|e| {
                    let status = match e {
                        crate::cluster::ClusterError::Nats(_) => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::UNPROCESSABLE_ENTITY,
                    };
                    (status, e.to_string())
                }),
            None => self
                .roles
                .change(change, &user, &role)
                .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        };
        match changed {
            Ok(changed) => {
                let held = self.roles.table().grants.remove(&user).unwrap_or_default();
                tracing::info!(account = %user, role, ?change, changed, "roles changed by the operator");
                json_response(
                    StatusCode::OK,
                    &json!({ "account": user, "role": role, "changed": changed, "roles": held }),
                )
            }
            Err((status, why)) => {
                tracing::warn!(account = %user, role, %why, "roles change refused");
                let refused =
                    json_error(status, "refused; nothing changed", json!({ "reason": why }));
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    return crate::runtime::failure::retry_soon(refused);
                }
                refused
            }
        }
    }
}
