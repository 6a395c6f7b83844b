//! The gateway protecting components, through the real binary: rate limits per client
//! IP and per verified user (429 with `Retry-After`), hop-by-hop and oversized headers,
//! identity headers only the gateway sets, paths that try to reach another route, and
//! the admin API out of reach of the public port.

use panal_tests::{client, component, raw_http, sign_hs256, Panal};
use serde_json::{json, Value};

const SECRET: &str = "protect-test-secret-0123456789abcdef";

fn manifest() -> String {
    format!(
        r#"version = 1
[auth]
jwt_secret = "{SECRET}"

[components.hello]
source = "{hello}"
routes = [
  {{ prefix = "/hello", rate_limit = {{ per_ip = "3/min" }} }},
  {{ prefix = "/mine", protected = true, rate_limit = {{ per_user = "2/h" }} }},
  "/open",
]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    sign_hs256(SECRET.as_bytes(), &json!({ "sub": sub, "exp": exp }))
}

#[tokio::test]
async fn rate_limits_per_ip_and_per_user_answer_429_with_retry_after() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    for i in 0..3 {
        let ok = c.get(panal.at("/hello")).send().await.expect("get");
        assert_eq!(ok.status(), 200, "request {i}");
    }
    let limited = c.get(panal.at("/hello/x")).send().await.expect("get");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"], "rate limit exceeded");
    assert_eq!(body["route"], "/hello");
    // Another route of the same component has no limit.
    for _ in 0..5 {
        assert_eq!(
            c.get(panal.at("/open")).send().await.expect("get").status(),
            200
        );
    }

    // Per user: two for ana, wherever she calls from; bo has his own.
    let (ana, bo) = (token("ana"), token("bo"));
    for _ in 0..2 {
        let ok = c.get(panal.at("/mine")).bearer_auth(&ana).send().await;
        assert_eq!(ok.expect("get").status(), 200);
    }
    let limited = c.get(panal.at("/mine")).bearer_auth(&ana).send().await;
    let limited = limited.expect("get");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry > 60, "one token per half hour: {retry}");
    let bo_ok = c.get(panal.at("/mine")).bearer_auth(&bo).send().await;
    assert_eq!(bo_ok.expect("get").status(), 200);
    // Without a token it is 401, not 429: the user is checked first.
    let anon = c.get(panal.at("/mine")).send().await.expect("get");
    assert_eq!(anon.status(), 401);
    panal.stop();
}

/// The header names `req` delivered to hello.
async fn seen_headers(req: reqwest::RequestBuilder) -> Vec<String> {
    let resp = req.send().await.expect("get");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["headers"]
        .as_array()
        .expect("header names")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_ascii_lowercase))
        .collect()
}

#[tokio::test]
async fn hop_by_hop_spoofed_and_oversized_headers_are_handled() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let seen = seen_headers(
        c.get(panal.at("/open"))
            .header("connection", "x-private-hop")
            .header("x-private-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("x-panal-user-id", "admin")
            .header("x-kept", "yes"),
    )
    .await;
    for gone in [
        "x-private-hop",
        "keep-alive",
        "proxy-authorization",
        "connection",
        "x-panal-user-id",
    ] {
        assert!(
            !seen.contains(&gone.to_string()),
            "{gone} reached the component: {seen:?}"
        );
    }
    assert!(seen.contains(&"x-kept".to_string()), "{seen:?}");

    // On a protected route the identity is the token's, whatever the client claims.
    let mine = c
        .get(panal.at("/mine"))
        .bearer_auth(token("ana"))
        .header("x-panal-user-id", "admin")
        .send()
        .await
        .expect("get");
    assert_eq!(mine.status(), 200);

    let huge = c
        .get(panal.at("/open"))
        .header("x-big", "a".repeat(40 * 1024))
        .send()
        .await
        .expect("get");
    assert_eq!(huge.status(), 431);
    panal.stop();
}

/// A raw request line, so no client library tidies the path first.
async fn raw_get(panal: &Panal, path: &str) -> u16 {
    raw_http(panal, "GET", path, &[], b"")
        .await
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn paths_cannot_climb_into_another_route_and_admin_is_not_public() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    assert_eq!(raw_get(&panal, "/open/x").await, 200);
    for sneaky in [
        "/open/../probe/config",
        "/open/%2e%2e/probe/config",
        "/open/%2E%2E/probe/config",
        "/open/.%2e/probe/config",
        "/open%2f..%2fprobe/config",
        "//probe/config",
        "/open/./x",
        "/open/%",
    ] {
        assert_eq!(raw_get(&panal, sneaky).await, 400, "{sneaky}");
    }
    // The admin API lives on its own listener only.
    let c = client();
    for (method, path) in [
        (reqwest::Method::GET, "/components"),
        (reqwest::Method::GET, "/metrics"),
        (reqwest::Method::PUT, "/components/hello"),
        (reqwest::Method::DELETE, "/components/hello"),
    ] {
        let resp = c
            .request(method.clone(), panal.at(path))
            .body("x")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404, "{method} {path} on the public port");
    }
    let admin = c.get(format!("{}/components", panal.admin)).send().await;
    assert_eq!(admin.expect("admin").status(), 200);
    panal.stop();
}

#[tokio::test]
async fn components_get_no_environment_files_or_sockets() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest(), data.path())
        .env(&[("PANAL_LEAK_ME", "secret")])
        .start();
    // Something to connect to, so a refusal is the sandbox's and not an empty port's.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = listener.local_addr().expect("addr");
    let report: Value = client()
        .get(panal.at(&format!("/probe/sandbox?target={target}")))
        .send()
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json");
    assert_eq!(report["env"], json!([]), "{report}");
    for what in ["root", "cwd", "tcp", "create"] {
        assert!(
            report[what]["error"].is_string(),
            "{what} reachable: {report}"
        );
    }
    panal.stop();
}
