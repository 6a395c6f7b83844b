//! Checks on several hosts as one cluster: what `panal status` and any NATS client see.

use std::time::{Duration, Instant};

use crate::{client, Panal};

/// Wait until the `running` hosts that run `component` say they run `version` (`panal
/// status`'s view, from the first of `hosts`) and 20 answers in a row to `GET path`
/// through its gateway come from it. On failure, says what each host logged of its
/// deploys.
pub async fn served_everywhere(
    hosts: &[&Panal],
    component: &str,
    path: &str,
    version: &str,
    running: usize,
) {
    let a = hosts[0];
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    let mut seen = String::new();
    while in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "not every host serves {version}: {seen}\n{}",
            deploy_logs(hosts)
        );
        let status: serde_json::Value = c
            .get(format!("{}/components", a.admin))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        let versions: Vec<&str> = status["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|h| h["components"].as_array().into_iter().flatten())
            .filter(|c| c["name"] == component)
            .filter_map(|c| c["version"].as_str())
            .collect();
        let r = c.get(a.at(path)).send().await.expect("get");
        let answered = r
            .headers()
            .get("x-panal-version")
            .and_then(|v| v.to_str().ok());
        let served = answered == Some(version);
        seen = format!("{answered:?} answered; hosts: {}", status["hosts"]);
        if served && versions.len() == running && versions.iter().all(|v| *v == version) {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What each host logged of deploys and of the cluster (the last 20 such lines each).
fn deploy_logs(hosts: &[&Panal]) -> String {
    let mut out = String::new();
    for (i, host) in hosts.iter().enumerate() {
        let log = host.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["cluster", "deploy", "rolled back", "watch"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        out.push_str(&format!("--- host {i} ---\n"));
        for line in &lines[lines.len().saturating_sub(20)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `$SRV.INFO.<service>` answers from `expected` hosts (as `nats micro info` asks).
pub async fn service_infos(url: &str, service: &str, expected: usize) -> Vec<serde_json::Value> {
    use futures::StreamExt;
    let client = async_nats::connect(url).await.expect("connect");
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(format!("$SRV.INFO.{service}"), inbox, "".into())
        .await
        .expect("publish");
    let mut out = Vec::new();
    while out.len() < expected {
        match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
            Ok(Some(m)) => out.push(serde_json::from_slice(&m.payload).expect("json")),
            _ => break,
        }
    }
    out
}

/// Deploy `bytes` as `component` through `via`'s admin API, or roll it back (`None`);
/// the change must be accepted.
pub async fn change(via: &Panal, component: &str, bytes: Option<Vec<u8>>) {
    let c = client();
    let change = match bytes {
        Some(bytes) => c
            .put(format!("{}/components/{component}", via.admin))
            .body(bytes),
        None => c.post(format!("{}/components/{component}/rollback", via.admin)),
    };
    let answer = change.send().await.expect("change");
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{component} through {}: {body}", via.admin);
}
