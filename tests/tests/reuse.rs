//! `limits.reuse`: an instance serves up to N requests one after another, and one that
//! failed is never handed another request. Counted with `panal_instances_created_total`.

use panal_tests::{client, component, Panal};

fn manifest() -> String {
    format!(
        r#"version = 1
[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
limits = {{ reuse = 4 }}

[components.fresh]
source = "{probe}"
routes = ["/fresh"]
keyvalue = ["default"]
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
