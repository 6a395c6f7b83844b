//! End to end through the real binary: routing, request ids, a plain `wasi` proxy
//! component, streaming, calls between components, outbound denial, logs and limits.

use panal_tests::{client, component, Panal};
use serde_json::Value;

fn manifest() -> String {
    format!(
        r#"version = 1
[components.hello]
source = "{hello}"
routes = ["/hello", {{ prefix = "/only-post", methods = ["POST"] }}]
# The streaming test sends 3 MB, past the 1 MiB default.
limits = {{ max_body_kb = 8192 }}

[components.probe]
source = "{probe}"
routes = ["/probe", "/hello/probe"]
keyvalue = ["default"]
outbound = ["hello", "127.0.0.1:1"]
limits = {{ timeout_ms = 1500, memory_mb = 32 }}

[components.loner]
source = "{probe}"
routes = ["/loner"]
keyvalue = ["default"]
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.expect("json body")
}

#[tokio::test]
async fn routes_by_longest_prefix_and_method_with_json_errors() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();

    let hello = json(c.get(panal.at("/hello/x?a=1")).send().await.expect("get")).await;
    assert_eq!(hello["component"], "hello");
    assert_eq!(hello["path"], "/hello/x?a=1");
    // A longer prefix inside /hello belongs to probe.
    let probe = c
        .get(panal.at("/hello/probe/nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(probe.status(), 404);
    assert_eq!(json(probe).await["error"], "no such probe endpoint");
    // Segment boundaries: /hellox is not /hello.
    let missing = c.get(panal.at("/hellox")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"].to_str().expect("ascii"),
        "application/json"
    );
    let body = json(missing).await;
    assert_eq!(body["error"], "no route for this path");
    assert_eq!(body["path"], "/hellox");

    let wrong = c.get(panal.at("/only-post")).send().await.expect("get");
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "POST");
    let right = c.post(panal.at("/only-post")).send().await.expect("post");
    assert_eq!(right.status(), 200);

    let health = c
        .get(format!("{}/healthz", panal.admin))
        .send()
        .await
        .expect("health");
    assert_eq!(json(health).await["status"], "ok");
    panal.stop();
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_reach_the_component() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let given = c
        .get(panal.at("/hello"))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .expect("get");
    assert_eq!(given.headers()["x-request-id"], "client-id-42");
    assert_eq!(json(given).await["request_id"], "client-id-42");

    let made = c.get(panal.at("/hello")).send().await.expect("get");
    let id = made.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(json(made).await["request_id"], id.as_str());
    // Even a 404 from the gateway itself carries one.
    let nf = c.get(panal.at("/nowhere")).send().await.expect("get");
    assert!(nf.headers().contains_key("x-request-id"));
    let log = panal.stop();
    // One access line per request, in the log's line format.
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains("panal::access: answered") && l.contains(needle))
            .unwrap_or_else(|| panic!("no access line with {needle}:\n{log}"))
            .to_string()
    };
    let given = line("id=client-id-42 ");
    let (stamp, rest) = given.split_once("  INFO ").expect("a level");
    assert!(
        stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "RFC 3339 UTC with microseconds: {stamp}"
    );
    let micros = rest
        .strip_prefix(
            "panal::access: answered id=client-id-42 method=GET path=/hello \
             component=hello route=/hello status=200 micros=",
        )
        .unwrap_or_else(|| panic!("the access line's fields: {rest}"));
    assert!(micros.parse::<u64>().is_ok(), "{micros}");
    let nowhere = line("path=/nowhere ");
    assert!(
        nowhere.contains(" component= route= status=404 micros="),
        "{nowhere}"
    );
}

#[tokio::test]
async fn the_access_log_follows_rust_log() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest(), data.path())
        .env(&[("RUST_LOG", "info,panal::access=off")])
        .start();
    let ok = client().get(panal.at("/hello")).send().await.expect("get");
    assert_eq!(ok.status(), 200);
    let log = panal.stop();
    assert!(!log.contains("panal::access"), "{log}");
    assert!(log.contains("component ready"), "other lines stay: {log}");
}

#[tokio::test]
async fn a_plain_wasi_proxy_component_streams_bodies_and_logs_its_output() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = client()
        .post(panal.at("/hello/echo"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(echoed.status(), 200);
    let id = echoed.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        echoed.bytes().await.expect("bytes").as_ref(),
        body.as_slice()
    );
    let log = panal.stop();
    let line = log
        .lines()
        .find(|l| l.contains("hello handled POST /hello/echo"))
        .unwrap_or_else(|| panic!("component stdout not in the log:\n{log}"));
    assert!(line.contains("component=\"hello\""), "{line}");
    assert!(line.contains("stream=\"stdout\""), "{line}");
    assert!(line.contains(&format!("request_id={id}")), "{line}");
    assert!(log.contains("hello stderr POST /hello/echo"), "{log}");
}

#[tokio::test]
async fn components_call_each_other_by_name_and_outbound_is_deny_by_default() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let call = |from: &str, url: &str| c.get(panal.at(&format!("/{from}/call?url={url}"))).send();

    let ok = call("probe", "http://hello/from-probe")
        .await
        .expect("call");
    assert_eq!(ok.status(), 200);
    let ok = json(ok).await;
    assert_eq!(ok["status"], 200);
    let inner: Value = serde_json::from_str(ok["body"].as_str().expect("body")).expect("json");
    assert_eq!(inner["component"], "hello");
    assert_eq!(inner["path"], "/from-probe");

    // loner has no outbound grants at all; probe is not granted `loner` nor other hosts.
    for (from, url) in [
        ("loner", "http://hello/x"),
        ("probe", "http://loner/x"),
        ("probe", "http://127.0.0.2:1/x"),
        ("probe", "https://hello/x"),
    ] {
        let denied = call(from, url).await.expect("call");
        assert_eq!(denied.status(), 502, "{from} → {url}");
        let err = json(denied).await;
        assert!(
            err["error"]
                .as_str()
                .expect("error")
                .contains("HttpRequestDenied"),
            "{from} → {url}: {err}"
        );
    }
    // Granted, but nothing listens there: a connection error, still not a trap.
    let refused = json(call("probe", "http://127.0.0.1:1/x").await.expect("call")).await;
    assert!(
        refused["error"]
            .as_str()
            .expect("error")
            .contains("Connection"),
        "{refused}"
    );
    let log = panal.stop();
    assert!(log.contains("outbound request denied"), "{log}");
}

#[tokio::test]
async fn traps_and_runaway_guests_are_contained() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let trap = c.get(panal.at("/probe/trap")).send().await.expect("trap");
    assert_eq!(trap.status(), 500);
    assert_eq!(json(trap).await["component"], "probe");
    let spin = c.get(panal.at("/probe/spin")).send().await.expect("spin");
    assert_eq!(spin.status(), 504);
    assert!(json(spin).await["error"]
        .as_str()
        .expect("e")
        .contains("1500 ms"));
    let bomb = c
        .get(panal.at("/probe/alloc?mb=64"))
        .send()
        .await
        .expect("alloc");
    assert_eq!(bomb.status(), 500);
    let small = c
        .get(panal.at("/probe/alloc?mb=4"))
        .send()
        .await
        .expect("alloc");
    assert_eq!(small.status(), 200);
    // The host is still fine.
    let hello = c.get(panal.at("/hello")).send().await.expect("hello");
    assert_eq!(hello.status(), 200);
    panal.stop();
}

#[tokio::test]
async fn busy_guests_do_not_starve_other_requests() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    // More CPU-bound guests than the host has worker threads (this machine has 2).
    let spins: Vec<_> = (0..6)
        .map(|_| {
            let req = c.get(panal.at("/probe/spin"));
            tokio::spawn(async move {
                let resp = req.send().await.expect("spin");
                (resp.status(), std::time::Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let hello = c.get(panal.at("/hello")).send().await.expect("hello");
    let hello_done = std::time::Instant::now();
    assert_eq!(hello.status(), 200);
    for spin in spins {
        let (status, done) = spin.await.expect("join");
        assert_eq!(status, 504);
        // Answered while the spinning guests were still running, not after them.
        assert!(hello_done < done, "hello waited for the busy guests");
    }
    panal.stop();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let url = panal.at("/probe/sleep?ms=700");
    let slow = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = tokio::task::spawn_blocking(move || panal.stop())
        .await
        .expect("stop");
    let resp = slow
        .await
        .expect("join")
        .expect("in-flight request answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["slept_ms"], 700);
    assert!(log.contains("storage flushed"), "{log}");
}
