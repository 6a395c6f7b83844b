//! WASI 0.3 services (`wasi:http/service`, an async `handle`) served beside WASI 0.2
//! proxies by the real binary: through the gateway, called in-process by name from a 0.2
//! component and calling one by name within its grants, many at once, deployed and swapped like any component; and a component
//! that exports neither world is refused with what it does export. Concurrent
//! instances: one instance serves many requests at once, each with its own context;
//! a runaway or trapping guest fails its own instance's requests and is dropped.

use futures::future::join_all;
use std::time::Duration;

use panal_tests::{client, component, eventually, sha_prefix, Panal};

fn manifest() -> String {
    format!(
        r#"version = 1
[components.hello]
source = "{hello}"
routes = ["/hello"]

[components.hello-p3]
source = "{hello_p3}"
routes = ["/p3"]
outbound = ["hello"]

[components.probe-p3]
source = "{probe_p3}"
routes = ["/probe-p3"]
keyvalue = ["default"]
config = {{ greeting = "hola" }}
messaging = {{ publish = ["p3.>"] }}

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
outbound = ["hello-p3"]
messaging = {{ subscribe = ["p3.*"] }}

[components.p3-short]
source = "{hello_p3}"
routes = ["/short"]
limits = {{ timeout_ms = 1500, concurrent = 4, idle_ms = 60000 }}

[components.p3-fresh]
source = "{hello_p3}"
routes = ["/fresh"]
limits = {{ reuse = 1 }}

# A chain of the bench's `chain` scenario: a 0.3 link calling a 0.2 one by name.
[components.p3-link]
source = "{probe_p3}"
routes = ["/p3-chain"]
keyvalue = ["default"]
outbound = ["bench-link"]
config = {{ next = "bench-link" }}

[components.bench-link]
source = "{bench}"
routes = ["/bench-link"]
keyvalue = ["default"]
"#,
        bench = component("bench"),
        hello = component("hello"),
        hello_p3 = component("hello_p3"),
        probe_p3 = component("probe_p3"),
        probe = component("probe"),
    )
}

#[tokio::test]
async fn wasi_0_3_services_run_beside_0_2_proxies() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();

    // Through the gateway: the body is written by the guest after it returned the
    // response, so the host kept the instance's event loop running.
    let resp = c.get(panal.at("/p3/x?y=1")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    let p3_bytes = std::fs::read(component("hello_p3")).expect("hello_p3");
    assert_eq!(
        resp.headers()["x-panal-version"],
        sha_prefix(&p3_bytes).as_str()
    );
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.text().await.expect("body"),
        "hello from WASI 0.3: GET /p3/x?y=1"
    );
    let old = c.get(panal.at("/hello/x")).send().await.expect("get");
    assert_eq!(old.status(), 200, "the 0.2 proxy beside it");

    // A 0.2 component calls the 0.3 one by name, in-process.
    let call = c
        .get(panal.at("/probe/call?url=http://hello-p3/p3/called"))
        .send()
        .await
        .expect("call");
    assert_eq!(call.status(), 200);
    let text = call.text().await.expect("body");
    assert!(
        text.contains("hello from WASI 0.3: GET /p3/called"),
        "{text}"
    );

    // The 0.3 one calls a 0.2 one by name over wasi:http/client: in-process, carrying
    // the request id, and only where its `outbound` grants allow.
    let call = c
        .get(panal.at("/p3/call/hello/hello/from-p3"))
        .header("x-request-id", "p3-call-1")
        .send()
        .await
        .expect("call");
    assert_eq!(call.status(), 200);
    let text = call.text().await.expect("body");
    assert!(text.starts_with("200 {"), "{text}");
    assert!(
        text.contains(r#""path":"/hello/from-p3""#) && text.contains(r#""request_id":"p3-call-1""#),
        "{text}"
    );
    let denied = c
        .get(panal.at("/p3/call/probe/probe/x"))
        .send()
        .await
        .expect("call");
    let text = denied.text().await.expect("body");
    assert_eq!(text, "failed: ErrorCode::HttpRequestDenied");

    // Many at once, none lost.
    let many = join_all((0..64).map(|i| {
        let c = c.clone();
        let url = panal.at(&format!("/p3/{i}"));
        async move {
            let r = c.get(url).send().await.expect("get");
            (r.status(), r.text().await.unwrap_or_default())
        }
    }))
    .await;
    for (i, (status, body)) in many.iter().enumerate() {
        assert_eq!(status.as_u16(), 200, "{i}: {body}");
        assert!(body.ends_with(&format!("/p3/{i}")), "{i}: {body}");
    }

    // Keyvalue, config and messaging from a 0.3 service, as from a 0.2 one: within
    // its grants, and a message carries the request id of the request that sent it.
    assert_eq!(get(&panal, "/probe-p3/kv/hits").await.1, "hits = 1");
    assert_eq!(get(&panal, "/probe-p3/kv/hits").await.1, "hits = 2");
    assert_eq!(
        get(&panal, "/probe-p3/config/greeting").await.1,
        "greeting = hola"
    );
    assert_eq!(get(&panal, "/probe-p3/config/other").await.1, "other unset");
    let sent = c
        .get(panal.at("/probe-p3/publish/p3.note"))
        .header("x-request-id", "p3-msg-1")
        .send()
        .await
        .expect("publish");
    assert_eq!(sent.text().await.expect("body"), "published to p3.note");
    let kept = |key: &'static str| {
        let url = panal.at(&format!("/probe/kv/default/{key}"));
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.ok()?;
            (r.status() == 200).then_some(())?;
            r.text().await.ok()
        }
    };
    let last = eventually(Duration::from_secs(10), || kept("last:p3.note")).await;
    assert_eq!(last.as_deref(), Some("from p3"));
    let meta = eventually(Duration::from_secs(5), || kept("meta:p3.note"))
        .await
        .expect("meta");
    assert!(meta.contains(r#""x-request-id":"p3-msg-1""#), "{meta}");
    let denied = get(&panal, "/probe-p3/publish/elsewhere.note").await.1;
    assert!(
        denied.starts_with("publish failed: Error::PermissionDenied"),
        "{denied}"
    );

    // A 0.3 service swaps in for a 0.2 proxy like any new version.
    let swapped = c
        .put(format!("{}/components/hello", panal.admin))
        .body(p3_bytes.clone())
        .send()
        .await
        .expect("deploy");
    assert_eq!(
        swapped.status(),
        200,
        "{}",
        swapped.text().await.unwrap_or_default()
    );
    let now = c.get(panal.at("/hello/z")).send().await.expect("get");
    assert_eq!(
        now.text().await.expect("body"),
        "hello from WASI 0.3: GET /hello/z"
    );

    // A component that exports neither world is refused, naming what it exports.
    let empty = b"\0asm\x0d\x00\x01\x00".to_vec();
    let refused = c
        .put(format!("{}/components/nothing?route=/nothing", panal.admin))
        .body(empty)
        .send()
        .await
        .expect("deploy");
    let status = refused.status();
    let why = refused.text().await.unwrap_or_default();
    assert!(status.is_client_error(), "{status}: {why}");
    assert!(
        why.contains("wasi:http/handler@0.3.x") && why.contains("it exports nothing"),
        "{why}"
    );
    panal.stop();
}

async fn get(panal: &Panal, path: &str) -> (u16, String) {
    let r = client().get(panal.at(path)).send().await.expect("get");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_0_3_instance_serves_many_requests_at_once_each_in_its_own_context() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();

    // Kept between requests by default (what one request leaves is seen by the next);
    // `reuse = 1` gives every request a fresh instance.
    let (_, first) = get(&panal, "/p3/count").await;
    let (_, second) = get(&panal, "/p3/count").await;
    assert_eq!(first, "request 1 of this instance");
    assert_eq!(second, "request 2 of this instance");
    for _ in 0..2 {
        assert_eq!(
            get(&panal, "/fresh/count").await.1,
            "request 1 of this instance"
        );
    }

    // 16 requests that each wait 300 ms, sent at once: instances take several each.
    let before = panal.instances_created("hello-p3").await;
    let waits = join_all((0..16).map(|_| get(&panal, "/p3/wait/300"))).await;
    for (status, body) in &waits {
        assert_eq!(*status, 200, "{body}");
        assert!(body.starts_with("waited 300 ms"), "{body}");
    }
    let made = panal.instances_created("hello-p3").await - before;
    assert!(made < 16, "16 requests took {made} new instances");

    // Each request's outgoing call carries its own request id, though the requests
    // share instances and their calls interleave.
    let calls = join_all((0..24).map(|i| {
        let c = c.clone();
        let url = panal.at(&format!("/p3/call/hello/hello/ctx-{i}"));
        async move {
            let r = c
                .get(url)
                .header("x-request-id", format!("ctx-{i}"))
                .send()
                .await
                .expect("call");
            (i, r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    }))
    .await;
    for (i, status, body) in &calls {
        assert_eq!(*status, 200, "{body}");
        assert!(
            body.contains(&format!(r#""request_id":"ctx-{i}""#))
                && body.contains(&format!(r#""path":"/hello/ctx-{i}""#)),
            "request {i} got {body}"
        );
    }

    // A runaway guest is stopped at its deadline from outside the instance's event
    // loop; the instance is dropped and the next request gets a working one.
    let (status, body) = get(&panal, "/short/spin").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("1500"), "{body}");
    let (status, body) = get(&panal, "/short/count").await;
    assert_eq!(status, 200, "{body}");

    // A trap fails the request with the cause; the instance is dropped, not reused.
    let (_, kept) = get(&panal, "/short/count").await;
    assert!(kept.starts_with("request "), "{kept}");
    let (status, body) = get(&panal, "/short/trap").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("component failed"), "{body}");
    let (status, body) = get(&panal, "/short/count").await;
    assert_eq!((status, body.as_str()), (200, "request 1 of this instance"));

    // Requests held by an instance that traps fail with it; the others do not.
    let held = join_all((0..3).map(|_| get(&panal, "/short/wait/800")));
    let trap = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        get(&panal, "/short/trap").await
    };
    let (held, (trap_status, _)) = tokio::join!(held, trap);
    assert_eq!(trap_status, 500);
    for (status, body) in &held {
        assert!(
            *status == 200 || body.contains("component failed"),
            "{status}: {body}"
        );
    }
    let (status, _) = get(&panal, "/short/count").await;
    assert_eq!(status, 200);
    panal.stop();
}

#[tokio::test]
async fn a_chain_link_reads_its_storage_and_calls_the_next_by_name() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let chain = || async {
        let resp = c
            .get(panal.at("/p3-chain/chain/k"))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("body")
    };
    assert_eq!(chain().await, "- -", "neither link has k yet");
    let bumped = c.get(panal.at("/p3-chain/kv/k")).send().await.expect("get");
    assert_eq!(bumped.text().await.expect("body"), "k = 1");
    assert_eq!(chain().await, "1 -", "the first link's own storage");
    for _ in 0..2 {
        let bumped = c
            .get(panal.at("/bench-link/kv/k"))
            .send()
            .await
            .expect("get");
        assert_eq!(bumped.status(), 200);
    }
    assert_eq!(chain().await, "1 2", "the second link's own storage");
    panal.stop();
}
