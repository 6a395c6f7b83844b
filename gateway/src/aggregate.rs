//! Aggregate routes: the gateway answers one `GET` by fanning out to several internal
//! paths at once and merging their JSON under the parts' names. It knows nothing of
//! what the parts are: each is a component and a path in which the route's `{params}`
//! are filled in. A part that fails (an error status, no JSON, too large) is `null` and
//! named in `missing`, with `complete: false`, instead of failing the whole answer;
//! when every part fails the answer is 502.
//!
//! An aggregate is guarded like any route ([`Aggregate::guard`]: token, roles, rate
//! limit), and its parts are called as the verified user, with the request id.

use futures::future::join_all;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use crate::routes::{match_template, param, Route};
use crate::{empty, json_error, json_response, Backend, Body};

/// Largest part body the gateway reads; larger parts count as missing.
const MAX_PART: usize = 1 << 20;

/// One part of an aggregate: `GET path` (with the route's parameters filled in) from
/// `component`, merged under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The key it is merged under.
    pub name: String,
    /// The component that answers it.
    pub component: String,
    /// Its path, with `{param}`s of the aggregate's path.
    pub path: String,
}

/// A composite `GET` route.
#[derive(Debug, Clone)]
pub struct Aggregate {
    guard: Route,
    parts: Vec<Part>,
}

/// Why an aggregate is not valid.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AggregateError {
    /// The path is not a clean pattern (the pattern, and why).
    #[error("{1}")]
    Path(String, String),
    /// A part is wrong.
    #[error("part `{part}`: {why}")]
    Part {
        /// The part's name.
        part: String,
        /// What is wrong with it.
        why: String,
    },
}

impl Aggregate {
    /// An aggregate at `guard.prefix` (its pattern, `{params}` allowed), guarded as
    /// `guard` says (token, roles, rate limit), fanning out to `parts`.
    pub fn new(guard: Route, parts: Vec<Part>) -> Result<Self, AggregateError> {
        let pattern = guard.prefix.clone();
        crate::RouteTable::new(vec![guard.clone()])
            .map_err(|e| AggregateError::Path(pattern.clone(), e.to_string()))?;
        let params: Vec<&str> = pattern.split('/').filter_map(param).collect();
        if parts.is_empty() {
            let why = format!("aggregate `{pattern}` has no parts");
            return Err(AggregateError::Path(pattern, why));
        }
        for part in &parts {
            let bad = |why: String| AggregateError::Part {
                part: part.name.clone(),
                why,
            };
            if ["complete", "missing"].contains(&part.name.as_str()) {
                return Err(bad(
                    "`complete` and `missing` are the answer's own keys".into()
                ));
            }
            if !part.path.starts_with('/') || part.path.contains(['#', ' ']) {
                return Err(bad(format!("path `{}` must start with `/`", part.path)));
            }
            let route_part = part.path.split('?').next().unwrap_or_default();
            for seg in route_part.split('/').filter(|s| s.contains('{')) {
                match param(seg) {
                    Some(name) if params.contains(&name) => {}
                    _ => {
                        return Err(bad(format!(
                            "`{seg}` is not a parameter of `{pattern}` (they are: {})",
                            params.join(", ")
                        )))
                    }
                }
            }
        }
        Ok(Self { guard, parts })
    }

    /// The path pattern.
    pub fn pattern(&self) -> &str {
        &self.guard.prefix
    }

    /// How it is guarded, as a route: `protected`, `roles`, `rate_limit`.
    pub fn guard(&self) -> &Route {
        &self.guard
    }

    /// The parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The path's parameters, when a request matches (`GET` only, the whole path).
    pub fn matches(&self, method: &Method, path: &str) -> Option<Vec<(String, String)>> {
        if method != Method::GET {
            return None;
        }
        let params = match_template(&self.guard.prefix, path, true)?;
        Some(
            params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// Fan out to every part at once, as `user`, and merge.
    pub async fn answer(
        &self,
        backend: &dyn Backend,
        params: &[(String, String)],
        caller: http::HeaderMap,
    ) -> http::Response<Body> {
        let ctx = Ctx {
            backend,
            caller: &caller,
        };
        let got = join_all(
            self.parts
                .iter()
                .map(|p| ctx.get(&p.component, fill(&p.path, params))),
        )
        .await;
        let mut merged = Map::new();
        let mut missing = Vec::new();
        for (part, got) in self.parts.iter().zip(got) {
            match got {
                Ok((status, doc)) if status.is_success() => {
                    merged.insert(part.name.clone(), doc);
                }
                other => {
                    merged.insert(part.name.clone(), Value::Null);
                    missing.push(json!({ "part": part.name, "reason": reason(other) }));
                }
            }
        }
        if missing.len() == self.parts.len() {
            return json_error(
                StatusCode::BAD_GATEWAY,
                "no part of the aggregate answered",
                json!({ "missing": missing }),
            );
        }
        merged.insert("complete".into(), Value::Bool(missing.is_empty()));
        merged.insert("missing".into(), Value::Array(missing));
        json_response(StatusCode::OK, &Value::Object(merged))
    }
}

/// `path` with each `{name}` replaced by its value, in which anything but unreserved
/// characters (and the percent-encoding the gateway already checked) is
/// percent-encoded, so a value cannot add a segment or a query parameter.
fn fill(path: &str, params: &[(String, String)]) -> String {
    params.iter().fold(path.to_string(), |p, (name, value)| {
        let mut safe = String::with_capacity(value.len());
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~%".contains(&b) {
                safe.push(char::from(b));
            } else {
                safe.push_str(&format!("%{b:02X}"));
            }
        }
        p.replace(&format!("{{{name}}}"), &safe)
    })
}

fn reason(got: Result<(StatusCode, Value), String>) -> String {
    match got {
        Ok((status, doc)) => match doc["error"].as_str() {
            Some(e) => format!("{} {e}", status.as_u16()),
            None => format!("status {}", status.as_u16()),
        },
        Err(why) => why,
    }
}

/// The whole body, or an error past [`MAX_PART`] bytes.
async fn read_capped(mut body: Body, component: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the {component} answer failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_PART {
                return Err(format!("the {component} answer is over {MAX_PART} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    backend: &'a dyn Backend,
    /// The verified user and roles and the request id, sent with every part.
    caller: &'a http::HeaderMap,
}

impl Ctx<'_> {
    /// GET `path` from `component`, as JSON.
    async fn get(&self, component: &str, path: String) -> Result<(StatusCode, Value), String> {
        let mut req = http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(http::header::HOST, component)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in self.caller {
            req = req.header(name, value);
        }
        let req = req.body(empty()).map_err(|e| e.to_string())?;
        let resp = self.backend.handle(component, req).await;
        let status = resp.status();
        let body = read_capped(resp.into_body(), component).await?;
        let doc = serde_json::from_slice(&body)
            .map_err(|_| format!("{component} answered {} without JSON", status.as_u16()))?;
        Ok((status, doc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(pattern: &str) -> Route {
        Route {
            prefix: pattern.into(),
            methods: Some(vec![Method::GET]),
            component: "(aggregate)".into(),
            protected: false,
            roles: Vec::new(),
            rate_limit: None,
            middleware: Vec::new(),
        }
    }

    fn part(name: &str, path: &str) -> Part {
        Part {
            name: name.into(),
            component: "c".into(),
            path: path.into(),
        }
    }

    #[test]
    fn matches_only_get_on_the_whole_pattern() {
        let a = Aggregate::new(
            guard("/users/{id}/overview"),
            vec![part("u", "/users/{id}")],
        )
        .expect("valid");
        assert_eq!(
            a.matches(&Method::GET, "/users/abc/overview"),
            Some(vec![("id".into(), "abc".into())])
        );
        assert_eq!(a.matches(&Method::POST, "/users/abc/overview"), None);
        assert_eq!(a.matches(&Method::GET, "/users/abc/overview/x"), None);
        assert_eq!(a.matches(&Method::GET, "/users/abc"), None);
    }

    #[test]
    fn parts_fill_in_the_parameters() {
        let params = vec![("id".to_string(), "7".to_string())];
        assert_eq!(
            fill("/list?owner={id}&x={id}", &params),
            "/list?owner=7&x=7"
        );
        let sly = vec![("id".to_string(), "a&admin=1".to_string())];
        assert_eq!(fill("/list?owner={id}", &sly), "/list?owner=a%26admin%3D1");
    }

    #[test]
    fn bad_aggregates_are_named() {
        let ok = || vec![part("u", "/u/{id}")];
        let err =
            |g: &str, parts: Vec<Part>| Aggregate::new(guard(g), parts).expect_err(g).to_string();
        assert!(err("/u/x{id}", ok()).contains("prefix `/u/x{id}`"));
        assert!(err("/u/{id}", vec![]).contains("no parts"));
        assert!(err("/u/{id}", vec![part("u", "/u/{key}")]).contains("`{key}` is not a parameter"));
        assert!(err("/u/{id}", vec![part("missing", "/u")]).contains("own keys"));
        assert!(err("/u/{id}", vec![part("u", "u")]).contains("must start with `/`"));
    }
}
