//! End to end: wasi:keyvalue on the real SQLite backend through the real binary —
//! grants, isolation between components, persistence across restarts, atomic counters
//! and CAS under concurrency; wasi:config with env substitution; the compile cache.

use futures::future::join_all;
use panal_tests::{client, component, get_json, Panal};
use serde_json::Value;

fn manifest() -> String {
    format!(
        r#"version = 1
[components.probe-a]
source = "{probe}"
routes = ["/probe-a"]
keyvalue = ["default", "extra"]
config = {{ greeting = "hi ${{PANAL_TEST_GREETING}}", plain = "x" }}

[components.probe-b]
source = "{probe}"
routes = ["/probe-b"]
keyvalue = ["default"]
"#,
        probe = component("probe"),
    )
}

fn start(data: &std::path::Path) -> Panal {
    Panal::with(&manifest(), data)
        .env(&[("PANAL_TEST_GREETING", "from env")])
        .start()
}

#[tokio::test]
async fn keys_persist_across_restarts_and_stay_private_to_each_component() {
    let data = tempfile::tempdir().expect("tmp");
    let c = client();
    let panal = start(data.path());
    let put = c
        .put(panal.at("/probe-a/kv/default/greeting"))
        .body("hola")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 204);
    // Same bucket name, same key, other component: not visible.
    let other = c
        .get(panal.at("/probe-b/kv/default/greeting"))
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);
    c.put(panal.at("/probe-b/kv/default/greeting"))
        .body("b's own")
        .send()
        .await
        .expect("put");
    panal.stop();

    let panal = start(data.path());
    let a = c
        .get(panal.at("/probe-a/kv/default/greeting"))
        .send()
        .await
        .expect("get");
    assert_eq!(a.status(), 200);
    assert_eq!(a.text().await.expect("text"), "hola");
    let b = c
        .get(panal.at("/probe-b/kv/default/greeting"))
        .send()
        .await
        .expect("get");
    assert_eq!(b.text().await.expect("text"), "b's own");
    let list: Value = get_json(&c, panal.at("/probe-a/kv/default")).await;
    assert_eq!(list["keys"], serde_json::json!(["greeting"]));
    let del = c
        .delete(panal.at("/probe-a/kv/default/greeting"))
        .send()
        .await
        .expect("del");
    assert_eq!(del.status(), 204);
    let gone = c
        .get(panal.at("/probe-a/kv/default/greeting"))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), 404);
    panal.stop();
}

#[tokio::test]
async fn a_bucket_not_granted_is_access_denied() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let c = client();
    let ok = c
        .put(panal.at("/probe-a/kv/extra/k"))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(ok.status(), 204);
    // probe-b is granted only `default`.
    let denied = c
        .put(panal.at("/probe-b/kv/extra/k"))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.expect("json");
    assert_eq!(body["error"], "access-denied");
    assert_eq!(body["bucket"], "extra");
    panal.stop();
}

#[tokio::test]
async fn two_hundred_parallel_increments_add_up_exactly() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let c = client();
    let url = panal.at("/probe-a/kv/default/counter/incr?by=3");
    let results = join_all((0..200).map(|_| c.post(&url).send())).await;
    let mut seen = Vec::new();
    for r in results {
        let r = r.expect("increment");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        seen.push(v["value"].as_i64().expect("value"));
    }
    // Every increment saw a distinct value: none was lost or doubled.
    seen.sort_unstable();
    assert_eq!(seen, (1..=200).map(|i| i * 3).collect::<Vec<i64>>());
    let total = c
        .get(panal.at("/probe-a/kv/default/counter"))
        .send()
        .await
        .expect("get");
    assert_eq!(total.text().await.expect("text"), "600");
    panal.stop();
}

#[tokio::test]
async fn concurrent_cas_appends_lose_nothing_and_batches_work() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let c = client();
    let url = panal.at("/probe-a/kv/default/log/cas-append");
    let results = join_all((0..40).map(|_| c.post(&url).body("x").send())).await;
    for r in results {
        assert_eq!(r.expect("cas").status(), 200);
    }
    let log = c
        .get(panal.at("/probe-a/kv/default/log"))
        .send()
        .await
        .expect("get");
    assert_eq!(log.text().await.expect("text"), "x".repeat(40));

    let batch: Value = c
        .post(panal.at("/probe-a/kv/default/batch"))
        .body(r#"{"k1":"v1","k2":"v2"}"#)
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    assert_eq!(
        batch["got"],
        serde_json::json!({"k1": "v1", "k2": "v2", "__missing__": null})
    );
    panal.stop();
}

#[tokio::test]
async fn config_values_come_from_the_manifest_with_env_substituted() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let c = client();
    let one: Value = get_json(&c, panal.at("/probe-a/config/greeting")).await;
    assert_eq!(one["value"], "hi from env");
    let all: Value = get_json(&c, panal.at("/probe-a/config")).await;
    assert_eq!(
        all,
        serde_json::json!({"greeting": "hi from env", "plain": "x"})
    );
    let none: Value = get_json(&c, panal.at("/probe-b/config/greeting")).await;
    assert_eq!(none["value"], Value::Null);
    panal.stop();
}

#[tokio::test]
async fn the_second_start_takes_compiled_components_from_the_cache() {
    let data = tempfile::tempdir().expect("tmp");
    let first = start(data.path()).stop();
    // probe-a and probe-b share one .wasm: compiled once, the second is a cache hit.
    assert!(
        first.contains("components loaded compiled=1 from_cache=1"),
        "{first}"
    );
    let second = start(data.path()).stop();
    assert!(
        second.contains("components loaded compiled=0 from_cache=2"),
        "{second}"
    );
    let cached: Vec<_> = std::fs::read_dir(data.path().join("cache"))
        .expect("cache dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1);
}
