//! The whole host started in-process on listeners the test bound, through
//! `panal::server::serve` (the seam `panal run` uses after binding), and stopped by a
//! shutdown future: the gateway server, the HTTP trigger and the executor, seen from a
//! client over real sockets, without spawning the binary.

use std::time::Duration;

use panal::server::{serve, Listeners, RunOptions};
use panal_tests::{client, component, get_json};
use tokio::net::TcpListener;

/// One host for the whole file: started once, stopped at the end of the test.
struct InProcess {
    public: String,
    admin: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

async fn start() -> InProcess {
    let data = tempfile::tempdir().expect("tempdir");
    let manifest = data.path().join("panal.toml");
    let text = format!(
        r#"version = 1

[components.hello]
source = "{hello}"
routes = ["/hello"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
outbound = ["hello"]
keyvalue = ["default"]

[components.spinner]
source = "{probe}"
routes = ["/spinner"]
keyvalue = ["default"]
limits = {{ timeout_ms = 300 }}
"#,
        hello = component("hello"),
        probe = component("probe"),
    );
    std::fs::write(&manifest, text).expect("manifest");
    let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (public_addr, admin_addr) = (
        public.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let opts = RunOptions {
        manifest,
        listen: public_addr,
        admin_listen: admin_addr,
        data_dir: data.path().join("data"),
        nats: None,
        storage_url: None,
        cluster: None,
        components: None,
        replicas: None,
        reset_deployments: false,
        watch: false,
        nats_auth: Default::default(),
        cluster_auth: Default::default(),
        insecure_cluster: false,
        guest_memory_mb: None,
        pool: Default::default(),
        tls: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        serve(&opts, Listeners { public, admin }, async {
            let _ = stopped.await;
        })
        .await
    });
    let host = InProcess {
        public: format!("http://{public_addr}"),
        admin: format!("http://{admin_addr}"),
        stop,
        done,
        _data: data,
    };
    // The listeners were bound before loading: requests wait in the backlog until the
    // host serves, so the first health check is also the wait for it.
    let health = client()
        .get(format!("{}/healthz", host.admin))
        .timeout(Duration::from_secs(120))
        .send()
        .await;
    match health {
        Ok(resp) => assert_eq!(resp.status(), 200),
        Err(e) => panic!(
            "not serving ({e}); the host ended with {:?}",
            host.done.await
        ),
    }
    host
}

#[tokio::test]
async fn the_host_serves_on_listeners_the_caller_bound_and_stops_on_its_future() {
    let host = start().await;
    let c = client();

    // Gateway → HTTP trigger → executor → component, and the version label back.
    let resp = c
        .get(format!("{}/hello/x", host.public))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-panal-version"].len(),
        12,
        "the answering version is named"
    );
    let doc: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(doc["component"], "hello");

    // A call between components goes through the executor again (the `Calls` seam).
    let called = get_json(
        &c,
        format!("{}/probe/call?url=http://hello/hello/y", host.public),
    )
    .await;
    assert_eq!(called["status"], 200, "{called}");
    assert!(
        called["body"]
            .as_str()
            .unwrap_or_default()
            .contains("/hello/y"),
        "{called}"
    );

    // A run past its deadline is a named failure with the one JSON error shape.
    let spin = c
        .get(format!("{}/spinner/spin", host.public))
        .send()
        .await
        .expect("spin");
    assert_eq!(spin.status(), 504);
    let err: serde_json::Value = spin.json().await.expect("json");
    assert_eq!(err["component"], "spinner");
    assert!(
        err["error"].as_str().unwrap_or_default().contains("300 ms"),
        "{err}"
    );

    // The executor counted all of it.
    let status = get_json(&c, format!("{}/components", host.admin)).await;
    let counted = |name: &str| {
        status["components"]
            .as_array()
            .and_then(|all| all.iter().find(|x| x["name"] == name))
            .map(|x| (x["requests"].as_u64(), x["errors"].as_u64()))
    };
    assert_eq!(counted("hello"), Some((Some(2), Some(0))), "{status}");
    assert_eq!(counted("spinner"), Some((Some(1), Some(1))), "{status}");

    // The shutdown future ends it cleanly, and the listener is gone.
    host.stop.send(()).expect("host still running");
    let ended = tokio::time::timeout(Duration::from_secs(30), host.done)
        .await
        .expect("stops in time")
        .expect("task");
    assert!(ended.is_ok(), "{ended:?}");
    assert!(
        c.get(format!("{}/hello/x", host.public))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_err(),
        "nothing serves after shutdown"
    );
}
