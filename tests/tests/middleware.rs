//! Middleware (the `wasi:http/middleware` world of WASI 0.3) in front of routes: the
//! sample `components/audit` answers some requests itself, passes the rest on to the
//! next handler through its `wasi:http/handler` import, and sees every response. One
//! host serves every case: a chain of two, a protected route, a WASI 0.2 component
//! behind it with a streamed body, and the middleware called where it has no next.

use panal_tests::{client, component, sign_hs256, Panal};

const SECRET: &str = "middleware-test-secret-0123456789abcdef";

fn middleware_manifest(audit: &str) -> String {
    format!(
        r#"version = 1
[auth]
jwt_secret = "{SECRET}"

[components.audit]
source = "{audit}"
routes = ["/audit"]

[components.audit2]
source = "{audit}"

[components.probe3]
source = "{probe3}"
routes = [
  {{ prefix = "/mw", middleware = ["audit"] }},
  {{ prefix = "/chain", middleware = ["audit", "audit2"] }},
  {{ prefix = "/mine", protected = true, middleware = ["audit"] }},
  "/plain",
]
keyvalue = ["default"]
messaging = {{ publish = ["p3.>"] }}

[components.hello]
source = "{hello}"
routes = [{{ prefix = "/h2", middleware = ["audit"] }}]
"#,
        probe3 = component("probe_p3"),
        hello = component("hello"),
    )
}

/// Requests `component` answered, by its counters.
async fn answered(panal: &Panal, component: &str) -> u64 {
    let needle = format!("panal_requests_total{{component=\"{component}\"");
    panal
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_middleware_sees_requests_and_responses_in_front_of_routes() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&middleware_manifest(&component("audit")), data.path());
    let c = client();
    let audit_values = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("x-audit")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };

    // Passed on: the component sees the added header and the request id; the client
    // sees the middleware's header on the component's answer.
    let r = c
        .get(panal.at("/mw/headers"))
        .header("x-request-id", "mw-1")
        .send()
        .await
        .expect("get");
    let status = r.status();
    let checked = audit_values(&r);
    let seen = r.text().await.expect("body");
    assert_eq!(status, 200, "{seen}\n{}", panal.log());
    assert_eq!(checked, ["checked"]);
    assert!(seen.contains("x-audit-seen: yes"), "{seen}");
    assert!(seen.contains("x-request-id: mw-1"), "{seen}");

    // Answered by the middleware itself: the component never sees it.
    let before = answered(&panal, "probe3").await;
    let r = c
        .get(panal.at("/mw/headers"))
        .header("x-audit-block", "1")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.expect("body"), "blocked by audit\n");
    assert_eq!(
        answered(&panal, "probe3").await,
        before,
        "blocked, yet passed on"
    );

    // Two in a chain, outermost first: each adds its header on the way in and out.
    let r = c.get(panal.at("/chain/headers")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(audit_values(&r), ["checked", "checked"]);
    let seen = r.text().await.expect("body");
    assert_eq!(seen.matches("x-audit-seen: yes").count(), 2, "{seen}");
    assert!(answered(&panal, "audit2").await >= 1);

    // A protected route: no token never reaches the middleware; with one, the
    // component sees the verified user.
    let r = c.get(panal.at("/mine/headers")).send().await.expect("get");
    assert_eq!(r.status(), 401);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let token = sign_hs256(
        SECRET.as_bytes(),
        &serde_json::json!({"sub": "u-7", "exp": exp}),
    );
    let r = c
        .get(panal.at("/mine/headers"))
        .bearer_auth(&token)
        .header("x-panal-user-id", "someone-else")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let seen = r.text().await.expect("body");
    assert!(seen.contains("x-panal-user-id: u-7"), "{seen}");
    assert!(!seen.contains("someone-else"), "{seen}");

    // In front of a WASI 0.2 component, with a streamed body both ways.
    let body = "x".repeat(200_000);
    let r = c
        .post(panal.at("/h2/echo"))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(audit_values(&r), ["checked"]);
    assert_eq!(r.text().await.expect("body"), body);

    // One middleware in front of two routes, many requests at once in its concurrent
    // instances: each goes on to its own route's component.
    let answers = futures::future::join_all((0..24).map(|i| {
        let path = if i % 2 == 0 {
            "/mw/headers".to_string()
        } else {
            format!("/h2/who?n={i}")
        };
        let (c, url) = (c.clone(), panal.at(&path));
        async move {
            let r = c.get(url).send().await.expect("get");
            let checked = r.headers().get("x-audit").cloned();
            (
                i,
                r.status().as_u16(),
                checked,
                r.text().await.unwrap_or_default(),
            )
        }
    }))
    .await;
    for (i, status, checked, body) in answers {
        assert_eq!(status, 200, "{i}: {body}");
        assert!(checked.is_some(), "{i}: not through audit");
        if i % 2 == 0 {
            assert!(body.contains("x-audit-seen: yes"), "{i}: {body}");
        } else {
            assert!(body.contains(&format!("/h2/who?n={i}")), "{i}: {body}");
        }
    }

    // The same route without its middleware is untouched.
    let r = c.get(panal.at("/plain/headers")).send().await.expect("get");
    assert!(r.headers().get("x-audit").is_none());
    assert!(!r.text().await.expect("body").contains("x-audit-seen"));

    // A middleware called as a plain route has no next handler: it fails, named.
    let r = c.get(panal.at("/audit/alone")).send().await.expect("get");
    assert!(r.status().is_server_error(), "{}", r.status());

    let log = panal.stop();
    assert!(log.contains("audit: GET /mw/headers -> 200"), "{log}");
    assert!(
        log.contains("audit: GET /mw/headers -> 403 (blocked)"),
        "{log}"
    );
    assert!(
        log.contains("`audit` called wasi:http/handler but is not middleware"),
        "{log}"
    );
}
