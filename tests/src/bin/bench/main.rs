//! `just bench`: request throughput through the real binary, reported as ratios against
//! a baseline measured in the same run (absolute numbers on shared machines are noise).
//!
//! Scenarios, each `REQUESTS` requests from `CONCURRENCY` client tasks:
//! - `gateway → hello`: the baseline, one fresh instance per request;
//! - `probe → hello in-process`: one request that makes a second instance answer a call
//!   by name, no socket;
//! - `probe → hello over a socket`: the same call sent to the gateway's own address,
//!   as it would be without in-process dispatch;
//! - `probe kv increment`: an instance that does one atomic SQLite increment.
//!
//! Then [`swap`]: deploy latency and request latency during a swap storm.

mod swap;

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use panal_tests::{client, component, Panal};

const REQUESTS: usize = 2000;
const CONCURRENCY: usize = 16;

fn manifest() -> String {
    format!(
        r#"version = 1
[components.hello]
source = "{hello}"
routes = ["/hello"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
outbound = ["hello", "127.0.0.1"]
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

async fn measure(c: &reqwest::Client, method: reqwest::Method, url: &str) -> Duration {
    // Warm-up: first instantiations, connection pool, SQLite pages.
    for _ in 0..50 {
        let _ = c.request(method.clone(), url).send().await;
    }
    let started = Instant::now();
    let failures = stream::iter(0..REQUESTS)
        .map(|_| {
            let req = c.request(method.clone(), url);
            async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_err(),
                    _ => true,
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(failures, 0, "{url}: {failures} requests failed");
    elapsed
}

#[tokio::main]
async fn main() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let get = reqwest::Method::GET;
    let base = measure(&c, get.clone(), &panal.at("/hello/bench")).await;
    let in_process = measure(
        &c,
        get.clone(),
        &panal.at("/probe/call?url=http://hello/bench"),
    )
    .await;
    let via_socket = format!("/probe/call?url={}/hello/bench", panal.url);
    let socket = measure(&c, get, &panal.at(&via_socket)).await;
    let kv = measure(
        &c,
        reqwest::Method::POST,
        &panal.at("/probe/kv/default/n/incr"),
    )
    .await;
    panal.stop();

    let rps = |d: Duration| REQUESTS as f64 / d.as_secs_f64();
    println!(
        "{REQUESTS} requests per scenario, {CONCURRENCY} in flight; ratios against the baseline"
    );
    println!("{:<34} {:>10} {:>8}", "scenario", "req/s", "ratio");
    for (name, d) in [
        ("gateway → hello (baseline)", base),
        ("probe → hello in-process", in_process),
        ("probe → hello over a socket", socket),
        ("probe kv increment (SQLite)", kv),
    ] {
        println!("{name:<34} {:>10.0} {:>8.2}", rps(d), rps(d) / rps(base));
    }
    println!(
        "in-process call vs the same call over a socket: {:.2}x the throughput",
        rps(in_process) / rps(socket)
    );
    swap::run().await;
}
