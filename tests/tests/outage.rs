//! Storage outages through the real binary: the host reaches its PostgreSQL only
//! through a proxy the test controls. A durable message whose handler cannot reach its
//! storage waits the outage out (no attempt spent, nothing dead-lettered) and is handled
//! once the link heals; a storage call meanwhile fails as `storage unavailable` at
//! once, or within its bound when the link drops bytes and leaves connections silent.
//!
//! Found by the chaos runs (`just chaos`, seed 2): a shipping host cut off from
//! PostgreSQL for a few seconds dead-lettered `orders.paid`, and a paid order never got
//! its shipment.

use std::time::Duration;

use panal_tests::postgres::Postgres;
use panal_tests::proxy::{Proxy, Way};
use panal_tests::{client, component, eventually, NatsServer, Panal};

fn manifest(nats: &str) -> String {
    format!(
        r#"version = 1

[messaging]
backend = "nats"
url = "{nats}"

[messaging.streams.WORK]
subjects = ["work.>"]

[components.a]
source = "{probe}"
routes = ["/a"]
keyvalue = ["default"]
messaging = {{ publish = ["work.>"] }}

[components.d]
source = "{probe}"
routes = ["/d"]
keyvalue = ["default"]
messaging = {{ subscribe = [{{ subject = "work.*", durable = true, max_attempts = 2, dead_letter = "dead.work" }}] }}
limits = {{ timeout_ms = 10000 }}
"#,
        probe = component("probe"),
    )
}

/// Component `d`'s count of deliveries by `op` (`delivered`, `failed`, `dead_lettered`).
async fn deliveries(panal: &Panal, op: &str) -> u64 {
    let line = format!(r#"panal_messaging_operations_total{{component="d",op="{op}"}} "#);
    let metrics = panal.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
        .unwrap_or(0)
}

/// What `d` answers to a read of key `k`.
async fn read_k(c: &reqwest::Client, panal: &Panal) -> String {
    let resp = c
        .get(panal.at("/d/kv/default/k"))
        .send()
        .await
        .expect("get");
    resp.text().await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_message_waits_out_a_storage_outage() {
    let pg = Postgres::start();
    let db = format!("panal_outage_{}", std::process::id());
    pg.database(&db).await;
    let link = Proxy::start(pg.addr()).await;
    let storage = pg.url_via(link.addr, &db);
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let panal = Panal::with(&manifest(&nats.url), dir.path())
        .args(&["--storage-url", &storage])
        .start();
    let c = client();

    link.cut();
    let sent = c.post(panal.at("/a/msg/publish/work.job")).body("x").send();
    assert_eq!(sent.await.expect("publish").status(), 204);
    // More failed runs than `max_attempts` allows: counted as attempts, it would be
    // dead-lettered by now.
    eventually(Duration::from_secs(30), || async {
        (deliveries(&panal, "failed").await >= 4).then_some(())
    })
    .await;
    assert_eq!(deliveries(&panal, "dead_lettered").await, 0);
    // A request meanwhile hears why (the probe passes the error on as it is; the SDK
    // answers it 503 with `Retry-After`).
    let text = read_k(&c, &panal).await;
    assert!(text.contains("storage unavailable"), "{text}");

    // Connections left open and silent: the storage call gives up within its bound,
    // well before the request's deadline.
    link.heal();
    link.blackhole(Way::Both);
    let text = read_k(&c, &panal).await;
    assert!(
        text.contains("storage unavailable: no answer within 3s"),
        "{text}"
    );

    link.heal();
    let count = || async {
        let r = c.get(panal.at("/d/kv/default/count:work.job")).send().await;
        let text = r.ok()?.text().await.ok()?;
        (text.trim() == "1").then_some(())
    };
    eventually(Duration::from_secs(30), count).await;
    assert_eq!(deliveries(&panal, "dead_lettered").await, 0);
    assert!(panal
        .stop()
        .contains("a durable message waits out an outage (not counted as an attempt)"));
    pg.drop_database(&db).await;
}
