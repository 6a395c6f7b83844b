//! Generic aggregate routes through the real binary: the gateway fans out to every part
//! at once with the route's parameters, merges the JSON under the parts' names, names a
//! failed part in `missing`, answers 502 when none answered, and guards an aggregate
//! like any route (token, roles, rate limit).

use panal_tests::{client, component, get_json, sign_hs256, Panal};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "aggregate-test-secret-0123456789abcdef";

fn manifest() -> String {
    format!(
        r#"version = 1

[auth]
jwt_secret = "{SECRET}"

[components.hello]
source = "{hello}"
routes = ["/hello"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]

[aggregates.both]
path = "/both/{{id}}"
rate_limit = {{ per_ip = "4/min" }}
parts = {{ greeting = {{ component = "hello", path = "/hello/{{id}}?x={{id}}" }}, broken = {{ component = "probe", path = "/probe/trap" }} }}

[aggregates.nothing]
path = "/nothing/{{id}}"
parts = {{ a = {{ component = "probe", path = "/probe/nothing/{{id}}" }} }}

[aggregates.admins]
path = "/admins/overview"
roles = ["admin"]
parts = {{ who = {{ component = "probe", path = "/probe/config" }} }}
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

fn token(roles: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    sign_hs256(
        SECRET.as_bytes(),
        &json!({"sub": "u-1", "exp": exp, "roles": roles}),
    )
}

#[tokio::test]
async fn an_aggregate_fans_out_merges_names_what_failed_and_is_guarded_like_a_route() {
    let data = tempfile::tempdir().expect("tempdir");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();

    // Both parts at once; the failed one is null and named, the other merged.
    let doc = get_json(&c, panal.at("/both/abc")).await;
    assert_eq!(doc["greeting"]["component"], "hello", "{doc}");
    assert_eq!(doc["greeting"]["path"], "/hello/abc?x=abc", "{doc}");
    assert_eq!(doc["broken"], Value::Null);
    assert_eq!(doc["complete"], false);
    assert_eq!(doc["missing"][0]["part"], "broken");
    let reason = doc["missing"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("500"), "{doc}");

    // A parameter cannot add a query parameter or a segment to a part's path.
    let doc = get_json(&c, panal.at("/both/a&admin=1")).await;
    assert_eq!(
        doc["greeting"]["path"], "/hello/a%26admin%3D1?x=a%26admin%3D1",
        "{doc}"
    );

    // Only the whole pattern, only GET.
    let other = c.get(panal.at("/both/abc/x")).send().await.expect("get");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // Nothing answered: 502 with what was missing.
    let none = c.get(panal.at("/nothing/x")).send().await.expect("get");
    assert_eq!(none.status(), StatusCode::BAD_GATEWAY);
    let body: Value = none.json().await.expect("json");
    assert_eq!(body["missing"][0]["part"], "a", "{body}");

    // Guarded like a route: no token 401, no role 403, the granted role 200.
    let admins = panal.at("/admins/overview");
    let s = c.get(&admins).send().await.expect("get").status();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let s = c
        .get(&admins)
        .bearer_auth(token(&[]))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A token's own roles claim grants nothing: only the operator does.
    let s = c
        .get(&admins)
        .bearer_auth(token(&["admin"]))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(s, StatusCode::FORBIDDEN);
    panal.grant("u-1", "admin").await;
    let resp = c
        .get(&admins)
        .bearer_auth(token(&[]))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("json");
    assert_eq!(doc["complete"], true, "{doc}");

    // Its rate limit: 4 a minute per client, two already spent above.
    for _ in 0..2 {
        let s = c
            .get(panal.at("/both/x"))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(s, StatusCode::OK);
    }
    let limited = c.get(panal.at("/both/x")).send().await.expect("get");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    panal.stop();
}
