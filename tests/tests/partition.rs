//! Faults across the cluster, on real processes: host A reaches the cluster's
//! `nats-server` only through a TCP proxy the test controls (`panal_tests::proxy`), so
//! the test can cut A off while B keeps running. A host cut off answers the calls it
//! can no longer make with 503 or 504 (never a 500 or a wrong answer), keeps serving
//! what it runs itself, and serves the calls again once the link heals.

use std::time::Duration;

use panal_tests::proxy::Proxy;
use panal_tests::{client, component, eventually, NatsServer, Panal};

fn manifest(nats: &str) -> String {
    let probe = component("probe");
    format!(
        r#"version = 1

[cluster]
name = "partition"
nats = "{nats}"

[components.front]
source = "{probe}"
routes = ["/front"]
outbound = ["back"]
keyvalue = ["f"]
config = {{ who = "front" }}

[components.back]
source = "{probe}"
routes = ["/back"]
keyvalue = ["b"]
config = {{ who = "back" }}
limits = {{ timeout_ms = 2000, queue_ms = 100 }}
"#
    )
}

/// What keeps the cluster's other processes alive: its `nats-server`, host B (`back`)
/// and the hosts' data dirs.
type Others = (NatsServer, Panal, [tempfile::TempDir; 2]);

/// Host A (`front`), which reaches the cluster's `nats-server` only through the returned
/// proxy, and host B (`back`), connected directly.
async fn cut_off_host_a() -> (Proxy, Panal, Others) {
    let nats = NatsServer::start();
    let link = Proxy::start(([127, 0, 0, 1], nats.port()).into()).await;
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let args = |only: &'static str| ["--components", only, "--insecure-cluster"];
    let a = Panal::with(&manifest(&format!("nats://{}", link.addr)), dirs[0].path())
        .args(&args("front"))
        .start();
    let b = Panal::with(&manifest(&nats.url), dirs[1].path())
        .args(&args("back"))
        .start();
    (link, a, (nats, b, dirs))
}

/// The value of the probe's `config/{key}` answer.
fn value_of(body: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["value"].as_str().map(str::to_string)
}

/// How long a healed host may take to serve the cluster's calls again (its NATS client
/// reconnects with a backoff of a few seconds at most).
const RECOVERY: Duration = Duration::from_secs(30);

/// The proxy runs on the test's runtime while starting a host blocks its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_nats_answers_503_or_504_and_serves_again_once_healed() {
    let (link, a, _others) = cut_off_host_a().await;
    let c = client();
    let who = |path: &'static str| {
        let c = c.clone();
        let url = a.at(path);
        async move {
            let resp = c.get(url).send().await.expect("get");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let (status, body) = who("/back/config/who").await;
    let served = (status, value_of(&body));
    assert_eq!(served, (200, Some("back".into())), "{}", a.log());

    link.cut();
    for _ in 0..5 {
        let (status, body) = who("/back/config/who").await;
        assert!(
            status == 503 || status == 504,
            "a call A cannot make: {status} {body}"
        );
    }
    // What A runs itself does not need the cluster.
    let (status, body) = who("/front/config/who").await;
    assert_eq!((status, value_of(&body)), (200, Some("front".into())));
    // A change A could not publish is refused, not kept on A alone (a rollback the
    // chaos runs saw stay on a host cut off from NATS after healing).
    let version = |c: reqwest::Client, url: String| async move {
        let resp = c.get(url).send().await.expect("get");
        resp.headers()["x-panal-version"]
            .to_str()
            .map(str::to_string)
            .expect("version")
    };
    let before = version(c.clone(), a.at("/front/config/who")).await;
    let deploy = c
        .put(format!("{}/components/front", a.admin))
        .body(panal_tests::variant(
            &std::fs::read(component("probe")).expect("probe"),
            "cut",
        ))
        .send()
        .await
        .expect("deploy");
    assert_eq!(deploy.status(), 503, "{}", a.log());
    assert_eq!(deploy.headers()["retry-after"], "1");
    assert_eq!(version(c.clone(), a.at("/front/config/who")).await, before);

    link.heal();
    let back = eventually(RECOVERY, || async {
        let (status, body) = who("/back/config/who").await;
        (status == 200).then(|| value_of(&body))?
    })
    .await;
    assert_eq!(back.as_deref(), Some("back"), "{}", a.log());
}

/// A partition that leaves the connection open (no FIN, no RST: bytes just stop, both
/// ways): the call waits out the callee's deadline and gets 504 or 503, never a 500;
/// once healed (the stream carries on, or the pings gave up on it and it reconnects),
/// the calls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_answers_504_or_503_and_heals() {
    let (link, a, _others) = cut_off_host_a().await;
    let c = client();
    let url = a.at("/back/config/who");
    let status = |c: reqwest::Client, url: String| async move {
        c.get(url).send().await.expect("get").status().as_u16()
    };
    assert_eq!(status(c.clone(), url.clone()).await, 200, "{}", a.log());
    link.blackhole(panal_tests::proxy::Way::Both);
    let during = status(c.clone(), url.clone()).await;
    assert!(during == 503 || during == 504, "{during}\n{}", a.log());
    link.heal();
    let served = eventually(RECOVERY, || async {
        (status(c.clone(), url.clone()).await == 200).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "not served within {RECOVERY:?}\n{}",
        a.log()
    );
}
