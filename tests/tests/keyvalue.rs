//! Keyvalue conformance: the same tests on every backend behind `KvBackend`, a SQLite
//! file, a real PostgreSQL (the test's own server, or `PANAL_TEST_POSTGRES_URL`) and
//! JetStream KV on the test's own `nats-server`s. Namespaces apart, CRUD, paging,
//! batches, counters and compare-and-swap under concurrency, counter errors, and, on the
//! shared backends, two hosts sharing one namespace atomically (on NATS, across a
//! three-server cluster that loses one server).

use std::sync::Arc;

use panal::capabilities::keyvalue::nats::NatsKvBackend;
use panal::capabilities::keyvalue::postgres::PostgresBackend;
use panal::capabilities::keyvalue::quota::KvLimits;
use panal::capabilities::keyvalue::sqlite::SqliteBackend;
use panal::capabilities::keyvalue::{KvBackend, KvError, KvStore, LIST_PAGE};
use panal_tests::postgres::Postgres;
use panal_tests::{eventually, NatsCluster, NatsServer};

fn limits() -> KvLimits {
    KvLimits::of(&panal::manifest::Limits::default())
}

async fn open(backend: &dyn KvBackend, component: &str) -> Arc<dyn KvStore> {
    backend
        .namespace(component, limits())
        .await
        .expect("namespace")
}

/// Every conformance check on `backend`, named `what` in failures.
async fn conformance(what: &str, backend: &dyn KvBackend) {
    let a = open(backend, "alpha").await;
    let b = open(backend, "beta").await;

    // CRUD, and namespaces never see each other's keys.
    assert_eq!(a.get("x", "k").await.expect("get"), None, "{what}");
    a.set("x", "k", b"one").await.expect("set");
    a.set("x", "k", b"two").await.expect("overwrite");
    assert_eq!(
        a.get("x", "k").await.expect("get"),
        Some(b"two".to_vec()),
        "{what}"
    );
    assert!(a.exists("x", "k").await.expect("exists"), "{what}");
    assert!(
        !a.exists("y", "k").await.expect("exists"),
        "{what}: buckets apart"
    );
    assert_eq!(
        b.get("x", "k").await.expect("get"),
        None,
        "{what}: namespaces apart"
    );
    a.delete("x", "k").await.expect("delete");
    a.delete("x", "k").await.expect("delete twice");
    assert_eq!(a.get("x", "k").await.expect("get"), None, "{what}");

    // Binary values and keys that sort bytewise.
    let raw: Vec<u8> = (0..=255).collect();
    a.set("bin", "Z", &raw).await.expect("set");
    a.set("bin", "a", b"").await.expect("set empty");
    assert_eq!(
        a.get("bin", "Z").await.expect("get"),
        Some(raw.clone()),
        "{what}"
    );
    assert_eq!(
        a.get("bin", "a").await.expect("get"),
        Some(Vec::new()),
        "{what}"
    );
    assert_eq!(
        a.value_len("bin", "Z").await.expect("len"),
        Some(256),
        "{what}"
    );

    // Paging: every key once, in byte order, across pages.
    let keys: Vec<String> = (0..LIST_PAGE + 7).map(|i| format!("k{i:05}")).collect();
    let pairs: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
    for chunk in pairs.chunks(500) {
        a.set_many("page", chunk).await.expect("set_many");
    }
    let (first, next) = a.list_keys("page", None).await.expect("list");
    assert_eq!(first.len(), LIST_PAGE, "{what}");
    let (rest, end) = a.list_keys("page", next.as_deref()).await.expect("list");
    assert_eq!(end, None, "{what}");
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    assert_eq!(all, keys, "{what}: every key once, in order");
    let (bin, _) = a.list_keys("bin", None).await.expect("list");
    assert_eq!(bin, ["Z", "a"], "{what}: bytewise order");

    // Batches.
    let got = a
        .get_many("page", &["k00001".into(), "nope".into(), "k00002".into()])
        .await
        .expect("get_many");
    assert_eq!(
        got,
        [Some(b"v".to_vec()), None, Some(b"v".to_vec())],
        "{what}"
    );
    for chunk in keys.chunks(500) {
        a.delete_many("page", chunk).await.expect("delete_many");
    }
    assert_eq!(
        a.list_keys("page", None).await.expect("list").0.len(),
        0,
        "{what}"
    );

    // Counters: decimal text, errors for what is not one.
    assert_eq!(a.increment("c", "n", 5).await.expect("incr"), 5, "{what}");
    assert_eq!(a.increment("c", "n", -2).await.expect("incr"), 3, "{what}");
    assert_eq!(
        a.get("c", "n").await.expect("get"),
        Some(b"3".to_vec()),
        "{what}"
    );
    a.set("c", "word", b"honey").await.expect("set");
    let err = a
        .increment("c", "word", 1)
        .await
        .expect_err("not a counter");
    assert!(
        matches!(&err, KvError::NotACounter { key } if key == "word"),
        "{what}: {err}"
    );
    a.set("c", "big", i64::MAX.to_string().as_bytes())
        .await
        .expect("set");
    let err = a.increment("c", "big", 1).await.expect_err("overflow");
    assert!(
        matches!(&err, KvError::Overflow { key, delta: 1 } if key == "big"),
        "{what}: {err}"
    );

    // Compare-and-swap: on the value seen, and "only if absent".
    assert!(
        a.compare_and_swap("c", "s", None, b"1").await.expect("cas"),
        "{what}"
    );
    assert!(
        !a.compare_and_swap("c", "s", None, b"2").await.expect("cas"),
        "{what}"
    );
    assert!(
        !a.compare_and_swap("c", "s", Some(b"0"), b"2")
            .await
            .expect("cas"),
        "{what}"
    );
    assert!(
        a.compare_and_swap("c", "s", Some(b"1"), b"2")
            .await
            .expect("cas"),
        "{what}"
    );
    assert_eq!(
        a.get("c", "s").await.expect("get"),
        Some(b"2".to_vec()),
        "{what}"
    );

    // Concurrency: 8 tasks × 25 increments and 8 × 25 CAS loops lose nothing.
    racing(what, a.clone(), a.clone()).await;

    // Usage counts this namespace only.
    let (keys_used, bytes_used) = a.usage().await.expect("usage");
    assert!(
        keys_used >= 5 && bytes_used > 256,
        "{what}: {keys_used} {bytes_used}"
    );
    assert_eq!(b.usage().await.expect("usage"), (0, 0), "{what}");
}

/// Increments and CAS loops from tasks split over `one` and `two` (two handles on the
/// same namespace: the same host, or two hosts) add up exactly.
async fn racing(what: &str, one: Arc<dyn KvStore>, two: Arc<dyn KvStore>) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                store.increment("race", "counter", 1).await.expect("incr");
                loop {
                    let seen = store.get("race", "cas").await.expect("get");
                    let n: u64 = seen
                        .as_deref()
                        .map_or(0, |v| String::from_utf8_lossy(v).parse().unwrap_or(0));
                    let next = (n + 1).to_string();
                    let swapped = store
                        .compare_and_swap("race", "cas", seen.as_deref(), next.as_bytes())
                        .await
                        .expect("cas");
                    if swapped {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let counter = one.get("race", "counter").await.expect("get");
    assert_eq!(counter, Some(b"200".to_vec()), "{what}: increments");
    let cas = two.get("race", "cas").await.expect("get");
    assert_eq!(cas, Some(b"200".to_vec()), "{what}: compare-and-swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SqliteBackend::new(dir.path().to_path_buf()).expect("backend");
    conformance("sqlite", &backend).await;
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conforms_and_two_hosts_share_a_namespace_atomically() {
    let pg = Postgres::start();
    let db = format!("panal_kv_{}", std::process::id());
    let url = pg.database(&db).await;
    let backend = PostgresBackend::connect(&url).await.expect("connect");
    conformance("postgres", &backend).await;

    // A second host: its own pool on the same database, the same component.
    let other = PostgresBackend::connect(&url).await.expect("connect again");
    let here = open(&backend, "shared").await;
    let there = open(&other, "shared").await;
    here.set("x", "seen", b"by both").await.expect("set");
    assert_eq!(
        there.get("x", "seen").await.expect("get"),
        Some(b"by both".to_vec())
    );
    racing("postgres across hosts", here, there).await;
    backend.close().await;
    other.close().await;
    pg.drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_kv_conforms_and_hosts_share_it_across_a_cluster() {
    let nats = NatsServer::start();
    let backend = NatsKvBackend::connect(&nats.url, &Default::default(), 1)
        .await
        .expect("connect");
    conformance("nats", &backend).await;
    backend.close().await;
    drop(nats);

    // Three servers, buckets with three replicas, two hosts on different servers.
    let mut cluster = NatsCluster::start().await;
    let one = NatsKvBackend::connect(&cluster.url(0), &Default::default(), 3)
        .await
        .expect("connect");
    let two = NatsKvBackend::connect(&cluster.url(1), &Default::default(), 3)
        .await
        .expect("connect");
    let here = open(&one, "shared").await;
    let there = open(&two, "shared").await;
    here.set("x", "seen", b"by both").await.expect("set");
    assert_eq!(
        there.get("x", "seen").await.expect("get"),
        Some(b"by both".to_vec())
    );
    racing("nats across hosts", here.clone(), there.clone()).await;

    // One server of three stops: two replicas of three keep the bucket writable once it
    // has a leader again (an election of a few seconds at most).
    cluster.stop(2);
    let written = eventually(std::time::Duration::from_secs(20), || async {
        here.set("x", "after", b"still here").await.ok()
    })
    .await;
    assert!(written.is_some(), "no write within 20 s of losing a server");
    assert_eq!(
        there.get("x", "after").await.expect("get"),
        Some(b"still here".to_vec())
    );
    assert_eq!(there.increment("x", "n", 2).await.expect("incr"), 2);
    assert_eq!(here.increment("x", "n", 3).await.expect("incr"), 5);
    one.close().await;
    two.close().await;
}

/// Two real hosts on one PostgreSQL (one by `[storage]`, one by `--storage-url`): what a
/// component writes through one is read through the other, and increments racing
/// through both gateways add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_share_one_postgres_through_their_gateways() {
    use panal_tests::{client, component, Panal};
    let pg = Postgres::start();
    let db = format!("panal_hosts_{}", std::process::id());
    let url = pg.database(&db).await;
    let manifest = |storage: &str| {
        format!(
            "version = 1\n{storage}\n[components.probe]\nsource = \"{}\"\nroutes = [\"/probe\"]\nkeyvalue = [\"shared\"]\n",
            component("probe")
        )
    };
    let (one_dir, two_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let one = Panal::start(
        &manifest(&format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
        )),
        one_dir.path(),
    );
    let two = Panal::with(&manifest(""), two_dir.path())
        .args(&["--storage-url", &url])
        .start();
    let c = client();
    let put = c
        .put(one.at("/probe/kv/shared/greeting"))
        .body("hello from one")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 204);
    let got = c
        .get(two.at("/probe/kv/shared/greeting"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert!(got.text().await.expect("body").contains("hello from one"));

    let mut tasks = Vec::new();
    for i in 0..20 {
        let at = if i % 2 == 0 {
            one.at("/probe/kv/shared/n/incr")
        } else {
            two.at("/probe/kv/shared/n/incr")
        };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.post(at).send().await.expect("incr").status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    let n = c
        .get(one.at("/probe/kv/shared/n"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        n.text().await.expect("body"),
        "20",
        "20 increments through two hosts"
    );
    one.stop();
    two.stop();
    pg.drop_database(&db).await;
}

/// Two clusters on one PostgreSQL and one NATS (clusters `alpha` and `beta`): the same
/// component's bucket is a namespace of each cluster's own, so neither sees the other's
/// keys, nor a host outside any cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clusters_on_one_postgres_keep_their_data_apart() {
    use panal_tests::{client, component, Panal};
    let pg = Postgres::start();
    let nats = NatsServer::start();
    let db = format!("panal_clusters_{}", std::process::id());
    let url = pg.database(&db).await;
    let manifest = |cluster: &str| {
        format!(
            "version = 1\n[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n{cluster}\n\
             [components.probe]\nsource = \"{}\"\nroutes = [\"/probe\"]\nkeyvalue = [\"shared\"]\n",
            component("probe")
        )
    };
    let in_cluster =
        |name: &str| format!("[cluster]\nname = \"{name}\"\nnats = \"{}\"\n", nats.url);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let insecure = ["--insecure-cluster"];
    let alpha = Panal::with(&manifest(&in_cluster("alpha")), dirs[0].path())
        .args(&insecure)
        .start();
    let beta = Panal::with(&manifest(&in_cluster("beta")), dirs[1].path())
        .args(&insecure)
        .start();
    let alone = Panal::start(&manifest(""), dirs[2].path());
    let c = client();
    for (host, text) in [(&alpha, "alpha's"), (&beta, "beta's")] {
        let put = c
            .put(host.at("/probe/kv/shared/greeting"))
            .body(text)
            .send()
            .await
            .expect("put");
        assert_eq!(put.status(), 204);
    }
    for (host, text) in [(&alpha, "alpha's"), (&beta, "beta's")] {
        let got = c
            .get(host.at("/probe/kv/shared/greeting"))
            .send()
            .await
            .expect("get");
        assert_eq!(got.status(), 200);
        assert_eq!(got.text().await.expect("body"), text);
    }
    let outside = c
        .get(alone.at("/probe/kv/shared/greeting"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        outside.status(),
        404,
        "a host outside the clusters sees their data"
    );
    for host in [alpha, beta, alone] {
        host.stop();
    }
    pg.drop_database(&db).await;
}

/// PostgreSQL over TLS: with `sslmode=verify-full` and the test's CA (`sslrootcert`)
/// the host connects, and every connection it holds is encrypted (`pg_stat_ssl`); with
/// a server certificate it cannot verify (no `sslrootcert`), it refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_can_require_verified_tls() {
    use panal_tests::{client, component, refused, Panal};
    let certs = panal_tests::tls::Certs::make();
    let pg = Postgres::start_tls(&certs);
    let db = format!("panal_tls_{}", std::process::id());
    let url = pg.database(&db).await;
    let manifest = |url: &str| {
        format!(
            "version = 1\n[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n\
             [components.probe]\nsource = \"{}\"\nroutes = [\"/probe\"]\nkeyvalue = [\"shared\"]\n",
            component("probe")
        )
    };
    let verified = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        certs.file("ca.pem")
    );
    let dir = tempfile::tempdir().expect("dir");
    let host = Panal::start(&manifest(&verified), dir.path());
    let put = client()
        .put(host.at("/probe/kv/shared/greeting"))
        .body("over tls")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 204);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    let (all, tls): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(&db)
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_ssl");
    assert!(
        all > 0 && tls == all,
        "{tls} of {all} connections encrypted"
    );
    drop(conn);
    host.stop();
    let err = refused(&manifest(&format!("{url}?sslmode=verify-full")), &[], &[]);
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    pg.drop_database(&db).await;
}
