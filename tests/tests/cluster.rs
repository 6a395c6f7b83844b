//! Several real `panal` hosts as one system over a real three-server NATS cluster:
//! `front` runs on host A only, `back` on hosts B and C only, storage is shared in
//! PostgreSQL. Any gateway serves every route; calls between components cross hosts
//! through the queue group; bodies bigger than a NATS message go in parts; the hosts
//! and their components are visible to any NATS client; a deploy or rollback through
//! any host reaches every host that runs the component, with no failed request, and a
//! host that starts late serves the cluster's version; a component first deployed on
//! one host is served by every gateway until it is undeployed; a host that stops with
//! SIGTERM costs nothing, nor does one killed with SIGKILL (its idempotent calls are
//! sent again). The shop over three hosts: tests/cluster_shop.rs.

use std::sync::atomic::Ordering;
use std::time::Duration;

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
        Panal::with(manifest, dirs[i].path())
            .args(&["--components", components, "--insecure-cluster"])
            .start()
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
    let b = Panal::with(&manifest_text, b_dir.path())
        .args(&["--components", "back", "--insecure-cluster"])
        .start();
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
