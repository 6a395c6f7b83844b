//! The gateway's router on arbitrary routes and paths. Input: lines; those starting
//! with `R ` declare a route (`R METHOD|* PREFIX`), the others are request paths. For
//! every path: `canonical` and `lookup` never panic; a canonical path is found only
//! under a prefix that ends on a segment boundary (a `{param}` segment matching any one
//! segment), and under the most specific such prefix that takes the method (most
//! segments, then most literal ones).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use panal_gateway::{Route, RouteMatch, RouteTable};

fn under(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
        || (prefix.contains('{')
            && panal_gateway::routes::match_template(prefix, path, false).is_some())
}

/// (segments, literal segments): the higher, the more specific.
fn specificity(prefix: &str) -> (usize, usize) {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    let literal = segments
        .iter()
        .filter(|s| panal_gateway::routes::param(s).is_none())
        .count();
    (segments.len(), literal)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut routes = Vec::new();
    let mut paths = Vec::new();
    for line in text.lines().take(64) {
        if let Some(rest) = line.strip_prefix("R ") {
            let (method, prefix) = rest.split_once(' ').unwrap_or(("*", rest));
            let methods = match method {
                "*" => None,
                m => match Method::from_bytes(m.as_bytes()) {
                    Ok(m) => Some(vec![m]),
                    Err(_) => continue,
                },
            };
            routes.push(Route {
                prefix: prefix.to_string(),
                methods,
                component: format!("c{}", routes.len()),
                protected: false,
                roles: Vec::new(),
                rate_limit: None,
            });
        } else {
            paths.push(line.to_string());
        }
    }
    let Ok(table) = RouteTable::new(routes.clone()) else {
        return;
    };
    for path in &paths {
        let canonical = panal_gateway::routes::canonical(path).is_ok();
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let found = table.lookup(&method, path);
            let RouteMatch::Found(route) = found else {
                continue;
            };
            if !canonical {
                continue;
            }
            assert!(
                under(&route.prefix, path),
                "{path} routed under {}",
                route.prefix
            );
            let takes = |r: &Route| r.methods.as_ref().is_none_or(|ms| ms.contains(&method));
            let most = routes
                .iter()
                .filter(|r| takes(r) && under(&r.prefix, path))
                .map(|r| specificity(&r.prefix))
                .max();
            assert_eq!(
                most,
                Some(specificity(&route.prefix)),
                "{path}: not the most specific prefix"
            );
        }
    }
});
