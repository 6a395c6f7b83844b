//! Several real `panal` hosts as one system over a real three-server NATS cluster:
//! `front` runs on host A only, `back` on hosts B and C only, storage is shared in
//! PostgreSQL. Any gateway serves every route; calls between components cross hosts
//! through the queue group; bodies bigger than a NATS message go in parts; the hosts
//! and their components are visible to any NATS client; a deploy or rollback through
//! any host reaches every host that runs the component, with no failed request, and a
//! host that starts late serves the cluster's version; a component first deployed on
//! one host is served by every gateway until it is undeployed; a host that stops with
//! SIGTERM costs nothing, nor does one killed with SIGKILL (its idempotent calls are
//! sent again, and the shop's orders repeat their stock calls under one reservation).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use panal_tests::cluster::{change, served_everywhere, service_infos};
use panal_tests::load::Load;
use panal_tests::postgres::Postgres;
use panal_tests::{client, component, sha_prefix, variant, NatsCluster, Panal};

fn manifest(nats: &str, storage: &str) -> String {
    let probe = component("probe");
    format!(
        r#"version = 1

[cluster]
name = "t"
nats = "{nats}"

[storage]
backend = "postgres"
url = "{storage}"

[components.front]
source = "{probe}"
routes = ["/front"]
outbound = ["back"]
keyvalue = ["f"]

[components.back]
source = "{probe}"
routes = ["/back"]
keyvalue = ["b"]
config = {{ who = "back" }}
limits = {{ max_body_kb = 8192 }}
"#
    )
}

struct Hosts {
    a: Panal,
    b: Option<Panal>,
    c: Panal,
    _dirs: Vec<tempfile::TempDir>,
}

fn start_hosts(manifest: &str) -> Hosts {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let host = |i: usize, components: &str| {
        Panal::start_full(
            manifest,
            dirs[i].path(),
            &[],
            &["--components", components, "--insecure-cluster"],
        )
    };
    let (a, b, c) = (host(0, "front"), host(1, "back"), host(2, "back"));
    Hosts {
        a,
        b: Some(b),
        c,
        _dirs: dirs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_serve_every_route_share_calls_and_survive_losing_one() {
    let nats = NatsCluster::start().await;
    let pg = Postgres::start();
    let db = format!("panal_cluster_{}", std::process::id());
    let url = pg.database(&db).await;
    let mut hosts = start_hosts(&manifest(&nats.urls(), &url));
    let c = client();

    // A runs only `front`: its gateway serves `back`'s route through B or C.
    let who = c
        .get(hosts.a.at("/back/config/who"))
        .send()
        .await
        .expect("get");
    assert_eq!(who.status(), 200, "{}", hosts.a.log());
    assert!(who.headers().contains_key("x-panal-version"));
    assert!(who.text().await.expect("body").contains("back"));

    // `front` on A calls `back` by name: the call crosses to B or C.
    let call = c
        .get(hosts.a.at("/front/call?url=http://back/back/config/who"))
        .send()
        .await
        .expect("call");
    assert_eq!(call.status(), 200);
    assert!(call.text().await.expect("body").contains("back"));

    // Both B and C take calls (the queue group shares them).
    for _ in 0..40 {
        let r = c
            .get(hosts.a.at("/back/config/who"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
    }
    for host in [hosts.b.as_ref().expect("b"), &hosts.c] {
        let metrics = host.metrics().await;
        assert!(
            metrics.contains(r#"panal_requests_total{component="back""#),
            "a host of `back` took no call: {metrics}"
        );
    }

    // A 3 MiB body, three NATS messages' worth, both ways.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let put = c
        .put(hosts.a.at("/back/kv/b/big"))
        .body(big.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(
        put.status(),
        204,
        "{}",
        put.text().await.unwrap_or_default()
    );
    let got = c
        .get(hosts.a.at("/back/kv/b/big"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert!(
        got.bytes().await.expect("body") == big,
        "the 3 MiB body came back intact"
    );
    // Past the callee's `max_body_kb` it is refused (the manifest says it to every host).
    let huge = vec![b'x'; 9 << 20];
    let refused = c
        .put(hosts.a.at("/back/kv/b/huge"))
        .body(huge)
        .send()
        .await
        .expect("put");
    assert_eq!(refused.status(), 413);

    // Any NATS client sees the hosts and what they run (the NATS service API).
    let infos = service_infos(&nats.url(0), "panal-t", 3).await;
    let mut endpoints: Vec<String> = infos
        .iter()
        .flat_map(|i| i["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    endpoints.sort();
    assert_eq!(endpoints, ["back", "back", "front"], "{infos:?}");

    // A component first deployed through B runs on B, and every gateway serves it.
    // Undeployed through A, which does not run it, it leaves every gateway and B.
    let b = hosts.b.as_ref().expect("b");
    let hello = std::fs::read(component("hello")).expect("hello");
    let added = c
        .put(format!("{}/components/hello?route=/hello", b.admin))
        .body(hello.clone())
        .send()
        .await
        .expect("deploy");
    assert_eq!(
        added.status(),
        200,
        "{}",
        added.text().await.unwrap_or_default()
    );
    let all = [&hosts.a, b, &hosts.c];
    served_everywhere(&all, "hello", "/hello/x", &sha_prefix(&hello), 1).await;
    for host in [&hosts.a, b, &hosts.c] {
        let r = c.get(host.at("/hello/x")).send().await.expect("get");
        assert_eq!(r.status(), 200, "{}", host.log());
    }
    let infos = service_infos(&nats.url(0), "panal-t", 3).await;
    let runs_hello: Vec<&serde_json::Value> = infos
        .iter()
        .filter(|i| i["endpoints"].to_string().contains(r#""name":"hello""#))
        .collect();
    assert_eq!(runs_hello.len(), 1, "{infos:?}");
    let gone = c
        .delete(format!("{}/components/hello", hosts.a.admin))
        .send()
        .await
        .expect("undeploy");
    assert_eq!(
        gone.status(),
        200,
        "{}",
        gone.text().await.unwrap_or_default()
    );
    for host in [&hosts.a, b, &hosts.c] {
        let gone = panal_tests::eventually(Duration::from_secs(10), || async {
            let r = c.get(host.at("/hello/x")).send().await.ok()?;
            (r.status() == 404).then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "a gateway still routes /hello: {}",
            host.log()
        );
    }
    let infos = service_infos(&nats.url(0), "panal-t", 3).await;
    assert!(
        !infos
            .iter()
            .any(|i| i["endpoints"].to_string().contains(r#""name":"hello""#)),
        "B still answers hello: {infos:?}"
    );

    // Deploy `back` v2 through A, which does not run it: B and C both swap to it, and
    // not one request fails meanwhile. Then roll back through B (C follows), and deploy
    // v3 through C (B follows).
    let v1 = sha_prefix(&std::fs::read(component("probe")).expect("probe"));
    let v2_bytes = variant(&std::fs::read(component("probe")).expect("probe"), "v2");
    let v3_bytes = variant(&std::fs::read(component("probe")).expect("probe"), "v3");
    let (v2, v3) = (sha_prefix(&v2_bytes), sha_prefix(&v3_bytes));
    let load = Load::start(&hosts.a.at("/back/config/who"), 8);
    load.wait_for(20).await;
    let b = hosts.b.as_ref().expect("b");
    for (via, bytes, want) in [
        (&hosts.a, Some(v2_bytes), &v2),
        (b, None, &v1),
        (&hosts.c, Some(v3_bytes), &v3),
    ] {
        change(via, "back", bytes).await;
        let all = [&hosts.a, b, &hosts.c];
        served_everywhere(&all, "back", "/back/config/who", want, 2).await;
    }
    let failures = load.failures.lock().expect("failures").clone();
    let (ok, failed) = load.stop().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed during the rollouts: {failures:?}",
        ok + failed
    );

    // SIGTERM on B under load: B leaves the queue group first; nothing fails.
    let load = Load::start(&hosts.a.at("/back/config/who"), 8);
    load.wait_for(50).await;
    let stopped = hosts.b.take().expect("b").stop();
    assert!(stopped.contains("left the cluster"), "{stopped}");
    let after = load.ok.load(Ordering::Relaxed);
    load.wait_for(after + 50).await;
    let failures = load.failures.clone();
    let (ok, failed) = load.stop().await;
    let failures = failures.lock().expect("failures").clone();
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed while B stopped: {failures:?}",
        ok + failed
    );

    // B comes back; then SIGKILL on C under load. The GETs C held go silent and are
    // sent again (they are idempotent), so not one fails; new calls go to B at once.
    let b_dir = tempfile::tempdir().expect("dir");
    let manifest_text = manifest(&nats.urls(), &url);
    let b = Panal::start_full(
        &manifest_text,
        b_dir.path(),
        &[],
        &["--components", "back", "--insecure-cluster"],
    );
    let load = Load::start(&hosts.a.at("/back/config/who"), 16);
    load.wait_for(100).await;
    // B started late, with no deploy history of its own: it serves the cluster's v3.
    let all = [&hosts.a, &b, &hosts.c];
    served_everywhere(&all, "back", "/back/config/who", &v3, 2).await;
    let c_host = std::mem::replace(&mut hosts.c, b);
    c_host.kill();
    let ok_by_then = load.ok.load(Ordering::Relaxed);
    load.wait_for(ok_by_then + 200).await;
    let failures = load.failures.lock().expect("failures").clone();
    let (ok, failed) = load.stop().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed when C was killed: {failures:?}",
        ok + failed
    );
    drop(hosts);
    pg.drop_database(&db).await;
}

/// The shop split over three hosts (product on two of them), storage shared in
/// PostgreSQL, messaging on the NATS cluster: 40 orders racing for 10 units through
/// the three gateways sell exactly 10, every one paid, and the stock ends at 0. Then a
/// product host is killed under load and nothing is lost, and then one NATS server of
/// three stops, and the shop keeps selling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shop_over_three_hosts_sells_exactly_and_outlives_a_killed_host() {
    use panal_tests::shop::{manifest, Shop, SECRET};
    use std::sync::atomic::AtomicUsize;
    let nats = NatsCluster::start().await;
    let pg = Postgres::start();
    let db = format!("panal_shop_cluster_{}", std::process::id());
    let url = pg.database(&db).await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let urls = nats.urls();
    let host = |i: usize, components: &str| {
        let args = [
            "--cluster",
            urls.as_str(),
            "--nats",
            urls.as_str(),
            "--storage-url",
            url.as_str(),
            "--replicas",
            "3",
            "--components",
            components,
            "--insecure-cluster",
        ];
        Panal::start_full(
            &manifest(),
            dirs[i].path(),
            &[("PANAL_TEST_JWT_SECRET", SECRET)],
            &args,
        )
    };
    let everything_else =
        "user,order,payment,notification,shipping,probe,storefront,storefront-broken";
    let mut hosts = vec![
        host(0, everything_else),
        host(1, "product"),
        host(2, "product"),
    ];
    let shops: Vec<Shop> = hosts
        .iter()
        .map(|panal| Shop { panal, c: client() })
        .collect();
    let (_, token) = shops[1].user("racer@example.com").await;
    let last = shops[2].product("Last jars", 1200, 10).await;
    let orders = (0..40).map(|i| {
        shops[i % 3].order(
            &token,
            serde_json::json!([{"product_id": last, "quantity": 1}]),
            "4242424242424242",
        )
    });
    let results = futures::future::join_all(orders).await;
    let count = |status: u16| results.iter().filter(|(s, _)| s.as_u16() == status).count();
    assert_eq!((count(201), count(409)), (10, 30), "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| s.as_u16() == 201)
        .all(|(_, o)| o["status"] == "paid"));
    let stock = shops[0].stock(&last).await;
    assert_eq!(stock, 0);
    let ordered = shops[1].paid_units(&token).await;
    assert_eq!(ordered + stock, 10, "units conserved");

    // Product v2 deployed through host 0, which does not run product: hosts 1 and 2
    // both swap to it, then roll back through host 1, with no failed read meanwhile.
    let v1_bytes = std::fs::read(component("product")).expect("product");
    let v2_bytes = variant(&v1_bytes, "v2");
    let path = format!("/products/{last}");
    let load = Load::start(&hosts[0].at(&path), 8);
    load.wait_for(20).await;
    for (via, bytes, want) in [
        (&hosts[0], Some(v2_bytes.clone()), sha_prefix(&v2_bytes)),
        (&hosts[1], None, sha_prefix(&v1_bytes)),
    ] {
        change(via, "product", bytes).await;
        let all: Vec<&Panal> = hosts.iter().collect();
        served_everywhere(&all, "product", &path, &want, 2).await;
    }
    let failures = load.failures.lock().expect("failures").clone();
    let (ok, failed) = load.stop().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed: {failures:?}",
        ok + failed
    );

    drop(shops);

    // SIGKILL on a product host under 16 clients ordering through host 0. A stock call
    // the dead host held is sent again, to the other product host, under the same
    // reservation: no order started a second after the kill fails, every accepted
    // order is stored paid, and stock plus paid units stays what it was.
    let front = &hosts[0];
    let buyers: Vec<String> = futures::future::join_all((0..4).map(|i| async move {
        let shop = Shop {
            panal: front,
            c: client(),
        };
        shop.user(&format!("buyer{i}@example.com")).await.1
    }))
    .await;
    let stocked = 1_000_000;
    let shop = Shop {
        panal: &hosts[1],
        c: client(),
    };
    let many = shop.product("Many jars", 100, stocked).await;
    let (url, body) = (hosts[0].at("/orders"), order_of(&many));
    let (tokens, next) = (buyers.clone(), AtomicUsize::new(0));
    let load = Load::start_with(16, move |c| {
        let token = &tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()];
        c.post(&url).bearer_auth(token).json(&body)
    });
    load.wait_for(100).await;
    let killed_at = Instant::now();
    drop(shop);
    hosts.pop().expect("host 2").kill();
    let ok_by_then = load.succeeded();
    load.wait_for(ok_by_then + 200).await;
    while killed_at.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failures = load.failures.lock().expect("failures").clone();
    let (accepted, failed) = load.stop().await;
    let silent = hosts[0].log().matches("went silent").count();
    eprintln!("SIGKILL on a product host: {accepted} orders accepted, {failed} failed, {silent} calls to it went silent");
    let why: Vec<_> = failures
        .iter()
        .map(|(started, _, why)| (started.saturating_duration_since(killed_at), why))
        .collect();
    assert!(
        failures
            .iter()
            .all(|(started, _, _)| *started <= killed_at + Duration::from_secs(1)),
        "orders started over a second after the kill failed: {why:?}"
    );
    let shops: Vec<Shop> = hosts
        .iter()
        .map(|panal| Shop { panal, c: client() })
        .collect();
    let mut paid = 0;
    for token in &buyers {
        paid += shops[0].paid_units(token).await;
    }
    let accepted = i64::try_from(accepted).expect("count");
    assert!(
        paid >= accepted,
        "{paid} paid < {accepted} accepted; failures: {why:?}"
    );
    let left = shops[1].stock(&many).await;
    assert_eq!(left + paid, stocked, "units conserved; failures: {why:?}");

    // One NATS server of three stops: the hosts fail over to the others, and the shop
    // (calls between hosts, replicated streams and buckets) keeps serving.
    let admin = panal_tests::shop::admin_token(shops[1].panal).await;
    let mut nats = nats;
    nats.stop(0);
    let restocked = panal_tests::eventually(Duration::from_secs(20), || async {
        let jar = shops[1]
            .post(
                "/products",
                Some(&admin),
                serde_json::json!({"name": "More jars", "price_cents": 900, "stock": 10}),
            )
            .await;
        (jar.0.as_u16() == 201).then(|| jar.1["id"].as_str().map(str::to_string))?
    })
    .await
    .expect("the shop serves again within 20 s of losing a NATS server");
    // Through host 0, whose calls to product cross hosts: its connection may still be
    // failing over (an order then fails whole, and takes no stock).
    let order = panal_tests::eventually(Duration::from_secs(20), || async {
        let (status, order) = shops[0]
            .order(
                &token,
                serde_json::json!([{"product_id": restocked, "quantity": 2}]),
                "4242424242424242",
            )
            .await;
        (status.as_u16() == 201).then_some(order)
    })
    .await
    .expect("orders cross hosts again within 20 s of losing a NATS server");
    assert_eq!(order["status"], "paid", "{order}");
    assert_eq!(shops[1].stock(&restocked).await, 8);
    drop(shops);
    drop(hosts);
    pg.drop_database(&db).await;
}

/// The body of an order for one unit of `product`.
fn order_of(product: &str) -> serde_json::Value {
    serde_json::json!({
        "items": [{"product_id": product, "quantity": 1}],
        "card_number": "4242424242424242",
    })
}
