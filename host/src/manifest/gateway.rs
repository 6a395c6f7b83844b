//! Validation of the manifest's gateway-level sections: `[auth]` (bearer tokens),
//! `[aggregates.NAME]` (composite routes) and `[gateway]` (the OpenAPI document,
//! connection limits, admin host names).

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::raw::{RawAggregate, RawAuth, RawGateway};
use super::validate::{substitute_env, Checker};
use super::{Auth, ComponentSpec, GatewaySettings};
use panal_gateway::aggregate::{Aggregate, AggregateError, Part};

pub(super) fn auth(
    c: &mut Checker,
    raw: Option<RawAuth>,
    components: &[ComponentSpec],
    env: &dyn Fn(&str) -> Option<String>,
) -> Auth {
    let Some(raw) = raw else {
        return Auth::default();
    };
    let jwt_secret = raw
        .jwt_secret
        .and_then(|s| match substitute_env(s.get_ref(), env) {
            // Empty (e.g. `${PANAL_JWT_SECRET:-}` with the variable unset): generate one.
            Ok(v) if v.is_empty() => None,
            Ok(v) if v.len() < 16 => {
                c.problem(
                    Some(s.span()),
                    "auth.jwt_secret".into(),
                    "is too short: use at least 16 bytes (32 random bytes recommended)".into(),
                );
                None
            }
            Ok(v) => Some(v),
            Err(why) => {
                c.problem(Some(s.span()), "auth.jwt_secret".into(), why);
                None
            }
        });
    let mut issuers = Vec::new();
    for (i, name) in raw.issuers.iter().enumerate() {
        let field = format!("auth.issuers[{i}]");
        match components.iter().find(|comp| comp.name == *name.get_ref()) {
            None => c.problem(
                Some(name.span()),
                field,
                format!("`{}` is not a component of this manifest", name.get_ref()),
            ),
            Some(comp) if comp.config.iter().any(|(k, _)| k == "jwt_secret") => c.problem(
                Some(name.span()),
                field,
                format!(
                    "component `{}` already sets config `jwt_secret`; an issuer gets it from [auth]",
                    comp.name
                ),
            ),
            Some(comp) => issuers.push(comp.name.clone()),
        }
    }
    Auth {
        jwt_secret,
        issuers,
    }
}

pub(super) fn aggregates(
    c: &mut Checker,
    raw: BTreeMap<String, Spanned<RawAggregate>>,
    names: &[String],
) -> Vec<Aggregate> {
    let mut out = Vec::new();
    for (name, agg) in raw {
        let span = agg.span();
        let agg = agg.into_inner();
        let field = |f: &str| format!("aggregates.{name}.{f}");
        super::routes::check_roles(c, &agg.roles, &field(""), span.clone());
        let protected = agg.protected || !agg.roles.is_empty();
        let rate_limit = agg.rate_limit.as_ref().and_then(|raw| {
            super::routes::rate_limit(raw, protected)
                .map_err(|why| c.problem(Some(span.clone()), field("rate_limit"), why))
                .ok()
        });
        let mut parts = Vec::new();
        for (part, raw) in agg.parts {
            let raw = raw.into_inner();
            if !names.contains(raw.component.get_ref()) {
                c.problem(
                    Some(raw.component.span()),
                    field(&format!("parts.{part}.component")),
                    format!(
                        "`{}` is not a component of this manifest",
                        raw.component.get_ref()
                    ),
                );
            }
            parts.push(Part {
                name: part,
                component: raw.component.into_inner(),
                path: raw.path.into_inner(),
            });
        }
        let guard = panal_gateway::Route {
            prefix: agg.path.get_ref().clone(),
            methods: Some(vec![http::Method::GET]),
            component: format!("(aggregate {name})"),
            protected,
            roles: agg.roles,
            rate_limit,
            middleware: Vec::new(),
        };
        match Aggregate::new(guard, parts) {
            Ok(a) => out.push(a),
            Err(e @ AggregateError::Path(..)) => {
                c.problem(Some(agg.path.span()), field("path"), e.to_string());
            }
            Err(AggregateError::Part { part, why }) => {
                c.problem(Some(span.clone()), field(&format!("parts.{part}")), why);
            }
        }
    }
    out
}

/// `[gateway] openapi`: a JSON OpenAPI document whose every operation the gateway
/// routes (to a component or an aggregate), so the document cannot promise a path that
/// answers "no route". Its bytes are served as they are.
pub(super) fn openapi(
    c: &mut Checker,
    raw: &RawGateway,
    dir: &std::path::Path,
    table: &panal_gateway::RouteTable,
    aggregates: &[Aggregate],
) -> Option<Vec<u8>> {
    let file = raw.openapi.as_ref()?;
    let span = Some(file.span());
    let path = dir.join(file.get_ref());
    let problem = |c: &mut Checker, why: String| {
        c.problem(span.clone(), "gateway.openapi".into(), why);
        None
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return problem(c, format!("cannot read `{}`: {e}", path.display())),
    };
    let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => return problem(c, format!("`{}` is not JSON: {e}", path.display())),
    };
    let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) else {
        return problem(c, format!("`{}` has no `paths` object", path.display()));
    };
    if !doc.get("openapi").is_some_and(serde_json::Value::is_string) {
        return problem(c, format!("`{}` has no `openapi` version", path.display()));
    }
    let mut unrouted = Vec::new();
    for (pattern, item) in paths {
        let concrete: String = pattern
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let methods = item.as_object().into_iter().flat_map(|o| o.keys());
        for method in methods {
            let Ok(m) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue; // `parameters`, `summary` and the like
            };
            let routed = matches!(
                table.lookup(&m, &concrete),
                panal_gateway::RouteMatch::Found(_)
            ) || (m == http::Method::GET
                && aggregates
                    .iter()
                    .any(|a| same_pattern(a.pattern(), pattern)));
            if !routed {
                unrouted.push(format!("{} {pattern}", m.as_str()));
            }
        }
    }
    if !unrouted.is_empty() {
        return problem(
            c,
            format!(
                "documents operations no route serves: {}",
                unrouted.join(", ")
            ),
        );
    }
    Some(bytes)
}

/// `[gateway]`'s connection limits (each within a sane range) and admin host names.
pub(super) fn settings(c: &mut Checker, raw: &RawGateway, dir: &Path) -> GatewaySettings {
    let tls = raw.tls.as_ref().and_then(|t| tls_files(c, t, dir));
    let mut limits = panal_gateway::ConnLimits::default();
    let mut check = |field: &str, v: &Option<Spanned<i64>>, range: (i64, i64)| {
        c.in_range(format!("gateway.{field}"), v, range, "")
    };
    let ms = std::time::Duration::from_millis;
    if let Some(n) = check("header_timeout_ms", &raw.header_timeout_ms, (100, 600_000)) {
        limits.header_timeout = ms(n);
    }
    if let Some(n) = check("idle_timeout_ms", &raw.idle_timeout_ms, (100, 3_600_000)) {
        limits.idle_timeout = ms(n);
    }
    if let Some(n) = check("body_timeout_ms", &raw.body_timeout_ms, (100, 3_600_000)) {
        limits.body_timeout = ms(n);
    }
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if let Some(n) = check("max_connections", &raw.max_connections, (1, 1_000_000)) {
        limits.max_connections = count(n);
    }
    if let Some(n) = check(
        "max_connections_per_ip",
        &raw.max_connections_per_ip,
        (1, 1_000_000),
    ) {
        limits.max_connections_per_ip = count(n);
    }
    let mut max_rate_buckets = panal_gateway::ratelimit::MAX_BUCKETS;
    if let Some(n) = check("max_rate_buckets", &raw.max_rate_buckets, (100, 10_000_000)) {
        max_rate_buckets = count(n);
    }
    let mut admin_hosts = Vec::new();
    for (i, host) in raw.admin_hosts.iter().enumerate() {
        let name = host.get_ref().trim().to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if valid {
            admin_hosts.push(name);
        } else {
            c.problem(
                Some(host.span()),
                format!("gateway.admin_hosts[{i}]"),
                format!(
                    "`{}` is not a host name (like `ops.example.com` or `ops.example.com:8081`)",
                    host.get_ref()
                ),
            );
        }
    }
    GatewaySettings {
        limits,
        max_rate_buckets,
        admin_hosts,
        tls,
    }
}

/// `[gateway.tls]`'s files, which must exist (whether they hold a matching pair is
/// checked when the listener starts).
fn tls_files(c: &mut Checker, raw: &super::raw::RawTls, dir: &Path) -> Option<super::TlsFiles> {
    let (cert, key) = (dir.join(raw.cert.get_ref()), dir.join(raw.key.get_ref()));
    let mut ok = true;
    for (field, path, spanned) in [("cert", &cert, &raw.cert), ("key", &key, &raw.key)] {
        if !path.is_file() {
            let why = format!("{} is not a file", path.display());
            c.problem(Some(spanned.span()), format!("gateway.tls.{field}"), why);
            ok = false;
        }
    }
    ok.then_some(super::TlsFiles { cert, key })
}

/// Whether two path patterns are the same up to the names of their `{params}`.
fn same_pattern(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('/').collect();
    let b: Vec<&str> = b.split('/').collect();
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.starts_with('{') && y.starts_with('{')))
}
