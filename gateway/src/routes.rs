//! The route table: path prefix (on segment boundaries) and an optional method list →
//! component. A prefix segment may be a parameter, `{name}`, which matches any one
//! segment (`/jobs/{id}/report`). The most specific matching prefix wins: the one
//! with the most segments, then the most literal ones; a prefix (up to parameter names)
//! and method claimed twice is an error when the table is built, never a coin toss at
//! request time.

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
    /// Handlers in front of `component`, outermost first: the request goes to the first,
    /// which may answer itself or pass it on to the next (see [`crate::Next`]).
    pub middleware: Vec<String>,
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

/// Routes sorted most specific prefix first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Each route's prefix with parameter names blanked (`/jobs/{}/report`): routes
    /// of one shape match the same paths.
    shapes: Vec<String>,
}

impl RouteTable {
    /// Build a table, rejecting bad prefixes and double claims.
    pub fn new(routes: Vec<Route>) -> Result<Self, RouteError> {
        for (index, route) in routes.iter().enumerate() {
            check_prefix(&route.prefix)?;
            let own = shape(&route.prefix);
            if let Some(earlier) = routes[..index]
                .iter()
                .find(|r| shape(&r.prefix) == own && overlap(&r.methods, &route.methods))
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
        routes.sort_by_key(|r| std::cmp::Reverse(specificity(&r.prefix)));
        let shapes = routes.iter().map(|r| shape(&r.prefix)).collect();
        Ok(Self { routes, shapes })
    }

    /// Match a request's method and path.
    pub fn lookup(&self, method: &Method, path: &str) -> RouteMatch<'_> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut matched: Option<&str> = None;
        for (route, shape) in self.routes.iter().zip(&self.shapes) {
            if !prefix_matches(&route.prefix, path) {
                continue;
            }
            // Routes are sorted most specific first: once a prefix matched, less specific
            // ones are not consulted, so a specific route is never shadowed by a general
            // one.
            if matched.is_some_and(|m| m != shape) {
                break;
            }
            matched = Some(shape);
            match &route.methods {
                None => return RouteMatch::Found(route),
                Some(methods) if methods.contains(method) => return RouteMatch::Found(route),
                Some(methods) => allowed.extend(methods.iter().cloned()),
            }
        }
        if matched.is_some() {
            allowed.dedup();
            RouteMatch::MethodNotAllowed(allowed)
        } else {
            RouteMatch::NotFound
        }
    }

    /// All routes, most specific prefix first.
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
        .find(|c| matches!(c, '?' | '#' | '*') || c.is_whitespace() || c.is_control())
    {
        return match c {
            '?' | '#' => bad("must be a path only, without `?` or `#`"),
            '*' => bad("has no wildcards: a `{param}` segment matches any one segment"),
            _ => bad("must not contain whitespace or control characters"),
        };
    }
    let braces = |seg: &str| seg.contains('{') || seg.contains('}');
    if prefix
        .split('/')
        .any(|seg| braces(seg) && param(seg).is_none())
    {
        return bad("has a `{` or `}` outside a whole `{param}` segment (lower-case name)");
    }
    Ok(())
}

/// The name of a `{param}` segment (lower-case letters, digits, `_`, starting with a
/// letter); `None` for a literal segment.
pub fn param(segment: &str) -> Option<&str> {
    let name = segment.strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    (first_ok && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .then_some(name)
}

/// The values of `pattern`'s parameters in `path`, when `path` matches it: the whole
/// path when `exact`, else `pattern` as a prefix on segment boundaries. A parameter
/// matches one non-empty segment.
pub fn match_template<'p>(
    pattern: &'p str,
    path: &str,
    exact: bool,
) -> Option<Vec<(&'p str, String)>> {
    let mut params = Vec::new();
    let mut segments = path.split('/').skip(1);
    for want in pattern.split('/').skip(1).filter(|s| !s.is_empty()) {
        let got = segments.next().filter(|s| !s.is_empty())?;
        match param(want) {
            Some(name) => params.push((name, got.to_string())),
            None if want == got => {}
            None => return None,
        }
    }
    let rest_ok = !exact || segments.all(str::is_empty) && !path.ends_with("//");
    rest_ok.then_some(params)
}

/// Sort key: more segments first, then more literal segments.
fn specificity(prefix: &str) -> (usize, usize) {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    let literal = segments.iter().filter(|s| param(s).is_none()).count();
    (segments.len(), literal)
}

/// `prefix` with its parameter names blanked.
fn shape(prefix: &str) -> String {
    prefix
        .split('/')
        .map(|s| if param(s).is_some() { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
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

/// `/items` matches `/items` and `/items/7`, never `/itemsx`;
/// `/jobs/{id}/report` matches `/jobs/7/report`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    if !prefix.contains('{') {
        return match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        };
    }
    match_template(prefix, path, false).is_some()
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
            middleware: Vec::new(),
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
            route("/items", None, "catalog"),
            route("/items/admin", None, "admin"),
        ]);
        assert_eq!(found(t.lookup(&Method::GET, "/items")), "catalog");
        assert_eq!(found(t.lookup(&Method::GET, "/items/7")), "catalog");
        assert_eq!(found(t.lookup(&Method::GET, "/items/admin/x")), "admin");
        assert_eq!(found(t.lookup(&Method::GET, "/itemsx")), "root");
    }

    #[test]
    fn methods_split_one_prefix_and_report_405() {
        let t = table(vec![
            route("/jobs", Some(&[Method::GET]), "reader"),
            route("/jobs", Some(&[Method::POST]), "writer"),
        ]);
        assert_eq!(found(t.lookup(&Method::GET, "/jobs/1")), "reader");
        assert_eq!(found(t.lookup(&Method::POST, "/jobs")), "writer");
        assert_eq!(
            t.lookup(&Method::DELETE, "/jobs"),
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
    fn a_parameter_segment_is_more_specific_than_a_shorter_prefix() {
        let t = table(vec![
            route("/jobs", None, "jobs"),
            route("/jobs/{id}/report", Some(&[Method::GET]), "report"),
            route("/jobs/special/report", None, "special"),
        ]);
        assert_eq!(found(t.lookup(&Method::GET, "/jobs/7/report")), "report");
        assert_eq!(found(t.lookup(&Method::GET, "/jobs/7/report/x")), "report");
        assert_eq!(
            found(t.lookup(&Method::GET, "/jobs/special/report")),
            "special"
        );
        assert_eq!(found(t.lookup(&Method::GET, "/jobs/7")), "jobs");
        assert_eq!(found(t.lookup(&Method::GET, "/jobs/7/other")), "jobs");
        assert_eq!(
            t.lookup(&Method::POST, "/jobs/7/report"),
            RouteMatch::MethodNotAllowed(vec![Method::GET])
        );
        // Parameter names do not make two routes different.
        assert!(RouteTable::new(vec![
            route("/o/{id}", None, "x"),
            route("/o/{key}", None, "y")
        ])
        .is_err());
    }

    #[test]
    fn templates_give_their_parameters() {
        let got = match_template("/jobs/{id}/report", "/jobs/a1/report", true);
        assert_eq!(got, Some(vec![("id", "a1".to_string())]));
        assert_eq!(
            match_template("/jobs/{id}/report", "/jobs/a1/report/x", true),
            None
        );
        assert!(match_template("/jobs/{id}/report", "/jobs/a1/report/x", false).is_some());
        assert_eq!(match_template("/jobs/{id}", "/jobs/", true), None);
        assert_eq!(match_template("/jobs/{id}", "/jobs", false), None);
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
            ("/a/*", "wildcards"),
            ("/a/x{id}", "whole `{param}`"),
            ("/a/{Id}", "whole `{param}`"),
            ("/a//b", "empty segment"),
        ] {
            let err = RouteTable::new(vec![route(p, None, "c")]).expect_err(p);
            assert!(err.to_string().contains(why), "{p}: {err}");
        }
    }
}
