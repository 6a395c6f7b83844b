//! wasi:messaging end to end through the real binary, on both backends (in-process and a
//! `nats-server` of the test's own): publish/subscribe, queue groups, request-reply,
//! publish grants, and an external NATS client both ways.

use std::time::Duration;

use futures::StreamExt;
use panal_tests::{client, component, eventually, synced, NatsServer, Panal};
use serde_json::Value;

fn manifest(messaging: &str) -> String {
    format!(
        r#"version = 1
{messaging}

[components.a]
source = "{probe}"
routes = ["/a"]
keyvalue = ["default"]
messaging = {{ publish = ["events.>", "svc.*", "jobs.*"], subscribe = ["events.*"] }}

[components.b]
source = "{probe}"
routes = ["/b"]
keyvalue = ["default"]
messaging = {{ subscribe = ["svc.echo", {{ subject = "jobs.*", queue = "workers" }}] }}

[components.c]
source = "{probe}"
routes = ["/c"]
keyvalue = ["default"]
messaging = {{ subscribe = [{{ subject = "jobs.*", queue = "workers" }}] }}
"#,
        probe = component("probe"),
    )
}

async fn counter(c: &reqwest::Client, panal: &Panal, who: &str, subject: &str) -> i64 {
    let resp = c
        .get(panal.at(&format!("/{who}/kv/default/count:{subject}")))
        .send()
        .await
        .expect("get");
    if resp.status() == 404 {
        return 0;
    }
    resp.text().await.expect("text").parse().expect("counter")
}

async fn behaves(panal: &Panal) {
    let c = client();
    let publish = |who: &str, subject: &str, body: &'static str| {
        c.post(panal.at(&format!("/{who}/msg/publish/{subject}")))
            .body(body)
            .send()
    };

    // Publish/subscribe: a's own subscription (events.*) sees its message.
    let sent = publish("a", "events.created", "first")
        .await
        .expect("publish");
    assert_eq!(sent.status(), 204);
    let got = eventually(Duration::from_secs(10), || async {
        let r = c
            .get(panal.at("/a/kv/default/last:events.created"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())?;
        r.text().await.ok()
    })
    .await;
    assert_eq!(got.as_deref(), Some("first"));

    // The request id and trace context of the HTTP request reach the handling
    // component as message metadata.
    assert_eq!(
        c_post_traced(panal, "/a/msg/publish/events.traced").await,
        204
    );
    let meta = eventually(Duration::from_secs(5), || async {
        let r = client()
            .get(panal.at("/a/kv/default/meta:events.traced"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())?;
        r.json::<Value>().await.ok()
    })
    .await
    .expect("handled");
    assert_eq!(meta["x-request-id"], "trace-me-7");
    assert_eq!(meta["traceparent"], TRACEPARENT);

    // Publish grants: b may publish nothing; a may not publish outside its patterns.
    for (who, subject) in [("b", "events.created"), ("a", "secret.stuff")] {
        let denied = publish(who, subject, "x").await.expect("publish");
        assert_eq!(denied.status(), 403, "{who} → {subject}");
        let body: Value = denied.json().await.expect("json");
        assert!(body["error"]
            .as_str()
            .expect("error")
            .contains("permission-denied"));
    }

    // Request-reply, answered by b's handler.
    let reply: Value = c
        .post(panal.at("/a/msg/request/svc.echo"))
        .body("ping")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(reply["replies"], serde_json::json!(["echo:ping"]));
    // Nobody answers: a clear error within the timeout, not a hang or a trap.
    let silent = c
        .post(panal.at("/a/msg/request/svc.nobody?timeout_ms=300"))
        .body("x")
        .send()
        .await
        .expect("request");
    assert!(
        matches!(silent.status().as_u16(), 504 | 500),
        "{}",
        silent.status()
    );

    // Queue group: b and c share `workers`, so each job is handled exactly once.
    for _ in 0..20 {
        assert_eq!(
            publish("a", "jobs.resize", "job")
                .await
                .expect("publish")
                .status(),
            204
        );
    }
    let total = eventually(Duration::from_secs(10), || async {
        let n = counter(&c, panal, "b", "jobs.resize").await
            + counter(&c, panal, "c", "jobs.resize").await;
        (n >= 20).then_some(n)
    })
    .await;
    assert_eq!(total, Some(20));
    // And not more than once: give stragglers a moment, then count again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again =
        counter(&c, panal, "b", "jobs.resize").await + counter(&c, panal, "c", "jobs.resize").await;
    assert_eq!(again, 20);
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn c_post_traced(panal: &Panal, path: &str) -> u16 {
    client()
        .post(panal.at(path))
        .header("x-request-id", "trace-me-7")
        .header("traceparent", TRACEPARENT)
        .body("traced")
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_in_process_backend_routes_messages() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(""), data.path());
    behaves(&panal).await;
    panal.stop();
}

#[tokio::test]
async fn the_nats_backend_routes_messages_and_talks_to_any_nats_client() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().expect("tmp");
    let backend = format!("[messaging]\nbackend = \"nats\"\nurl = \"{}\"", nats.url);
    let panal = Panal::start(&manifest(&backend), data.path());
    let outside = async_nats::connect(&nats.url).await.expect("connect");
    let mut watch = outside.subscribe("events.>").await.expect("subscribe");
    synced(&outside).await;

    behaves(&panal).await;

    // The component's publish reached an ordinary NATS client...
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("message");
    assert_eq!(seen.subject.as_str(), "events.created");
    assert_eq!(seen.payload.as_ref(), b"first");
    // `behaves` published events.traced with a request id and trace context: they
    // travel as NATS headers.
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("message");
    let headers = seen.headers.expect("headers");
    assert_eq!(
        headers.get("x-request-id").map(|v| v.as_str()),
        Some("trace-me-7")
    );
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str()),
        Some(TRACEPARENT)
    );
    // ...and an ordinary client's request reaches the component's handler.
    let reply = outside
        .request("svc.echo", "from outside".into())
        .await
        .expect("reply from the component");
    assert_eq!(reply.payload.as_ref(), b"echo:from outside");

    // A peer's trace headers ride on with what the handler sends (here its reply) when
    // they are well formed, and are dropped when not...
    let ask = |id: &str, state: String| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("x-request-id", id);
        headers.insert("tracestate", state.as_str());
        outside.request_with_headers("svc.echo", headers, "traced".into())
    };
    let fine = ask("fine-id-1", "k=v".into()).await.expect("reply");
    let fine = fine.headers.expect("headers");
    assert_eq!(
        fine.get("x-request-id").map(|v| v.as_str()),
        Some("fine-id-1")
    );
    assert_eq!(fine.get("tracestate").map(|v| v.as_str()), Some("k=v"));
    let odd = ask("has space and more", "k=v,".repeat(300))
        .await
        .expect("reply");
    let odd = odd.headers.unwrap_or_default();
    assert!(odd.get("x-request-id").is_none(), "{odd:?}");
    assert!(odd.get("tracestate").is_none(), "{odd:?}");
    // ...and a reply goes only to an inbox, never where a peer points it.
    let mut stolen = outside
        .subscribe("orders.created")
        .await
        .expect("subscribe");
    synced(&outside).await;
    outside
        .publish_with_reply("svc.echo", "orders.created", "forged".into())
        .await
        .expect("publish");
    let legit = outside
        .request("svc.echo", "after".into())
        .await
        .expect("reply from the component");
    assert_eq!(legit.payload.as_ref(), b"echo:after");
    let got = tokio::time::timeout(Duration::from_millis(500), stolen.next()).await;
    assert!(got.is_err(), "a reply went to a non-inbox subject: {got:?}");
    let log = panal.stop();
    assert!(
        !log.contains("has space and more"),
        "an odd request id was logged"
    );
}

#[test]
fn subscribing_without_the_handler_export_is_refused_at_load() {
    // hello exports only wasi:http/incoming-handler.
    let data = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("panal.toml");
    std::fs::write(
        &manifest,
        format!(
            "version = 1\n[components.h]\nsource = \"{}\"\nmessaging = {{ subscribe = [\"x.y\"] }}\n",
            component("hello")
        ),
    )
    .expect("write");
    let out = std::process::Command::new(panal_tests::panal_bin())
        .args(["check", "--manifest"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not export `wasi:messaging/incoming-handler"),
        "{err}"
    );
}

#[tokio::test]
async fn the_host_rides_out_a_nats_restart() {
    let nats = NatsServer::start();
    let port = nats.port();
    let data = tempfile::tempdir().expect("tmp");
    let backend = format!("[messaging]\nbackend = \"nats\"\nurl = \"{}\"", nats.url);
    let panal = Panal::start(&manifest(&backend), data.path());
    let c = client();
    let echo = || {
        c.post(panal.at("/a/msg/request/svc.echo?timeout_ms=1000"))
            .body("ping")
            .send()
    };
    assert_eq!(echo().await.expect("request").status(), 200);

    drop(nats);
    // While NATS is down a request fails with a clear error, well within its timeout.
    let down = eventually(Duration::from_secs(10), || async {
        let resp = echo().await.ok()?;
        (resp.status() == 503).then_some(())?;
        resp.json::<Value>().await.ok()
    })
    .await
    .expect("503 while NATS is down");
    assert!(
        down["error"]
            .as_str()
            .expect("error")
            .contains("connection"),
        "{down}"
    );

    // Same address again: the host reconnects by itself and its subscriptions work.
    let _nats = NatsServer::start_on(port);
    let back = eventually(Duration::from_secs(30), || async {
        let resp = echo().await.ok()?;
        (resp.status() == 200).then_some(())?;
        resp.json::<Value>().await.ok()
    })
    .await
    .expect("answers again after NATS is back");
    assert_eq!(back["replies"], serde_json::json!(["echo:ping"]));
    panal.stop();
}

#[tokio::test]
async fn run_nats_overrides_the_manifest_backend() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().expect("tmp");
    // The manifest says in-process; the flag moves messaging to this NATS server.
    let panal = Panal::with(&manifest(""), data.path())
        .args(&["--nats", &nats.url])
        .start();
    let outside = async_nats::connect(&nats.url).await.expect("connect");
    let mut watch = outside.subscribe("events.>").await.expect("subscribe");
    synced(&outside).await;
    let sent = client()
        .post(panal.at("/a/msg/publish/events.flagged"))
        .body("over nats")
        .send()
        .await
        .expect("publish");
    assert_eq!(sent.status(), 204);
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("message");
    assert_eq!(seen.subject.as_str(), "events.flagged");
    panal.stop();
}

/// A deploy cannot grant the hosts' own subjects (NATS' `$...`, inboxes, the cluster's
/// `panal.>`) nor a wildcard that reaches them; the manifest's own check is in
/// `tests/ui/reserved-subjects.toml`.
#[tokio::test]
async fn a_deploy_cannot_grant_the_hosts_subjects() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(""), data.path());
    let probe = std::fs::read(component("probe")).expect("probe");
    for (grant, status) in [
        ("%3E", 400),
        ("*.call.x", 400),
        ("%24JS.API.%3E", 400),
        ("panal.t.call.b", 400),
        ("_INBOX.x", 400),
        ("orders.%3E", 200),
    ] {
        // A refusal comes before the upload is read: send the file only when it is
        // taken, and a fresh client each time (a refused upload's connection is closed).
        let body = if status == 200 {
            probe.clone()
        } else {
            b"x".to_vec()
        };
        let resp = client()
            .put(format!(
                "{}/components/x?route=/x&keyvalue=default&publish={grant}",
                panal.admin
            ))
            .body(body)
            .send()
            .await
            .expect("deploy");
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(code, status, "{grant}: {body}");
        if status == 400 {
            assert!(body.contains("is reserved"), "{grant}: {body}");
        }
    }
    panal.stop();
}
