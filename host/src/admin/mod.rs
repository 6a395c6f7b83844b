//! The admin API on the admin listener (JSON), which the `panal deploy|rollback|
//! undeploy|status` commands call:
//!
//! - `GET /healthz`
//! - `GET /metrics`: Prometheus text format
//! - `GET /components`: every component with version, routes and counters
//! - `PUT /components/NAME?route=/p&protected_route=/q&keyvalue=b&outbound=c&publish=s`
//!   with the `.wasm` as body: deploy (replace, keeping its routes, or add with those
//!   routes and grants); `routes=` (`routes = [...]` as in the manifest) gives complete
//!   routes, which replace a running component's
//! - `POST /components/NAME/rollback`, `DELETE /components/NAME`
//! - `GET /roles`, `PUT|DELETE /roles/ACCOUNT/ROLE`: operator-granted roles (`roles.rs`)
//!
//! With `PANAL_ADMIN_TOKEN` set, everything but `/healthz` needs
//! `Authorization: Bearer TOKEN`; without it the listener must be on loopback.
//!
//! Browsers are kept out whatever the token: a request with an `Origin` header (a web
//! page's fetch or form) is refused, and so is one whose `Host` is neither the address
//! the connection was accepted on (`localhost:PORT` too, on loopback) nor one of the
//! manifest's `[gateway] admin_hosts`, which defeats DNS rebinding.

mod roles;

use std::sync::Arc;

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use panal_gateway::server::Gateway;
use panal_gateway::{json_error, json_response, Body};
use serde_json::json;

use crate::registry::deploy::{DeployRequest, Outcome};
use crate::registry::store::Grants;
use crate::registry::Registry;
use crate::triggers::cluster::Cluster;

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
        let path = req.uri().path().to_string();
        if req.method() == Method::GET && path == "/healthz" {
            return json_response(StatusCode::OK, &json!({ "status": "ok" }));
        }
        if let Err(why) = self.same_site(&req) {
            tracing::warn!(%path, reason = %why, "admin request refused");
            return json_error(
                StatusCode::FORBIDDEN,
                "admin request refused",
                json!({ "reason": why }),
            );
        }
        if let Some(token) = &self.token {
            if !bearer_matches(req.headers(), token) {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "admin token required",
                    json!({ "reason": "send Authorization: Bearer $PANAL_ADMIN_TOKEN" }),
                );
            }
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(answer) = self.roles(req.method(), &segments).await {
            return answer;
        }
        // The routes a deploy sets, which the cluster's other hosts take too.
        let mut routes = None;
        let elsewhere = |name: &str| {
            self.cluster
                .as_ref()
                .filter(|c| c.runs_elsewhere(name) && self.registry.current(name).is_none())
        };
        let result = match (req.method().clone(), segments.as_slice()) {
            (Method::GET, ["components"]) => {
                let mut status = self.registry.status();
                if let Some(cluster) = &self.cluster {
                    status["hosts"] = json!(cluster.hosts().await);
                }
                return json_response(StatusCode::OK, &status);
            }
            (Method::GET, ["metrics"]) => return metrics(self.metrics_text()),
            (Method::PUT, ["components", name]) => {
                let name = (*name).to_string();
                let query = req.uri().query().unwrap_or("");
                let (deploy, bare) = match deploy_request(query, &name, &self.registry.names()) {
                    Ok(d) => d,
                    Err(why) => return bad_request(&why),
                };
                if bare && (self.registry.current(&name).is_some() || elsewhere(&name).is_some()) {
                    return bad_request(&format!(
                        "`{name}` is running, and a redeploy keeps its routes with their roles, \
                         methods, middleware and rate limits; bare prefixes (route, \
                         protected_route) only start a new component. To replace its routes, \
                         give them complete: `panal deploy {name} FILE --routes ROUTES.toml` \
                         (`routes = [...]` as in the manifest)"
                    ));
                }
                let bytes = match Limited::new(req.into_body(), MAX_UPLOAD).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return bad_request(&format!("cannot read the upload: {e}")),
                };
                routes.clone_from(&deploy.routes);
                if let Some(cluster) = elsewhere(&name) {
                    let published = cluster
                        .publish_elsewhere(&self.registry, &name, &bytes, routes.as_deref())
                        .await;
                    return published_elsewhere(&name, published.map(Some));
                }
                self.registry.deploy(&name, &bytes, deploy).await
            }
            (Method::POST, ["components", name, "rollback"]) if elsewhere(name).is_some() => {
                let why = "it runs only on other hosts of the cluster: send the rollback to \
                           one of them (`panal status` lists them)";
                return published_elsewhere(name, Err(why.into()));
            }
            (Method::POST, ["components", name, "rollback"]) => self.registry.rollback(name).await,
            (Method::DELETE, ["components", name]) => match elsewhere(name) {
                Some(cluster) => {
                    let published = cluster.publish_undeploy(name).await.map(|()| None);
                    return published_elsewhere(name, published);
                }
                None => self.registry.undeploy(name).await,
            },
            _ => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "no such admin endpoint",
                    json!({ "path": path, "method": req.method().as_str() }),
                )
            }
        };
        match result {
            Ok(outcome) => {
                follow_routes(&self.registry, &self.gateway, &outcome);
                let mut answer = outcome.json();
                if let Some(cluster) = &self.cluster {
                    let published = cluster
                        .publish(&self.registry, &outcome, routes.as_deref())
                        .await;
                    if let Err(why) = &published {
                        tracing::error!(component = %outcome.name, %why, "the change stays on this host: not published to the cluster");
                    }
                    answer["published"] = json!(published.is_ok());
                }
                json_response(StatusCode::OK, &answer)
            }
            Err(why) => {
                let phase = why.phase.name();
                tracing::warn!(%path, error = %why, phase, "admin change refused");
                json_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refused; nothing changed",
                    json!({ "reason": why.message, "phase": phase, "component": why.component }),
                )
            }
        }
    }

    /// The registry's counters and the gateway's and the broker's own.
    fn metrics_text(&self) -> String {
        let mut text = self.registry.metrics();
        crate::metrics::single(
            &mut text,
            "panal_gateway_rate_buckets",
            "gauge",
            "Rate-limit buckets the gateway keeps (at most [gateway] max_rate_buckets).",
            self.gateway.rate_buckets() as u64,
        );
        let dead = self
            .registry
            .backends()
            .broker
            .as_ref()
            .map_or(0, |b| b.dead_lettered());
        crate::metrics::single(
            &mut text,
            "panal_outbox_dead_lettered_total",
            "counter",
            "Durable messages the outbox gave up on (kept in outbox.db, table outbox_dead).",
            dead,
        );
        let memory = &self.registry.backends().memory;
        for (name, kind, help, value) in [
            (
                "panal_guest_memory_budget_bytes",
                "gauge",
                "The host-wide budget of guest memory (--guest-memory-mb).",
                memory.total(),
            ),
            (
                "panal_guest_memory_used_bytes",
                "gauge",
                "Linear memory live instances have grown to, all components together.",
                memory.used(),
            ),
            (
                "panal_guest_memory_refused_total",
                "counter",
                "Instances refused for want of guest memory budget: not admitted in time, \
                 or memory growth past it (503).",
                memory.refused(),
            ),
        ] {
            crate::metrics::single(&mut text, name, kind, help, value);
        }
        if let Some(cluster) = &self.cluster {
            crate::metrics::labelled(
                &mut text,
                "panal_cluster_refused_total",
                "counter",
                "Calls and desired versions from the cluster refused: unsigned, bad_seal, stale, replayed, invalid.",
                "reason",
                &cluster.refusals(),
            );
        }
        text
    }

    /// Refuse what a browser could send on a web page's behalf (see the module doc).
    fn same_site<B>(&self, req: &http::Request<B>) -> Result<(), String> {
        if req.headers().contains_key(http::header::ORIGIN) {
            return Err("requests with an Origin header (from a web page) are not accepted".into());
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .ok_or("a Host header is required")?
            .to_ascii_lowercase();
        let local = req
            .extensions()
            .get::<panal_gateway::server::LocalAddr>()
            .map(|l| l.0);
        if host_allowed(&host, local, &self.hosts) {
            Ok(())
        } else {
            Err(format!(
                "Host `{host}` is not this listener's address; add it to [gateway] admin_hosts"
            ))
        }
    }
}

/// After `outcome`, give `gateway` the registry's routes if they changed.
pub fn follow_routes(registry: &Registry, gateway: &Gateway, outcome: &Outcome) {
    if !outcome.routes_changed {
        return;
    }
    match panal_gateway::RouteTable::new(registry.routes()) {
        Ok(table) => gateway.set_routes(table),
        // Checked before the swap; reaching this is a bug worth a loud line.
        Err(e) => tracing::error!(%e, "route table rejected after a deploy"),
    }
}

/// The answer to a change of a component that runs only on other hosts: published
/// (with the new version's sha256, none for an undeploy), or refused and why.
fn published_elsewhere(
    name: &str,
    published: Result<Option<String>, String>,
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
                json!({ "reason": why, "phase": "request", "component": name }),
            )
        }
    }
}

fn metrics(text: String) -> http::Response<Body> {
    let mut resp = http::Response::new(panal_gateway::full(text));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn bad_request(why: &str) -> http::Response<Body> {
    json_error(
        StatusCode::BAD_REQUEST,
        "bad deploy request",
        json!({ "reason": why }),
    )
}

fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(got) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time in the token's length: no early exit on the first difference.
    got.len() == token.len()
        && got
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether `host` (a `Host` value, lowercased) names the listener at `local` or one of
/// `names` (a name alone matches on any port).
fn host_allowed(host: &str, local: Option<std::net::SocketAddr>, names: &[String]) -> bool {
    if names.iter().any(|n| {
        n == host
            || host
                .rsplit_once(':')
                .is_some_and(|(name, port)| n == name && port.bytes().all(|b| b.is_ascii_digit()))
    }) {
        return true;
    }
    let Some(local) = local else {
        return false;
    };
    if host == local.to_string() {
        return true;
    }
    local.ip().is_loopback() && host == format!("localhost:{}", local.port())
}

/// Routes and grants from the query string, and whether the routes were bare prefixes
/// (`route`, `protected_route`: only for a new component) rather than complete ones
/// (`routes`: `routes = [...]` in the manifest's syntax and rules; `names`: the
/// components a middleware may name).
fn deploy_request(
    query: &str,
    name: &str,
    names: &[String],
) -> Result<(DeployRequest, bool), String> {
    let mut routes = Vec::new();
    let mut complete = None;
    let mut grants = Grants::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "routes" if complete.is_none() => {
                let label = std::path::Path::new("routes");
                let parsed = crate::manifest::Manifest::routes(label, &value, name, names)
                    .map_err(|e| e.to_string())?;
                complete = Some(parsed);
            }
            "route" | "protected_route" => routes.push(panal_gateway::Route {
                prefix: value,
                methods: None,
                component: name.to_string(),
                protected: key == "protected_route",
                roles: Vec::new(),
                rate_limit: None,
                middleware: Vec::new(),
            }),
            "keyvalue" => grants.keyvalue.push(value),
            "outbound" => grants.outbound.push(value),
            "publish" => {
                if let Some(why) = crate::manifest::subject::unusable(&value, true) {
                    return Err(format!("publish: {why}"));
                }
                grants.publish.push(value);
            }
            other => return Err(format!("unknown or repeated parameter `{other}`")),
        }
    }
    let bare = !routes.is_empty();
    if bare && complete.is_some() {
        return Err(
            "give either complete routes (routes) or bare prefixes (route), not both".into(),
        );
    }
    let routes = complete.or((!routes.is_empty()).then_some(routes));
    Ok((DeployRequest { routes, grants }, bare))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut h = http::HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("hv"),
        );
        assert!(bearer_matches(&h, "s3cret"));
        assert!(!bearer_matches(&h, "s3cre"));
        assert!(!bearer_matches(&h, "s3cret!"));
    }

    #[test]
    fn deploy_parameters_are_read_and_checked() {
        let names = ["c".to_string(), "audit".to_string()];
        let (d, bare) = deploy_request(
            "route=%2Fa&protected_route=/b&keyvalue=kv&publish=x.*",
            "c",
            &names,
        )
        .expect("ok");
        assert!(bare);
        let routes = d.routes.expect("routes");
        assert_eq!(routes[0].prefix, "/a");
        assert!(routes[1].protected);
        assert_eq!(d.grants.keyvalue, ["kv"]);
        assert!(deploy_request("routes=/a", "c", &names).is_err());
        assert!(deploy_request("publish=a..b", "c", &names).is_err());
        let complete = "routes = [{ prefix = \"/p\", methods = [\"POST\"], roles = [\"admin\"], middleware = [\"audit\"] }]";
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("routes", complete)
            .finish();
        let (d, bare) = deploy_request(&query, "c", &names).expect("complete");
        assert!(!bare);
        let route = &d.routes.expect("routes")[0];
        assert!(route.protected && route.roles == ["admin"] && route.middleware == ["audit"]);
        let zero = "routes = [{ prefix = \"/p\", rate_limit = { per_ip = \"0/s\" } }]";
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("routes", zero)
            .finish();
        let err = deploy_request(&query, "c", &names).expect_err("a rate of 0");
        assert!(err.contains("components.c.routes[0].rate_limit"), "{err}");
    }

    #[test]
    fn only_the_listeners_own_address_or_a_configured_name_is_a_good_host() {
        let local: std::net::SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let names = vec!["ops.example.com".to_string(), "panal:9000".to_string()];
        for good in [
            "127.0.0.1:8081",
            "localhost:8081",
            "ops.example.com",
            "ops.example.com:8081",
            "panal:9000",
        ] {
            assert!(host_allowed(good, Some(local), &names), "{good}");
        }
        for bad in [
            "evil.example:8081",
            "127.0.0.1:8082",
            "localhost:80",
            "panal:9001",
            "panal",
            "ops.example.com:x",
        ] {
            assert!(!host_allowed(bad, Some(local), &names), "{bad}");
        }
        let public: std::net::SocketAddr = "10.0.0.5:8081".parse().expect("addr");
        assert!(host_allowed("10.0.0.5:8081", Some(public), &[]));
        assert!(!host_allowed("localhost:8081", Some(public), &[]));
    }
}
