//! Scale-out costs, on one machine: a call to a component on another host (over NATS)
//! beside the same call in-process and over HTTP between the hosts; keyvalue on the
//! shared backends (PostgreSQL, JetStream KV) beside SQLite; and the shop's
//! `POST /orders` on one host beside the shop split over three.

use panal_tests::postgres::Postgres;
use panal_tests::{component, shop, NatsServer, Panal};

use crate::load::Request;
use crate::scenarios::{orders_lua, orders_request, Bench};

/// `probe` and `near` (hello) on host A, `hello` on host B.
fn calls_manifest(nats: &str) -> String {
    format!(
        r#"version = 1
[cluster]
name = "bench"
nats = "{nats}"

[components.probe]
source = "{probe}"
routes = ["/probe"]
outbound = ["hello", "near", "127.0.0.1"]
keyvalue = ["default"]

[components.near]
source = "{hello}"
routes = ["/near"]

[components.hello]
source = "{hello}"
routes = ["/greet"]
"#,
        probe = component("probe"),
        hello = component("hello"),
    )
}

/// A component calling another: in-process, on another host over NATS, and on another
/// host over HTTP (its gateway). All three answer with the same `hello` component.
pub fn calls(b: &mut Bench) {
    let nats = NatsServer::start();
    let manifest = calls_manifest(&nats.url);
    let (a_dir, b_dir) = (tempdir(), tempdir());
    let a = Panal::with(&manifest, a_dir.path())
        .args(&["--components", "probe,near", "--insecure-cluster"])
        .start();
    let host_b = Panal::with(&manifest, b_dir.path())
        .args(&["--components", "hello", "--insecure-cluster"])
        .start();
    b.started(&format!(
        "nats-server -p {}; two panal hosts of cluster `bench`: A runs probe and near, B runs hello",
        nats.port()
    ));
    println!("cluster-calls: probe on A calls hello in-process, on B over NATS, on B over HTTP");
    let over_http = format!("/probe/call?url={}/greet/x", host_b.url);
    for (system, path) in [
        ("in-process", "/probe/call?url=http://near/x"),
        ("over-nats", "/probe/call?url=http://hello/x"),
        ("over-http", over_http.as_str()),
    ] {
        b.load("cluster-calls", system, &Request::get(&a.at(path)));
    }
    b.report
        .rps_ratios("cluster-calls", "over-nats", "in-process", None);
    b.report.rps_ratios(
        "cluster-calls",
        "over-nats",
        "over-http",
        Some(crate::report::Target::AtLeast(1.0)),
    );
    drop((a, host_b));
}

/// The bench component with its `default` bucket, storage as `args` say.
fn kv_manifest() -> String {
    format!(
        r#"version = 1
[components.bench]
source = "{bench}"
routes = ["/bench"]
keyvalue = ["default"]
"#,
        bench = component("bench"),
    )
}

/// One get and one set per request on SQLite, PostgreSQL and JetStream KV.
pub async fn keyvalue(b: &mut Bench) {
    let pg = Postgres::start();
    let db = format!("panal_bench_{}", std::process::id());
    let pg_url = pg.database(&db).await;
    let nats = NatsServer::start();
    b.started(&format!(
        "a PostgreSQL of the bench's own; nats-server -p {} with JetStream",
        nats.port()
    ));
    println!("kv-backends: one get + one set per request on each storage backend");
    for (system, url) in [
        ("sqlite", None),
        ("postgres", Some(pg_url.as_str())),
        ("jetstream-kv", Some(nats.url.as_str())),
    ] {
        let dir = tempdir();
        let args: Vec<&str> = url.map(|u| vec!["--storage-url", u]).unwrap_or_default();
        let panal = Panal::with(&kv_manifest(), dir.path()).args(&args).start();
        b.load(
            "kv-backends",
            system,
            &Request::get(&panal.at("/bench/kv/hot")),
        );
        panal.stop();
    }
    b.report
        .rps_ratios("kv-backends", "postgres", "sqlite", None);
    b.report
        .rps_ratios("kv-backends", "jetstream-kv", "sqlite", None);
    pg.drop_database(&db).await;
}

/// `POST /orders` on one host (embedded defaults), on one host with the cluster's
/// backends (PostgreSQL, NATS), and on three hosts: everything but product on the
/// first, whose gateway takes the load, product on the other two.
pub async fn shop(b: &mut Bench) {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    b.started(&format!(
        "nats-server -p {} with JetStream; a PostgreSQL of the bench's own",
        nats.port()
    ));
    println!("shop-hosts: POST /orders on 1 host (SQLite), 1 host (Postgres + NATS), 3 hosts");
    let env = [("PANAL_TEST_JWT_SECRET", shop::SECRET)];
    let everything_else = "user,order,payment,notification,probe,storefront,storefront-broken";
    let systems: [(&str, &[&str]); 3] = [
        ("1-host-sqlite", &[""]),
        ("1-host-shared", &[""]),
        ("3-hosts", &[everything_else, "product", "product"]),
    ];
    for (i, (system, hosts)) in systems.into_iter().enumerate() {
        let db = format!("panal_bench_shop_{}_{i}", std::process::id());
        let storage = pg.database(&db).await;
        let dirs: Vec<tempfile::TempDir> = hosts.iter().map(|_| tempdir()).collect();
        let panals: Vec<Panal> = hosts
            .iter()
            .zip(&dirs)
            .map(|(only, dir)| {
                let mut args = Vec::new();
                if i > 0 {
                    args.extend(["--nats", nats.url.as_str(), "--storage-url", &storage]);
                }
                if !only.is_empty() {
                    args.extend([
                        "--cluster",
                        nats.url.as_str(),
                        "--components",
                        only,
                        "--insecure-cluster",
                    ]);
                }
                Panal::with(&shop::manifest(), dir.path())
                    .env(&env)
                    .args(&args)
                    .start()
            })
            .collect();
        let lua = orders_lua(&panals[0]).await;
        let url = panals[0].at("/orders");
        let req = orders_request(&url, &lua);
        b.load("shop-hosts", system, &req);
        drop(panals);
        pg.drop_database(&db).await;
    }
    b.report
        .rps_ratios("shop-hosts", "1-host-shared", "1-host-sqlite", None);
    b.report
        .rps_ratios("shop-hosts", "3-hosts", "1-host-shared", None);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tmp")
}
