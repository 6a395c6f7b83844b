//! Unit tests of parsing and validation; the user-facing error texts are snapshot-tested
//! end to end in `tests/ui`.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "SECRET").then(|| "s3cret".to_string())
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    // Sources point at this very file so the existence check passes.
    let text = text.replace("SRC", "tests.rs");
    Manifest::parse(Path::new("src/manifest/panal.toml"), &text, &env)
}

#[test]
fn a_full_component_parses() {
    let m = parse(
        r#"
version = 1
[components.catalog]
source = "SRC"
routes = ["/items", { prefix = "/stock", methods = ["get", "POST"] }]
keyvalue = ["default", "cache"]
outbound = ["catalog", "api.example.com", "127.0.0.1:9000"]
config = { key = "${SECRET}-x", literal = "$$HOME" }
limits = { memory_mb = 64, timeout_ms = 2000, max_concurrency = 8 }
"#,
    )
    .expect("valid");
    let p = m.component("catalog").expect("catalog");
    assert_eq!(p.routes.len(), 2);
    assert_eq!(p.routes[1].methods, Some(vec![Method::GET, Method::POST]));
    assert_eq!(p.buckets, ["default", "cache"]);
    assert_eq!(p.outbound.components, ["catalog"]);
    assert!(p.outbound.allows_host("api.example.com", 443));
    assert!(p.outbound.allows_host("127.0.0.1", 9000));
    assert!(!p.outbound.allows_host("127.0.0.1", 9001));
    assert_eq!(
        p.config,
        [
            ("key".to_string(), "s3cret-x".to_string()),
            ("literal".to_string(), "$HOME".to_string())
        ]
    );
    assert_eq!(p.limits.memory_mb, 64);
    assert_eq!(p.source_at.line, 4);
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let err = parse(
        r#"version = 1
[components.a]
source = "SRC"
keyvalue = ["ok", "bad bucket"]
outbound = ["typo"]
limits = { memory_mb = 0, reuse = 0 }
"#,
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains(":4:19: components.a.keyvalue[1]"), "{text}");
    assert!(text.contains(":5:13: components.a.outbound[0]"), "{text}");
    assert!(
        text.contains(":6:24: components.a.limits.memory_mb"),
        "{text}"
    );
    assert!(
        text.contains("components.a.limits.reuse: must be between 1 and 100000 requests, got 0"),
        "{text}"
    );
}

#[test]
fn reuse_defaults_to_a_fresh_instance_per_request() {
    let m = parse("version = 1\n[components.a]\nsource = \"SRC\"\n[components.b]\nsource = \"SRC\"\nlimits = { reuse = 50 }\n")
        .expect("valid");
    assert_eq!(m.component("a").expect("a").limits.reuse, None);
    assert_eq!(m.component("b").expect("b").limits.reuse, Some(50));
}

use http::Method;
use std::path::Path;

#[test]
fn substitution_handles_escapes_and_unknown_vars() {
    assert_eq!(
        substitute_env("a${SECRET}b", &env).as_deref(),
        Ok("as3cretb")
    );
    assert_eq!(substitute_env("$5 and $$", &env).as_deref(), Ok("$5 and $"));
    assert!(substitute_env("${NOPE}", &env)
        .expect_err("unset")
        .contains("`NOPE` is not set"));
    assert!(substitute_env("${OPEN", &env).is_err());
    assert_eq!(substitute_env("${NOPE:-dflt}", &env).as_deref(), Ok("dflt"));
    assert_eq!(
        substitute_env("${SECRET:-dflt}", &env).as_deref(),
        Ok("s3cret")
    );
    assert_eq!(substitute_env("${NOPE:-}", &env).as_deref(), Ok(""));
}

#[test]
fn middleware_names_components_in_front_of_a_route() {
    let m = parse(
        r#"version = 1
[components.audit]
source = "SRC"
[components.shop]
source = "SRC"
routes = [{ prefix = "/shop", middleware = ["audit"] }, "/plain"]
"#,
    )
    .expect("valid");
    let routes = &m.component("shop").expect("shop").routes;
    assert_eq!(routes[0].middleware, ["audit"]);
    assert!(routes[1].middleware.is_empty());

    let err = parse(
        r#"version = 1
[components.audit]
source = "SRC"
[components.shop]
source = "SRC"
routes = [
  { prefix = "/a", middleware = ["nope"] },
  { prefix = "/b", middleware = ["shop"] },
  { prefix = "/c", middleware = ["audit", "audit"] },
]
"#,
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains(":7:3: components.shop.routes[0].middleware: `nope` is not a component of this manifest (known: audit, shop)"),
        "{text}"
    );
    assert!(
        text.contains("components.shop.routes[1].middleware: `shop` is the route's own component"),
        "{text}"
    );
    assert!(
        text.contains("components.shop.routes[2].middleware: `audit` is named twice"),
        "{text}"
    );
}

#[test]
fn traces_name_a_collector_or_are_off() {
    let with = |section: &str| parse(&format!("version = 1\n{section}\n"));
    assert_eq!(with("").expect("no section").traces, None);
    let on = with("[traces]\notlp = \"http://127.0.0.1:4318/\"").expect("valid");
    assert_eq!(
        on.traces,
        Some(TracesSpec {
            otlp: "http://127.0.0.1:4318/".into(),
            service_name: "panal".into(),
        })
    );
    let named = with("[traces]\notlp = \"http://c:4318\"\nservice_name = \"shop\"").expect("ok");
    assert_eq!(named.traces.map(|t| t.service_name), Some("shop".into()));
    // An environment variable that is empty (or unset, with a fallback) turns them off.
    let off = with("[traces]\notlp = \"${NOT_SET:-}\"").expect("off");
    assert_eq!(off.traces, None);
    for (section, field, says) in [
        (
            "[traces]\notlp = \"grpc://c:4317\"",
            "traces.otlp",
            "http://HOST:PORT",
        ),
        (
            "[traces]\notlp = \"http://\"",
            "traces.otlp",
            "not an OTLP/HTTP",
        ),
        ("[traces]\notlp = \"${NOT_SET}\"", "traces.otlp", "NOT_SET"),
        (
            "[traces]\notlp = \"http://c:4318\"\nservice_name = \"\"",
            "traces.service_name",
            "1 to 128",
        ),
        (
            "[traces]\notlp = \"http://c:4318\"\nsample = 1",
            "",
            "unknown field `sample`",
        ),
    ] {
        let err = with(section).expect_err(section).to_string();
        assert!(
            err.contains(field) && err.contains(says),
            "{section}: {err}"
        );
    }
}
