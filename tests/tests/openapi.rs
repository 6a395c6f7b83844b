//! The shop's OpenAPI document (`openapi.json`, served at `GET /openapi.json`): served
//! as written, refused at load when it documents an operation no route serves, and
//! fuzzed with schemathesis against the real binary: no generated input, valid or not,
//! may get a 5xx from the gateway or a shop service.

use std::process::Command;

use panal_tests::shop::{start, Shop};
use panal_tests::{client, panal_bin, repo};
use reqwest::StatusCode;

#[tokio::test]
async fn the_document_is_served_as_written() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let resp = client()
        .get(panal.at("/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served = resp.bytes().await.expect("body");
    let file = std::fs::read(repo().join("openapi.json")).expect("openapi.json");
    assert_eq!(served.as_ref(), file.as_slice());
    panal.stop();
}

#[test]
fn a_document_with_an_unrouted_operation_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let doc = r#"{"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
        "paths": {"/hello/{id}": {"get": {"responses": {"200": {"description": "ok"}}}},
                  "/nowhere": {"get": {"responses": {"200": {"description": "ok"}}}},
                  "/hello": {"delete": {"responses": {"200": {"description": "ok"}}}}}}"#;
    std::fs::write(dir.path().join("api.json"), doc).expect("write");
    let manifest = format!(
        "version = 1\n[gateway]\nopenapi = \"api.json\"\n\n[components.hello]\nsource = \"{}\"\nroutes = [{{ prefix = \"/hello\", methods = [\"GET\"] }}]\n",
        panal_tests::component("hello")
    );
    std::fs::write(dir.path().join("panal.toml"), manifest).expect("write");
    let out = Command::new(panal_bin())
        .args(["check", "--manifest"])
        .arg(dir.path().join("panal.toml"))
        .arg("--data-dir")
        .arg(dir.path().join(".panal"))
        .output()
        .expect("check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "gateway.openapi: documents operations no route serves: DELETE /hello, GET /nowhere"
        ),
        "{err}"
    );
}

/// The schemathesis command line, as `setup.sh` installs it.
fn schemathesis() -> Command {
    let probe = Command::new("st").arg("--version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "schemathesis (`st`) is missing: run scripts/setup.sh"
    );
    Command::new("st")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    // A real user, an admin, so protected operations and catalogue writes get past the
    // token and role checks.
    let (id, token) = shop.user("admin@example.com").await;
    panal.grant(&id, "admin").await;
    let (s, _) = shop
        .post(
            "/products",
            Some(&token),
            serde_json::json!({"name": "Fuzz", "price_cents": 1, "stock": 1}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the admin's token has no admin role"
    );
    let (s, _) = shop.get("/users/me", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    let url = panal.at("/openapi.json");
    let out = tokio::task::spawn_blocking(move || {
        schemathesis()
            .args(["run", &url])
            .args(["--checks", "not_a_server_error"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "25", "--max-time", "40", "--workers", "1"])
            .args(["--seed", "1"])
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("join");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(shop);
    let log = panal.stop();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n--- panal log (tail) ---\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
}
