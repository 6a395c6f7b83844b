//! Hostile components and messages against the real binary: storage is capped and under
//! a quota (the keyvalue error past it, also after a restart), messages a component
//! makes are capped, metadata a broker cannot carry is the guest's error, and on NATS a
//! message JetStream will never take is dead-lettered out of the outbox instead of
//! blocking every durable message behind it; an instance holds a bounded number of host
//! resources; instances past the host-wide guest memory budget wait, then get 503; the
//! pool's size and address space are the operator's to set, and a setting that cannot
//! work is refused at start.

use std::time::Duration;

use panal_tests::{client, component, eventually, refused, NatsServer, Panal};
use reqwest::StatusCode;
use serde_json::Value;

fn manifest(messaging: &str) -> String {
    format!(
        r#"version = 1
{messaging}

[messaging.streams.WORK]
subjects = ["work.>"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
messaging = {{ publish = ["work.>", "plain.>"] }}
limits = {{ kv_max_keys = 5, kv_max_mb = 1 }}
"#,
        probe = component("probe"),
    )
}

async fn put(panal: &Panal, key: &str, body: Vec<u8>) -> (StatusCode, String) {
    let resp = client()
        .put(panal.at(&format!("/probe/kv/default/{key}")))
        .body(body)
        .send()
        .await
        .expect("put");
    (resp.status(), resp.text().await.unwrap_or_default())
}

async fn get(panal: &Panal, path: &str) -> (StatusCode, String) {
    let resp = client().get(panal.at(path)).send().await.expect("get");
    (resp.status(), resp.text().await.unwrap_or_default())
}

async fn publish(panal: &Panal, subject_and_query: &str) -> (StatusCode, String) {
    let resp = client()
        .post(panal.at(&format!("/probe/msg/publish/{subject_and_query}")))
        .body("hi")
        .send()
        .await
        .expect("publish");
    (resp.status(), resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn storage_is_capped_and_under_a_quota_and_messages_are_capped() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(""), data.path());

    // Five keys fit; a sixth is refused with the keyvalue error, naming the limit.
    for i in 0..5 {
        let (s, body) = put(&panal, &format!("k{i}"), b"v".to_vec()).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    }
    let (s, body) = put(&panal, "k5", b"v".to_vec()).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("kv_max_keys"), "{body}");
    // Overwriting a key adds none; deleting one makes room.
    assert_eq!(
        put(&panal, "k0", b"again".to_vec()).await.0,
        StatusCode::NO_CONTENT
    );
    let deleted = client()
        .delete(panal.at("/probe/kv/default/k4"))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    // The bytes quota: 1 MiB, so a second 600 KB value does not fit.
    let big = vec![b'x'; 600 << 10];
    assert_eq!(
        put(&panal, "big1", big.clone()).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, body) = put(&panal, "k0", big).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("kv_max_mb"), "{body}");
    let (s, body) = get(&panal, "/probe/kv/default/k0").await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "again"),
        "nothing was lost"
    );

    // One key named 100 000 times in a batch read: refused, the host unharmed.
    let (s, body) = get(&panal, "/probe/kv/default/k1/many?times=100000").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("at most 1000"), "{body}");
    let (s, body) = get(&panal, "/probe/kv/default/k1/many?times=10").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains(r#""count":10"#), "{body}");

    // A message over the cap traps the instance, naming the limit; the next is fine.
    let (s, body) = publish(&panal, "plain.x?size=2000000").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("limit hit: messaging"), "{body}");
    // Metadata no broker header can carry is the guest's error, not the host's panic.
    let (s, body) = publish(&panal, "plain.x?meta=a%20b").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("cannot be sent"), "{body}");
    assert_eq!(publish(&panal, "plain.x").await.0, StatusCode::NO_CONTENT);
    panal.stop();

    // The quota holds across a restart: usage is read back from storage.
    let panal = Panal::start(&manifest(""), data.path());
    let (s, body) = put(&panal, "k9", b"v".to_vec()).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("kv_max_keys"), "{body}");
    panal.stop();
}

#[tokio::test]
async fn a_message_nats_will_never_take_is_dead_lettered_not_retried_forever() {
    // The host starts before NATS: durable publishes go to the outbox, whose first
    // message turns out to be over the server's max_payload once it is up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest(""), data.path())
        .args(&["--nats", &format!("nats://127.0.0.1:{port}")])
        .start();
    // A metadata name NATS cannot carry: refused now, never queued.
    let (s, body) = publish(&panal, "work.bad?meta=a%3Ab").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("cannot be sent"), "{body}");
    assert_eq!(
        publish(&panal, "work.big?size=100000").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        publish(&panal, "work.small").await.0,
        StatusCode::NO_CONTENT
    );

    let nats = NatsServer::start_with(port, "max_payload: 65536\n");
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("connect"));
    // The small message gets through behind the dead big one.
    let stored = eventually(Duration::from_secs(20), || async {
        let mut stream = js.get_stream("WORK").await.ok()?;
        let info = stream.info().await.ok()?;
        (info.state.messages >= 1).then_some(info.state.messages)
    })
    .await;
    assert_eq!(
        stored,
        Some(1),
        "the queue behind the bad message never moved"
    );
    let msg = js
        .get_stream("WORK")
        .await
        .expect("stream")
        .get_last_raw_message_by_subject("work.small")
        .await
        .expect("work.small stored");
    assert_eq!(msg.payload.as_ref(), b"hi");
    let metrics = panal.metrics().await;
    assert!(
        metrics.contains("panal_outbox_dead_lettered_total 1"),
        "{metrics}"
    );
    // Publishing goes on as normal.
    assert_eq!(
        publish(&panal, "work.after").await.0,
        StatusCode::NO_CONTENT
    );
    let log = panal.stop();
    assert!(
        log.contains("dead-lettered a message NATS will not take"),
        "{log}"
    );
}

/// One component cannot take more of the instance pool than its share: an instance may
/// have at most 8 core instances (a deploy of more is refused, naming why), and
/// `memory_mb` bounds all of an instance's memories together.
#[tokio::test]
async fn a_component_cannot_take_more_than_its_share_of_the_pool() {
    let manifest = format!(
        r#"version = 1
[components.hello]
source = "{hello}"
routes = ["/hello"]
limits = {{ memory_mb = 2 }}
"#,
        hello = component("hello"),
    );
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest, data.path());
    let c = client();
    let deploy = |bytes: Vec<u8>| {
        c.put(format!("{}/components/greedy?route=/greedy", panal.admin))
            .body(bytes)
            .send()
    };
    let refused = deploy(panal_tests::fixtures::many_core_instances(40))
        .await
        .expect("deploy");
    let status = refused.status();
    let body = refused.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("instance"), "{body}");

    // Two memories of 1.25 MiB each are over memory_mb = 2 together.
    let two = panal_tests::fixtures::two_memories_growing(20);
    let replaced = c
        .put(format!("{}/components/hello", panal.admin))
        .body(two)
        .send()
        .await
        .expect("deploy");
    let status = replaced.status();
    let why = replaced.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{why}");
    let (s, body) = get(&panal, "/hello/x").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("ran out of memory (limit 2 MiB)"), "{body}");
    panal.stop();
}

/// An instance holds at most a number of host resources that grows with its memory
/// limit (256 per MiB: 32768 at the default 128 MiB), so a guest making messages in a
/// loop cannot make the host hold memory outside `memory_mb`; past it the request
/// fails, and the next one is served. (Without the cap 40000 are taken: wasmtime's own
/// store limit lies beyond.)
#[tokio::test]
async fn an_instance_holds_a_bounded_number_of_host_resources() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(""), data.path());
    let (status, body) = get(&panal, "/probe/msg/hold?n=1000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&panal, "/probe/msg/hold?n=40000").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (status, body) = get(&panal, "/probe/msg/hold?n=10").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let log = panal.stop();
    assert!(log.contains("resource table"), "{log}");
}

/// The host-wide guest memory budget (`--guest-memory-mb 64`) is charged the memory
/// instances grow to: one instance that grows page by page is refused at the budget
/// (not at its `memory_mb` of 128) and keeps what it got; while it holds it, a new
/// instance waits its `queue_ms`, then gets 503 naming the budget; `/metrics` shows the
/// budget, what is used and what was refused; once it ends, the memory is back, and an
/// allocation past the budget fails with 503 naming it, not as the guest's own limit.
#[tokio::test]
async fn instances_past_the_guest_memory_budget_wait_then_get_503() {
    const MIB: u64 = 1 << 20;
    let manifest = format!(
        "version = 1\n[components.p]\nsource = \"{}\"\nroutes = [\"/p\"]\nkeyvalue = [\"b\"]\n\
         limits = {{ memory_mb = 128, queue_ms = 300, timeout_ms = 10000 }}\n",
        component("probe")
    );
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest, data.path())
        .args(&["--guest-memory-mb", "64"])
        .start();
    let c = client();
    let holder = tokio::spawn({
        let (c, url) = (c.clone(), panal.at("/p/grow?pages=4096&hold_ms=3000"));
        async move {
            let resp = c.get(url).send().await.expect("get");
            (resp.status(), resp.json::<Value>().await.expect("json"))
        }
    });
    let metric = |text: &str, name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let held = eventually(Duration::from_secs(5), || async {
        let m = panal.metrics().await;
        (metric(&m, "panal_guest_memory_used_bytes") > 63 * MIB).then_some(m)
    })
    .await
    .expect("the holder grows to the budget");
    assert_eq!(metric(&held, "panal_guest_memory_budget_bytes"), 64 * MIB);
    let started = std::time::Instant::now();
    let waited = c.get(panal.at("/p/config")).send().await.expect("get");
    assert_eq!(waited.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited queue_ms"
    );
    assert_eq!(waited.headers()["retry-after"], "1");
    let body = waited.text().await.expect("body");
    assert!(body.contains("guest memory budget (64 MiB)"), "{body}");
    let (status, grown) = holder.await.expect("task");
    assert_eq!(status, StatusCode::OK, "{grown}");
    assert_eq!(grown["refused"], true, "{grown}");
    assert!(grown["grown"].as_u64().expect("pages") < 1024, "{grown}");
    let after = eventually(Duration::from_secs(5), || async {
        let m = panal.metrics().await;
        (metric(&m, "panal_guest_memory_used_bytes") == 0).then_some(m)
    })
    .await
    .expect("the memory is given back");
    assert_eq!(metric(&after, "panal_guest_memory_refused_total"), 2);
    let ok = c.get(panal.at("/p/config")).send().await.expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
    let big = c
        .get(panal.at("/p/alloc?mb=100"))
        .send()
        .await
        .expect("get");
    assert_eq!(big.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = big.text().await.expect("body");
    assert!(body.contains("guest memory budget (64 MiB)"), "{body}");
    let log = panal.stop();
    assert!(
        log.contains("limit hit: the host's guest memory budget"),
        "{log}"
    );
}

/// `--max-instances` and `--memory-reservation-mb` size the pool for a host short of
/// address space: a reservation below the largest `memory_mb` is refused at start,
/// naming both; with one instance in the pool, a second request while the first holds
/// it gets 503 naming the instance limit, and is served again once the first ends.
#[tokio::test]
async fn the_pool_is_the_operators_to_size() {
    let manifest = format!(
        "version = 1\n[components.p]\nsource = \"{}\"\nroutes = [\"/p\"]\nkeyvalue = [\"b\"]\n",
        component("probe")
    );
    let err = refused(&manifest, &[], &["--memory-reservation-mb", "64"]);
    assert!(
        err.contains("--memory-reservation-mb 64 is below") && err.contains("128 MiB"),
        "{err}"
    );
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest, data.path())
        .args(&["--max-instances", "1", "--memory-reservation-mb", "128"])
        .start();
    let c = client();
    let holder = tokio::spawn({
        let (c, url) = (c.clone(), panal.at("/p/grow?pages=1&hold_ms=3000"));
        async move { c.get(url).send().await.expect("get").status() }
    });
    // Nothing else is sent until the holder's instance runs: it alone takes the pool.
    let running = "panal_requests_in_flight{component=\"p\"} 1";
    eventually(Duration::from_secs(10), || async {
        panal.metrics().await.contains(running).then_some(())
    })
    .await
    .expect("the holder runs");
    let full = c.get(panal.at("/p/config")).send().await.expect("get");
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = full.text().await.expect("body");
    assert!(body.contains("instance limit"), "{body}");
    assert_eq!(holder.await.expect("task"), StatusCode::OK);
    // The holder's instance goes back to the pool just after its answer is written.
    eventually(Duration::from_secs(5), || async {
        let resp = c.get(panal.at("/p/config")).send().await.expect("get");
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await
    .expect("served again once the holder ended");
}
