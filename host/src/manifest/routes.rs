//! Validation of a component's `routes`: methods, roles, rate limits, middleware, and
//! the prefix syntax (the gateway's own rule, asked here so an error gets its line).
//! Roles and rate limits are checked the same way for aggregates.

use http::Method;
use toml::Spanned;

use super::raw::{RawRateLimit, RawRoute};
use super::validate::Checker;

/// How many middleware components one route may put in front of its component (each is
/// an in-process hop, and hops are bounded by the loop guard).
pub const MAX_MIDDLEWARE: usize = 8;

/// The routes of component `name` (`names`: every component of the manifest); a bad
/// one is reported and left out.
pub(super) fn routes(
    c: &mut Checker,
    name: &str,
    names: &[String],
    raw: &[Spanned<RawRoute>],
) -> Vec<panal_gateway::Route> {
    let field = |f: &str| format!("components.{name}.{f}");
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let route = r.get_ref();
        let methods = route.methods.as_ref().map(|ms| {
            ms.iter()
                .filter_map(|m| match parse_method(m) {
                    Ok(m) => Some(m),
                    Err(why) => {
                        c.problem(Some(r.span()), field(&format!("routes[{i}].methods")), why);
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let at = field(&format!("routes[{i}]"));
        check_roles(c, &route.roles, &at, r.span());
        // Roles are checked against a verified token: a route with roles is protected.
        let protected = route.protected || !route.roles.is_empty();
        let rate_limit = route.rate_limit.as_ref().and_then(|raw| {
            let at = field(&format!("routes[{i}].rate_limit"));
            match rate_limit(raw, protected) {
                Ok(limit) => Some(limit),
                Err(why) => {
                    c.problem(Some(r.span()), at, why);
                    None
                }
            }
        });
        let at = field(&format!("routes[{i}].middleware"));
        if let Err(why) = middleware(&route.middleware, name, names) {
            c.problem(Some(r.span()), at, why);
        }
        let route = panal_gateway::Route {
            prefix: route.prefix.clone(),
            methods,
            component: name.to_string(),
            protected,
            roles: route.roles.clone(),
            rate_limit,
            middleware: route.middleware.clone(),
        };
        // Prefix syntax is the gateway's rule; ask it here so the error gets a line.
        match panal_gateway::RouteTable::new(vec![route.clone()]) {
            Ok(_) => routes.push(route),
            Err(err) => c.problem(
                Some(r.span()),
                field(&format!("routes[{i}]")),
                err.to_string(),
            ),
        }
    }
    routes
}

/// Why `route`, which came some other way than this manifest (a deploy or a desired
/// version over NATS), breaks a rule the manifest holds its routes to; `None` when it
/// keeps them all. Middleware names are checked for shape; that they exist is the
/// receiving host's business.
pub fn route_problem(route: &panal_gateway::Route) -> Option<String> {
    if let Err(e) = panal_gateway::RouteTable::new(vec![route.clone()]) {
        return Some(e.to_string());
    }
    if let Some(role) = route
        .roles
        .iter()
        .find(|r| !panal_gateway::auth::valid_role(r))
    {
        return Some(format!(
            "`{role}` is not a role name (1-64 of A-Z a-z 0-9 . _ : -)"
        ));
    }
    if !route.roles.is_empty() && !route.protected {
        return Some("a route with roles must be protected".into());
    }
    if let Some(limit) = &route.rate_limit {
        if limit.per_ip.is_none() && limit.per_user.is_none() {
            return Some("a rate_limit needs per_ip, per_user or both".into());
        }
        if limit.per_user.is_some() && !route.protected {
            return Some("per_user needs a protected route".into());
        }
        let rates = [limit.per_ip, limit.per_user];
        if let Some(why) = rates.iter().flatten().find_map(|r| r.problem()) {
            return Some(format!("rate_limit: {why}"));
        }
    }
    if route.middleware.len() > MAX_MIDDLEWARE {
        return Some(format!("more than {MAX_MIDDLEWARE} middleware components"));
    }
    for (j, m) in route.middleware.iter().enumerate() {
        if let Some(why) = super::validate::bad_name(m) {
            return Some(format!("middleware: {why}"));
        }
        if *m == route.component || route.middleware[..j].contains(m) {
            return Some(format!(
                "middleware: `{m}` is the route's own or named twice"
            ));
        }
    }
    None
}

/// A route's `middleware`: components of this manifest, each once, not the route's own,
/// at most [`MAX_MIDDLEWARE`].
fn middleware(chain: &[String], own: &str, names: &[String]) -> Result<(), String> {
    if chain.len() > MAX_MIDDLEWARE {
        return Err(format!(
            "{} middleware components; a route takes at most {MAX_MIDDLEWARE}",
            chain.len()
        ));
    }
    for (j, m) in chain.iter().enumerate() {
        if m == own {
            return Err(format!(
                "`{m}` is the route's own component; middleware goes in front of it"
            ));
        }
        if !names.contains(m) {
            return Err(format!(
                "`{m}` is not a component of this manifest (known: {})",
                names.join(", ")
            ));
        }
        if chain[..j].contains(m) {
            return Err(format!("`{m}` is named twice"));
        }
    }
    Ok(())
}

/// Role names of a route or an aggregate: 1-64 visible ASCII characters each.
pub(super) fn check_roles(
    c: &mut Checker,
    roles: &[String],
    at: &str,
    span: std::ops::Range<usize>,
) {
    for (j, role) in roles.iter().enumerate() {
        if !panal_gateway::auth::valid_role(role) {
            c.problem(
                Some(span.clone()),
                format!("{at}.roles[{j}]").replace("..", "."),
                format!("`{role}` is not a role name (1-64 of A-Z a-z 0-9 . _ : -)"),
            );
        }
    }
}

/// A route's `rate_limit`: at least one of `per_ip`, `per_user` (the latter only where
/// a verified user exists, on a protected route).
pub(super) fn rate_limit(
    raw: &RawRateLimit,
    protected: bool,
) -> Result<panal_gateway::ratelimit::RateLimit, String> {
    use panal_gateway::ratelimit::{Rate, RateLimit};
    let burst = match raw.burst {
        None => None,
        Some(b) if (1..=1_000_000).contains(&b) => u32::try_from(b).ok(),
        Some(b) => return Err(format!("burst must be between 1 and 1000000, got {b}")),
    };
    if raw.per_ip.is_none() && raw.per_user.is_none() {
        return Err("give per_ip, per_user or both (like per_ip = \"10/s\")".into());
    }
    if raw.per_user.is_some() && !protected {
        return Err("per_user needs a protected route (only there is the user known)".into());
    }
    let parse = |what: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| Rate::parse(t, burst).map_err(|e| format!("{what}: {e}")))
            .transpose()
    };
    Ok(RateLimit {
        per_ip: parse("per_ip", &raw.per_ip)?,
        per_user: parse("per_user", &raw.per_user)?,
    })
}

/// An HTTP method named in a route (any case), or why it is not one.
pub fn parse_method(m: &str) -> Result<Method, String> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    let upper = m.to_ascii_uppercase();
    if KNOWN.contains(&upper.as_str()) {
        Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "unknown HTTP method `{m}`; expected one of {}",
            KNOWN.join(", ")
        ))
    }
}
