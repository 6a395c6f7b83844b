//! The admin API on the admin listener (JSON), which the `panal deploy|rollback|
//! undeploy|status|roles` commands call. `handle` checks who asks (`guard.rs`), then
//! hands the request to its command, one per file:
//!
//! - `GET /healthz` (open to all)
//! - `GET /metrics`: Prometheus text format (`metrics.rs`)
//! - `GET /components`: every component with version, routes and counters (`status.rs`)
//! - `PUT /components/NAME`: deploy (`deploy.rs`)
//! - `POST /components/NAME/rollback` (`rollback.rs`), `DELETE /components/NAME`
//!   (`undeploy.rs`)
//! - `GET /roles`, `PUT|DELETE /roles/ACCOUNT/ROLE`: operator-granted roles (`roles.rs`)

mod deploy;
mod guard;
mod metrics;
mod roles;
mod rollback;
mod status;
mod undeploy;

use std::sync::Arc;

use http::{Method, StatusCode};
use panal_gateway::server::Gateway;
use panal_gateway::{json_error, json_response, Body};
use serde_json::json;

use crate::cluster::Cluster;
use crate::registry::deploy::Outcome;
use crate::registry::error::ChangeError;
use crate::registry::Registry;
use crate::roles::Change;

/// The largest `.wasm` a deploy takes.
pub const MAX_UPLOAD: usize = 256 << 20;

/// What the admin API acts on.
pub struct Admin {
    /// The components.
    pub registry: Arc<Registry>,
    /// Whose route table follows deploys.
    pub gateway: Arc<Gateway>,
    /// Bearer token, when required.
    pub token: Option<String>,
    /// `Host` names accepted besides the listener's own address.
    pub hosts: Vec<String>,
    /// The cluster this host is part of: changes made here are published to it, and
    /// components that run only elsewhere are deployed through it.
    pub cluster: Option<Arc<Cluster>>,
    /// The roles the operator grants (the gateway looks them up).
    pub roles: Arc<crate::roles::Roles>,
}

impl Admin {
    /// Answer one admin request.
    pub async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if method == Method::GET && path == "/healthz" {
            return json_response(StatusCode::OK, &json!({ "status": "ok" }));
        }
        if let Some(refusal) = self.refusal(&req) {
            return refusal;
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["components"]) => self.status().await,
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::PUT, ["components", name]) => self.deploy(name, req).await,
            (&Method::POST, ["components", name, "rollback"]) => self.rollback(name).await,
            (&Method::DELETE, ["components", name]) => self.undeploy(name).await,
            (&Method::GET, ["roles"]) => self.roles(),
            (&Method::PUT, ["roles", account, role]) => {
                self.change_roles(Change::Grant, account, role).await
            }
            (&Method::DELETE, ["roles", account, role]) => {
                self.change_roles(Change::Revoke, account, role).await
            }
            _ => json_error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint",
                json!({ "path": path, "method": method.as_str() }),
            ),
        }
    }

    /// The cluster, when `name` runs only on its other hosts.
    fn elsewhere(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.cluster
            .as_ref()
            .filter(|c| c.runs_elsewhere(name) && self.registry.current(name).is_none())
    }

    /// Make a change of `name` here (`change`, not started yet) and, on a cluster, tell
    /// the cluster's other hosts of it (with `routes`, those a deploy set). On a
    /// cluster the change is made only once the cluster's NATS answers, so a host cut
    /// off from it refuses (503, nothing changed) rather than drift from the others;
    /// one that loses NATS between its change and the publish answers 503 too, and
    /// goes back to the cluster's version of `name` once NATS answers again.
    async fn changed(
        &self,
        name: &str,
        change: impl std::future::Future<Output = Result<Outcome, ChangeError>>,
        routes: Option<&[panal_gateway::Route]>,
    ) -> http::Response<Body> {
        if let Some(cluster) = &self.cluster {
            if let Err(why) = cluster.reachable(name).await {
                tracing::warn!(component = name, %why, "admin change refused: the cluster cannot take it now");
                return unavailable("refused; nothing changed", &why.to_string());
            }
        }
        let outcome = match change.await {
            Ok(outcome) => outcome,
            Err(why) => {
                let phase = why.phase.name();
                tracing::warn!(component = %why.component, error = %why, phase, "admin change refused");
                return json_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refused; nothing changed",
                    json!({ "reason": why.message, "phase": phase, "component": why.component }),
                );
            }
        };
        let mut answer = outcome.json();
        if let Some(cluster) = &self.cluster {
            if let Err(why) = cluster.publish(&self.registry, &outcome, routes).await {
                tracing::error!(component = %outcome.name, %why, "a change made here could not be published; going back to the cluster's version once NATS answers");
                cluster.rejoin(self.registry.clone(), outcome.name.clone());
                return unavailable(
                    "changed on this host only, and only until it reaches the cluster's NATS again: send the change again",
                    &why.to_string(),
                );
            }
            answer["published"] = json!(true);
        }
        json_response(StatusCode::OK, &answer)
    }
}

/// 503 with `Retry-After`: the cluster's NATS could not take a change now.
fn unavailable(error: &str, why: &str) -> http::Response<Body> {
    crate::runtime::failure::retry_soon(json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        error,
        json!({ "reason": why }),
    ))
}

/// The answer to a change of a component that runs only on other hosts: published
/// (with the new version's sha256, none for an undeploy), or refused and why.
fn published_elsewhere(
    name: &str,
    published: Result<Option<String>, impl std::fmt::Display>,
) -> http::Response<Body> {
    match published {
        Ok(sha) => {
            let version = sha.as_deref().map(|s| s.get(..12).unwrap_or(s));
            json_response(
                StatusCode::OK,
                &json!({ "name": name, "version": version, "published": true, "here": false }),
            )
        }
        Err(why) => {
            tracing::warn!(component = name, %why, "admin change refused");
            json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused; nothing changed",
                json!({ "reason": why.to_string(), "phase": "request", "component": name }),
            )
        }
    }
}

fn bad_request(why: &str) -> http::Response<Body> {
    json_error(
        StatusCode::BAD_REQUEST,
        "bad deploy request",
        json!({ "reason": why }),
    )
}
