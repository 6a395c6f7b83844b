//! The public listener's request handling (request ids, routes, auth, rate limits,
//! aggregates, the access log) and [`serve`], which runs it on [`accept_loop`]
//! (`accept.rs`, shared with the host's admin listener: connection guards, HTTPS,
//! graceful shutdown).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode};
use tokio::net::TcpListener;

use http_body_util::BodyExt;

use crate::aggregate::Aggregate;
use crate::auth::{self, Verifier};
use crate::conn::{ConnLimits, Deadline};
use crate::routes::{self, Route, RouteMatch, RouteTable};
use crate::{json_error, request_id, Backend, Body, BoxError, Request};

/// Most bytes of request headers (names and values) the gateway takes: 431 beyond.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The peer of the connection a request came on (set by [`accept_loop`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The local address a request's connection was accepted on (set by [`accept_loop`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// The route table a gateway follows: a new one sent on its channel takes effect with
/// the next request.
pub type Routes = tokio::sync::watch::Receiver<Arc<RouteTable>>;

/// The public side: route table, aggregates, auth, and the backend that runs components.
pub struct Gateway {
    /// The route table, swapped whole by whoever holds the sender (the host's registry)
    /// when a deploy adds, changes or removes routes; read once per request.
    routes: Routes,
    backend: Arc<dyn Backend>,
    auth: Option<Verifier>,
    aggregates: Vec<Aggregate>,
    limiter: crate::ratelimit::Limiter,
    /// Served at `GET /openapi.json`.
    openapi: Option<bytes::Bytes>,
    /// Connection and body limits of the public listener.
    limits: ConnLimits,
    /// Told of every request (traces), when set.
    observer: Option<Arc<dyn crate::Observer>>,
    /// Takes the access records, when set; else they are `tracing` events.
    access: Option<Arc<dyn crate::access::AccessLog>>,
    /// HTTPS, when the gateway has a certificate.
    tls: Option<crate::tls::Acceptor>,
    /// The roles the operator granted each account (none without it).
    roles: Option<Arc<dyn auth::RoleSource>>,
}

impl Gateway {
    /// A gateway over the route table `routes` follows, answering through `backend`.
    /// Protected routes and aggregates need `auth`; without it they answer 401.
    pub fn new(
        routes: Routes,
        backend: Arc<dyn Backend>,
        auth: Option<Verifier>,
        aggregates: Vec<Aggregate>,
    ) -> Self {
        Self {
            routes,
            backend,
            auth,
            aggregates,
            limiter: crate::ratelimit::Limiter::default(),
            openapi: None,
            limits: ConnLimits::default(),
            observer: None,
            access: None,
            tls: None,
            roles: None,
        }
    }

    /// Look up the roles of a verified user in `roles`, on every request.
    #[must_use]
    pub fn with_roles(mut self, roles: Arc<dyn auth::RoleSource>) -> Self {
        self.roles = Some(roles);
        self
    }

    /// Keep at most `max` rate-limit buckets (default [`crate::ratelimit::MAX_BUCKETS`]).
    #[must_use]
    pub fn with_rate_buckets(mut self, max: usize) -> Self {
        self.limiter = crate::ratelimit::Limiter::new(max);
        self
    }

    /// Rate-limit buckets kept now.
    pub fn rate_buckets(&self) -> usize {
        self.limiter.len()
    }

    /// Guard connections and request bodies with `limits` (default: [`ConnLimits`]'s).
    #[must_use]
    pub fn with_limits(mut self, limits: ConnLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serve HTTPS with `tls` (see [`crate::tls::acceptor`]).
    #[must_use]
    pub fn with_tls(mut self, tls: crate::tls::Acceptor) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Tell `observer` of every request.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn crate::Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Hand the access records to `log` instead of `tracing`.
    #[must_use]
    pub fn with_access_log(mut self, log: Arc<dyn crate::access::AccessLog>) -> Self {
        self.access = Some(log);
        self
    }

    /// Serve `doc` (JSON) at `GET /openapi.json`.
    #[must_use]
    pub fn with_openapi(mut self, doc: impl Into<bytes::Bytes>) -> Self {
        self.openapi = Some(doc.into());
        self
    }

    /// Route and answer one request, and log it (the access line).
    pub async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
        let started = Instant::now();
        let body_timeout = self.limits.body_timeout;
        // Only a request with a body gets a deadline (and its allocations).
        let mut tripped = None;
        let mut req: Request = req.map(|b| {
            let body = b.map_err(box_error).boxed_unsync();
            if http_body::Body::is_end_stream(&body) {
                return body;
            }
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tripped = Some(flag.clone());
            Deadline::new(body, body_timeout, flag).boxed_unsync()
        });
        crate::hop::strip(req.headers_mut());
        let id = request_id::take_or_make(req.headers());
        req.headers_mut().insert(request_id::HEADER, id.clone());
        // Only the gateway speaks for the caller's identity, roles and address.
        auth::strip_reserved(req.headers_mut());
        if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() {
            if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
                req.headers_mut().insert(auth::CLIENT_IP_HEADER, v);
            }
        }
        // What the access line says of the request, taken before it is handed on.
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let observed = self.observer.as_ref().and_then(|o| o.start(&mut req));
        let mut served = Served::default();
        let mut resp = self.dispatch(req, &mut served).await;
        if tripped
            .as_ref()
            .is_some_and(|t| t.load(std::sync::atomic::Ordering::Relaxed))
        {
            resp = request_timeout(body_timeout);
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let access = crate::access::Access {
            id: id.to_str().unwrap_or("-"),
            method: method.as_str(),
            path: uri.path(),
            component: &served.component,
            route: &served.route,
            status: resp.status().as_u16(),
            micros,
        };
        crate::access::record(self.access.as_deref(), &access);
        if let Some(observed) = observed {
            observed.finish(resp.status(), &served.component, &served.route);
        }
        resp.headers_mut().insert(request_id::HEADER, id);
        resp
    }

    async fn dispatch(&self, mut req: Request, served: &mut Served) -> http::Response<Body> {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return json_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers too large",
                serde_json::json!({ "bytes": header_bytes, "limit": MAX_HEADER_BYTES }),
            );
        }
        let path = req.uri().path().to_string();
        if let Err(why) = routes::canonical(&path) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "non-canonical path",
                serde_json::json!({ "path": path, "reason": why }),
            );
        }
        if path == "/openapi.json" && req.method() == http::Method::GET {
            if let Some(doc) = &self.openapi {
                let mut resp = http::Response::new(crate::full(doc.clone()));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return resp;
            }
        }
        if let Some((agg, params)) = self
            .aggregates
            .iter()
            .find_map(|a| a.matches(req.method(), &path).map(|p| (a, p)))
        {
            served.component = "(aggregate)".to_string();
            served.route = agg.pattern().to_string();
            return self.aggregate(agg, &params, req).await;
        }
        // Requests already routed keep the table they were routed by.
        let table = self.routes.borrow().clone();
        match table.lookup(req.method(), &path) {
            RouteMatch::Found(route) => {
                served.component.clone_from(&route.component);
                served.route.clone_from(&route.prefix);
                if let Err(refusal) = self.admit(route, &mut req) {
                    return *refusal;
                }
                // With middleware the first one takes the request, the rest of the
                // chain (ending with the route's component) rides along as its next.
                let first = match route.middleware.split_first() {
                    None => route.component.clone(),
                    Some((first, rest)) => {
                        let mut next: Vec<String> = rest.to_vec();
                        next.push(route.component.clone());
                        req.extensions_mut().insert(crate::Next(next.into()));
                        first.clone()
                    }
                };
                drop(table);
                self.backend.handle(&first, req).await
            }
            RouteMatch::MethodNotAllowed(allowed) => method_not_allowed(&req, &allowed),
            RouteMatch::NotFound => json_error(
                StatusCode::NOT_FOUND,
                "no route for this path",
                serde_json::json!({ "path": path }),
            ),
        }
    }

    /// Answer an aggregate route, guarded like any route.
    async fn aggregate(
        &self,
        agg: &Aggregate,
        params: &[(String, String)],
        mut req: Request,
    ) -> http::Response<Body> {
        if let Err(refusal) = self.admit(agg.guard(), &mut req) {
            return *refusal;
        }
        let mut caller = http::HeaderMap::new();
        for name in [auth::USER_ID_HEADER, auth::ROLES_HEADER, request_id::HEADER] {
            if let Some(v) = req.headers().get(name) {
                caller.insert(name, v.clone());
            }
        }
        drop(req);
        agg.answer(self.backend.as_ref(), params, caller).await
    }

    /// Let `req` through to `route`: the token, and the roles granted to its user,
    /// when the route is protected (the verified user then rides in
    /// [`auth::USER_ID_HEADER`], the roles in [`auth::ROLES_HEADER`]), and the route's
    /// rate limit; else the refusal to send.
    fn admit(&self, route: &Route, req: &mut Request) -> Result<(), Box<http::Response<Body>>> {
        let mut user = None;
        if route.protected {
            let mut identity = self
                .authenticate(req.headers())
                .map_err(|why| Box::new(unauthorized(&why)))?;
            identity.roles = self.roles.as_ref().and_then(|r| r.roles_of(&identity.user));
            if !identity.has_any_role(&route.roles) {
                return Err(Box::new(forbidden(&route.roles)));
            }
            let v = HeaderValue::from_str(&identity.user)
                .map_err(|_| Box::new(unauthorized("token subject is not a valid header value")))?;
            req.headers_mut().insert(auth::USER_ID_HEADER, v);
            if let Some(v) = identity
                .roles
                .as_deref()
                .filter(|r| !r.is_empty())
                .and_then(|r| HeaderValue::from_str(&r.join(",")).ok())
            {
                req.headers_mut().insert(auth::ROLES_HEADER, v);
            }
            user = Some(identity.user);
        }
        if let Some(limit) = &route.rate_limit {
            let ip = req.extensions().get::<ClientAddr>().map(|a| a.0.ip());
            self.limiter
                .check(&route.prefix, limit, ip, user.as_deref())
                .map_err(|wait| Box::new(too_many(&route.prefix, wait)))?;
        }
        Ok(())
    }

    /// The verified identity of a request to a protected route, or why it gets 401.
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<auth::Identity, String> {
        let Some(verifier) = &self.auth else {
            return Err("authentication is not configured".into());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        verifier.verify_headers(headers, now).map_err(|err| {
            tracing::info!(%err, "refused a bearer token");
            err.to_string()
        })
    }
}

fn too_many(route: &str, wait: Duration) -> http::Response<Body> {
    let secs = crate::ratelimit::retry_after_secs(wait);
    tracing::info!(route, retry_after_s = secs, "rate limited; answering 429");
    let mut resp = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limit exceeded",
        serde_json::json!({ "route": route, "retry_after_s": secs }),
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn request_timeout(limit: Duration) -> http::Response<Body> {
    let mut resp = json_error(
        StatusCode::REQUEST_TIMEOUT,
        "request body too slow",
        serde_json::json!({ "limit": "body_timeout_ms", "ms": limit.as_millis() }),
    );
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn box_error(e: hyper::Error) -> BoxError {
    Box::new(e)
}

fn unauthorized(reason: &str) -> http::Response<Body> {
    let mut resp = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        serde_json::json!({ "reason": reason }),
    );
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    resp
}

fn forbidden(roles: &[String]) -> http::Response<Body> {
    tracing::info!(
        ?roles,
        "token lacks a role the route requires; answering 403"
    );
    json_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        serde_json::json!({
            "reason": format!("this route needs one of the roles: {}", roles.join(", ")),
        }),
    )
}

fn method_not_allowed<B>(req: &http::Request<B>, allowed: &[http::Method]) -> http::Response<Body> {
    let names: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
    let mut resp = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
        serde_json::json!({ "method": req.method().as_str(), "allowed": names }),
    );
    if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
        resp.headers_mut().insert(http::header::ALLOW, v);
    }
    resp
}

pub use crate::accept::accept_loop;

/// Serve the public listener until `shutdown` resolves (HTTPS when the gateway has a
/// certificate: [`Gateway::with_tls`]).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = gateway.limits;
    let tls = gateway.tls.clone();
    accept_loop(listener, limits, tls, shutdown, move |req| {
        let gateway = gateway.clone();
        async move { gateway.handle(req).await }
    })
    .await
}

/// Which component and route answered a request, for its access-log line.
#[derive(Default)]
struct Served {
    component: String,
    route: String,
}
