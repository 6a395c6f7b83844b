//! The route table: path prefix (on segment boundaries) and an optional method list →
//! component. The longest matching prefix wins; a prefix and method claimed twice is an
//! error when the table is built, never a coin toss at request time.

use http::Method;

/// One route, as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Path prefix, starting with `/`, without a trailing `/` (except the root route).
    pub prefix: String,
    /// Methods this route takes; `None` takes every method.
    pub methods: Option<Vec<Method>>,
    /// The component that answers.
    pub component: String,
    /// Whether a valid bearer token is required (see [`crate::auth`]).
    pub protected: bool,
    /// Roles of which the token must hold one (403 otherwise); empty: any verified
    /// user. Only meaningful on a protected route.
    pub roles: Vec<String>,
    /// Requests allowed per client and per user (see [`crate::ratelimit`]).
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
}

/// Why a table could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The prefix is not a clean absolute path.
    #[error("route prefix `{prefix}` {why}")]
    BadPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two routes claim the same prefix for at least one common method.
    #[error("route `{prefix}`{methods} is claimed twice: by component `{first}` and by component `{second}`")]
    ClaimedTwice {
        /// The prefix.
        prefix: String,
        /// The overlapping methods, rendered (`""` when both take every method).
        methods: String,
        /// The component that claimed it first.
        first: String,
        /// The component that claimed it again.
        second: String,
        /// Index of the second route in the list given to [`RouteTable::new`].
        index: usize,
    },
}

/// The outcome of matching a request.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    /// This route answers.
    Found(&'a Route),
    /// Some prefix matched, but none of its routes take this method.
    MethodNotAllowed(Vec<Method>),
    /// No prefix matched.
    NotFound,
}

/// Routes sorted longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Build a table, rejecting bad prefixes and double claims.
    pub fn new(routes: Vec<Route>) -> Result<Self, RouteError> {
        for (index, route) in routes.iter().enumerate() {
            check_prefix(&route.prefix)?;
            if let Some(earlier) = routes[..index]
                .iter()
                .find(|r| r.prefix == route.prefix && overlap(&r.methods, &route.methods))
            {
                return Err(RouteError::ClaimedTwice {
                    prefix: route.prefix.clone(),
                    methods: render_overlap(&earlier.methods, &route.methods),
                    first: earlier.component.clone(),
                    second: route.component.clone(),
                    index,
                });
            }
        }
        let mut routes = routes;
        // Stable sort: among equal prefixes the declaration order is kept.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes })
    }

    /// Match a request's method and path.
    pub fn lookup(&self, method: &Method, path: &str) -> RouteMatch<'_> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut matched_len = None;
        for route in &self.routes {
            if !prefix_matches(&route.prefix, path) {
                continue;
            }
            // Routes are sorted longest first: once a longer prefix matched, shorter ones
            // are not consulted, so a specific route is never shadowed by a general one.
            if matched_len.is_some_and(|len| len != route.prefix.len()) {
                break;
            }
            matched_len = Some(route.prefix.len());
            match &route.methods {
                None => return RouteMatch::Found(route),
                Some(methods) if methods.contains(method) => return RouteMatch::Found(route),
                Some(methods) => allowed.extend(methods.iter().cloned()),
            }
        }
        if matched_len.is_some() {
            allowed.dedup();
            RouteMatch::MethodNotAllowed(allowed)
        } else {
            RouteMatch::NotFound
        }
    }

    /// All routes, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn check_prefix(prefix: &str) -> Result<(), RouteError> {
    let bad = |why| {
        Err(RouteError::BadPrefix {
            prefix: prefix.to_string(),
            why,
        })
    };
    if !prefix.starts_with('/') {
        return bad("must start with `/`");
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return bad("must not end with `/`");
    }
    if prefix.contains("//") {
        return bad("must not contain an empty segment (`//`)");
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| matches!(c, '?' | '#' | '*' | '{' | '}') || c.is_whitespace() || c.is_control())
    {
        return match c {
            '?' | '#' => bad("must be a path only, without `?` or `#`"),
            '*' | '{' | '}' => bad("is a plain prefix: no wildcards or `{params}`"),
            _ => bad("must not contain whitespace or control characters"),
        };
    }
    Ok(())
}

/// Refuse paths that a component could read differently from the route table: empty or
/// dot segments, and percent-encoded characters that need no encoding (`%2F`, `%6D`...).
/// Otherwise `/users//me` or `/users/%6De` could slip past a protected `/users/me`.
pub fn canonical(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("the path must start with `/`");
    }
    if path.contains("//") {
        return Err("empty path segment (`//`)");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("`.` or `..` path segment");
    }
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(decoded) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err("malformed percent-encoding");
            };
            if decoded.is_ascii_alphanumeric() || b"-._~/".contains(&decoded) {
                return Err("percent-encoded character that needs no encoding");
            }
        }
    }
    Ok(())
}

/// `/products` matches `/products` and `/products/7`, never `/productsx`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

fn render_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> String {
    let common: Vec<&str> = match (a, b) {
        (None, None) => return String::new(),
        (Some(m), None) | (None, Some(m)) => m.iter().map(Method::as_str).collect(),
        (Some(a), Some(b)) => a
            .iter()
            .filter(|m| b.contains(m))
            .map(Method::as_str)
            .collect(),
    };
    format!(" for {}", common.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, methods: Option<&[Method]>, component: &str) -> Route {
        Route {
            rate_limit: None,
            prefix: prefix.into(),
            methods: methods.map(<[Method]>::to_vec),
            component: component.into(),
            protected: false,
            roles: Vec::new(),
        }
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable::new(routes).expect("valid table")
    }

    fn found<'a>(m: RouteMatch<'a>) -> &'a str {
        match m {
            RouteMatch::Found(r) => &r.component,
            other => panic!("expected a match, got {other:?}"),
        }
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table(vec![
            route("/", None, "root"),
            route("/products", None, "product"),
            route("/products/admin", None, "admin"),
        ]);
        assert_eq!(found(t.lookup(&Method::GET, "/products")), "product");
        assert_eq!(found(t.lookup(&Method::GET, "/products/7")), "product");
        assert_eq!(found(t.lookup(&Method::GET, "/products/admin/x")), "admin");
        assert_eq!(found(t.lookup(&Method::GET, "/productsx")), "root");
    }

    #[test]
    fn methods_split_one_prefix_and_report_405() {
        let t = table(vec![
            route("/orders", Some(&[Method::GET]), "reader"),
            route("/orders", Some(&[Method::POST]), "writer"),
        ]);
        assert_eq!(found(t.lookup(&Method::GET, "/orders/1")), "reader");
        assert_eq!(found(t.lookup(&Method::POST, "/orders")), "writer");
        assert_eq!(
            t.lookup(&Method::DELETE, "/orders"),
            RouteMatch::MethodNotAllowed(vec![Method::GET, Method::POST])
        );
        assert_eq!(t.lookup(&Method::GET, "/nothing"), RouteMatch::NotFound);
    }

    #[test]
    fn a_route_claimed_twice_is_an_error() {
        let err = RouteTable::new(vec![
            route("/a", Some(&[Method::GET, Method::PUT]), "one"),
            route("/a", Some(&[Method::PUT]), "two"),
        ])
        .expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "route `/a` for PUT is claimed twice: by component `one` and by component `two`"
        );
        assert!(RouteTable::new(vec![route("/a", None, "x"), route("/a", None, "y")]).is_err());
    }

    #[test]
    fn only_canonical_paths_pass() {
        for ok in ["/", "/users/me", "/users/", "/a%20b", "/q%3F"] {
            assert_eq!(canonical(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/users//me",
            "//x",
            "/a/./b",
            "/a/../b",
            "/users/%6De",
            "/a%2Fb",
            "/a%2e",
            "/a%zz",
            "/a%4",
        ] {
            assert!(canonical(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_prefixes_are_named() {
        for (p, why) in [
            ("a", "start with"),
            ("/a/", "end with"),
            ("/a?b", "path only"),
            ("/a/{id}", "wildcards"),
            ("/a//b", "empty segment"),
        ] {
            let err = RouteTable::new(vec![route(p, None, "c")]).expect_err(p);
            assert!(err.to_string().contains(why), "{p}: {err}");
        }
    }
}
