//! `limits.reuse`: an instance serves up to N requests one after another, and one that
//! failed is never handed another request. Counted with `panal_instances_created_total`;
//! messages are handled the same way, counted by the probe itself.

use std::time::Duration;

use panal_tests::{client, component, eventually, Panal};

fn manifest() -> String {
    format!(
        r#"version = 1
[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
messaging = {{ publish = ["work.>", "plain.>"], subscribe = ["work.*"] }}
limits = {{ reuse = 4, idle_ms = 60000 }}

[components.fresh]
source = "{probe}"
routes = ["/fresh"]
keyvalue = ["default"]
messaging = {{ subscribe = ["plain.*"] }}
"#,
        probe = component("probe"),
    )
}

async fn status(path: &str, panal: &Panal) -> u16 {
    let resp = client().get(panal.at(path)).send().await.expect("request");
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

#[tokio::test]
async fn an_instance_serves_reuse_requests_and_a_failed_one_is_dropped() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());

    // One at a time, so each request finds the previous one's instance idle.
    for _ in 0..8 {
        assert_eq!(status("/probe/config", &panal).await, 200);
    }
    assert_eq!(
        panal.instances_created("probe").await,
        2,
        "8 requests, 4 per instance"
    );

    // A trap ends its instance: the next request needs a new one although the
    // trapped instance had served only one request.
    assert_eq!(status("/probe/trap", &panal).await, 500);
    assert_eq!(status("/probe/config", &panal).await, 200);
    assert_eq!(panal.instances_created("probe").await, 4);

    // The default stays one instance per request.
    for _ in 0..5 {
        assert_eq!(status("/fresh/config", &panal).await, 200);
    }
    assert_eq!(panal.instances_created("fresh").await, 5);
    panal.stop();
}

#[tokio::test]
async fn after_a_deploy_no_idle_instance_of_the_old_version_answers() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    assert_eq!(status("/probe/config", &panal).await, 200);
    let bytes = panal_tests::variant(
        &std::fs::read(component("probe")).expect("probe"),
        "reuse-v2",
    );
    let resp = client()
        .put(format!("{}/components/probe", panal.admin))
        .body(bytes.clone())
        .send()
        .await
        .expect("deploy");
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = client()
        .get(panal.at("/probe/config"))
        .send()
        .await
        .expect("get");
    let version = resp.headers()["x-panal-version"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        version,
        panal_tests::sha_prefix(&bytes),
        "the new version answered"
    );
    panal.stop();
}

/// Read `key` from `who`'s default bucket as a number (0 when missing).
async fn number(panal: &Panal, who: &str, key: &str) -> u64 {
    let url = panal.at(&format!("/{who}/kv/default/{key}"));
    let resp = client().get(url).send().await.expect("get");
    if resp.status() == 404 {
        return 0;
    }
    resp.text().await.expect("text").parse().expect("number")
}

/// Publish one message on `subject` from the probe and wait until `who` handled it,
/// counted by `key` (`count:` for handled, `tries:` for tried); what the instance that
/// handled it had handled by then (`seen:`).
async fn one_message(panal: &Panal, who: &str, subject: &str, key: &str) -> u64 {
    let before = number(panal, who, &format!("{key}:{subject}")).await;
    let url = panal.at(&format!("/probe/msg/publish/{subject}"));
    let sent = client().post(url).body("m").send().await.expect("publish");
    assert_eq!(sent.status(), 204);
    let handled = eventually(Duration::from_secs(10), || async {
        (number(panal, who, &format!("{key}:{subject}")).await > before).then_some(())
    });
    assert!(
        handled.await.is_some(),
        "{subject} was not handled: {}",
        panal.log()
    );
    number(panal, who, &format!("seen:{subject}")).await
}

#[tokio::test]
async fn messages_are_handled_by_kept_instances_as_requests_are() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(one_message(&panal, "probe", "work.one", "count").await);
    }
    assert_eq!(
        seen,
        [1, 2, 3, 4, 1, 2],
        "4 messages per instance, one at a time"
    );
    // A trap ends the kept instance under it: the next message gets a fresh one.
    one_message(&panal, "probe", "work.trap", "tries").await;
    assert_eq!(one_message(&panal, "probe", "work.one", "count").await, 1);
    // Without `reuse`, every message gets a fresh instance.
    for _ in 0..3 {
        assert_eq!(one_message(&panal, "fresh", "plain.one", "count").await, 1);
    }
    panal.stop();
}
