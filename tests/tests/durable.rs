//! Durable messaging through the real binary: retries after a trap or error, then the
//! dead-letter subject (on both backends); and on a real `nats-server` that is stopped
//! and started again, no accepted order's event is lost, also across a host restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use panal_tests::shop::{manifest_on, Shop, SECRET};
use panal_tests::{client, component, eventually, synced, NatsServer, Panal};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn manifest(messaging: &str) -> String {
    format!(
        r#"version = 1
{messaging}

[messaging.streams.WORK]
subjects = ["work.>"]

[components.a]
source = "{probe}"
routes = ["/a"]
keyvalue = ["default"]
messaging = {{ publish = ["work.>"], subscribe = ["dead.work"] }}

[components.d]
source = "{probe}"
routes = ["/d"]
keyvalue = ["default"]
messaging = {{ subscribe = [{{ subject = "work.*", durable = true, max_attempts = 3, dead_letter = "dead.work" }}] }}
"#,
        probe = component("probe"),
    )
}

async fn read(panal: &Panal, path: &str) -> Option<String> {
    let resp = client().get(panal.at(path)).send().await.ok()?;
    (resp.status() == 200).then_some(())?;
    resp.text().await.ok()
}

async fn number(panal: &Panal, path: &str) -> i64 {
    read(panal, path)
        .await
        .map_or(0, |t| t.parse().expect("a counter"))
}

/// Wait until the counter at `path` reaches `want`, then return what it is.
async fn reaches(panal: &Panal, path: &str, want: i64) -> i64 {
    eventually(Duration::from_secs(15), || async {
        (number(panal, path).await >= want).then_some(())
    })
    .await;
    number(panal, path).await
}

async fn publish(panal: &Panal, subject: &str, body: &'static str) {
    let sent = client()
        .post(panal.at(&format!("/a/msg/publish/{subject}")))
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(sent.status(), 204, "publish to {subject}");
}

async fn retries_then_dead_letters(panal: &Panal) {
    // Success: handled once, acknowledged, never again.
    publish(panal, "work.fine", "ok").await;
    assert_eq!(reaches(panal, "/d/kv/default/count:work.fine", 1).await, 1);

    // A trap: three attempts, then the dead-letter subject with why.
    publish(panal, "work.trapped", "body one").await;
    assert_eq!(reaches(panal, "/a/kv/default/count:dead.work", 1).await, 1);
    assert_eq!(number(panal, "/d/kv/default/tries:work.trapped").await, 3);
    assert_eq!(
        read(panal, "/a/kv/default/last:dead.work").await.as_deref(),
        Some("body one")
    );
    let meta: Value = serde_json::from_str(
        &read(panal, "/a/kv/default/meta:dead.work")
            .await
            .expect("metadata"),
    )
    .expect("json");
    assert_eq!(meta["panal-dead-letter-subject"], "work.trapped");
    assert_eq!(meta["panal-dead-letter-attempts"], "3");
    let why = meta["panal-dead-letter-error"].as_str().unwrap_or_default();
    assert!(why.contains("trap"), "{meta}");

    // An error returned by the handler is a failure too.
    publish(panal, "work.failing", "body two").await;
    assert_eq!(reaches(panal, "/a/kv/default/count:dead.work", 2).await, 2);
    assert_eq!(number(panal, "/d/kv/default/tries:work.failing").await, 3);

    // Settled messages stay settled: nothing comes back later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(number(panal, "/d/kv/default/tries:work.fine").await, 1);
    assert_eq!(number(panal, "/d/kv/default/tries:work.trapped").await, 3);
    assert_eq!(number(panal, "/a/kv/default/count:dead.work").await, 2);
}

#[tokio::test]
async fn in_process_durable_deliveries_retry_then_dead_letter() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(""), data.path());
    retries_then_dead_letters(&panal).await;
    let log = panal.stop();
    assert!(
        log.contains("message dead-lettered after its last attempt"),
        "{log}"
    );
}

#[tokio::test]
async fn jetstream_deliveries_retry_then_dead_letter() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().expect("tmp");
    let backend = format!("[messaging]\nbackend = \"nats\"\nurl = \"{}\"", nats.url);
    let panal = Panal::start(&manifest(&backend), data.path());
    let outside = async_nats::connect(&nats.url).await.expect("connect");
    let mut dead = outside.subscribe("dead.work").await.expect("subscribe");
    synced(&outside).await;

    retries_then_dead_letters(&panal).await;

    // Any NATS client sees the dead letters, headers and all.
    let letter = tokio::time::timeout(Duration::from_secs(5), dead.next())
        .await
        .expect("a dead letter")
        .expect("message");
    let headers = letter.headers.expect("headers");
    assert_eq!(
        headers
            .get("panal-dead-letter-subject")
            .map(|v| v.to_string()),
        Some("work.trapped".into())
    );
    // A plain NATS publish into the stream is handled durably too.
    outside
        .publish("work.outside", "ok".into())
        .await
        .expect("publish");
    assert_eq!(
        reaches(&panal, "/d/kv/default/count:work.outside", 1).await,
        1
    );
    panal.stop();
}

/// The shop on `nats`, its order events in stream ORDERS and the notification service
/// a durable consumer of them.
fn durable_shop(nats: &NatsServer) -> String {
    manifest_on(
        "http",
        true,
        &format!("backend = \"nats\"\nurl = \"{}\"", nats.url),
    )
}

fn start_shop(manifest: &str, data: &std::path::Path) -> Panal {
    Panal::with(manifest, data)
        .env(&[("PANAL_TEST_JWT_SECRET", SECRET)])
        .start()
}

/// Per order id, the event types in `token`'s inbox once all `orders` have their two
/// events and their shipment's first there; panics with the inbox when they do not arrive. Also checks that no
/// event id appears twice.
async fn inbox_has_every_event(shop: &Shop<'_>, token: &str, orders: &[String]) {
    let complete = eventually(Duration::from_secs(60), || async {
        let (s, inbox) = shop.get("/notifications", Some(token)).await;
        (s == StatusCode::OK).then_some(())?;
        let mut by_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for e in inbox["items"].as_array()? {
            assert!(ids.insert(e["event_id"].to_string()), "duplicate: {e}");
            by_order
                .entry(e["order_id"].as_str()?.to_string())
                .or_default()
                .insert(e["type"].as_str()?.to_string());
        }
        // The shipping service (Python) made a shipment of each: durable both ways too.
        let want: BTreeSet<String> = ["orders.created", "orders.paid", "shipments.created"]
            .map(String::from)
            .into();
        orders
            .iter()
            .all(|o| by_order.get(o) == Some(&want))
            .then_some(())
    })
    .await;
    if complete.is_none() {
        let (_, inbox) = shop.get("/notifications", Some(token)).await;
        panic!("events of {} orders missing: {inbox}", orders.len());
    }
}

/// Order one `jar` with a card that pays; the accepted order.
async fn one_jar(shop: &Shop<'_>, token: &str, jar: &str) -> Value {
    let (s, order) = shop
        .order(
            token,
            json!([{"product_id": jar, "quantity": 1}]),
            "4242424242424242",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    order
}

#[tokio::test]
async fn no_order_event_is_lost_when_nats_restarts_mid_stream() {
    let mut nats = NatsServer::start();
    let data = tempfile::tempdir().expect("tmp");
    let panal = start_shop(&durable_shop(&nats), data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (_, token) = shop.user("stream@example.com").await;
    let jar = shop.product("Jar", 100, 1000).await;
    let mut orders = Vec::new();
    for i in 0..30 {
        if i == 10 {
            nats.stop();
        }
        if i == 20 {
            nats.restart();
        }
        let order = one_jar(&shop, &token, &jar).await;
        assert_eq!(order["status"], "paid", "order {i}: {order}");
        orders.push(order["id"].as_str().expect("id").to_string());
    }
    inbox_has_every_event(&shop, &token, &orders).await;
    drop(shop);
    let log = panal.stop();
    assert!(log.contains("outbox relayed durable messages"), "{log}");
}

#[tokio::test]
async fn events_kept_while_nats_is_down_survive_a_host_restart() {
    let mut nats = NatsServer::start();
    let data = tempfile::tempdir().expect("tmp");
    let manifest = durable_shop(&nats);
    let panal = start_shop(&manifest, data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (_, token) = shop.user("outbox@example.com").await;
    let jar = shop.product("Jar", 100, 100).await;
    nats.stop();
    let mut orders = Vec::new();
    for _ in 0..5 {
        let order = one_jar(&shop, &token, &jar).await;
        orders.push(order["id"].as_str().expect("id").to_string());
    }
    drop(shop);
    // The host goes away with the events still in its outbox...
    panal.stop();
    nats.restart();
    // ...and a new one, on the same data dir, delivers them.
    let panal = start_shop(&manifest, data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    inbox_has_every_event(&shop, &token, &orders).await;
    drop(shop);
    panal.stop();
}
