//! Hot swap under measurement:
//! - deploy latency, from the `PUT` to the first request answered by the new version,
//!   for a version never seen before (compiled during the deploy) and for one whose
//!   compiled code is already in the data dir's cache (precompiled);
//! - request latency percentiles while versions are swapped back to back (a swap
//!   storm) against the same load with no deploys (steady state).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panal_tests::{client, component, sha_prefix, variant, Panal};

use crate::report::Report;

const ROUNDS: usize = 8;
const CLIENTS: usize = 16;
const WINDOW: Duration = Duration::from_secs(3);

async fn serving(c: &reqwest::Client, panal: &Panal) -> String {
    let resp = c.get(panal.at("/hello")).send().await.expect("get");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.headers()["x-panal-version"]
        .to_str()
        .unwrap_or("?")
        .to_string()
}

/// From the deploy call to a request answered by `bytes`' version.
async fn deploy_latency(c: &reqwest::Client, panal: &Panal, bytes: &[u8]) -> Duration {
    let want = sha_prefix(bytes);
    let started = Instant::now();
    let resp = c
        .put(format!("{}/components/hello", panal.admin))
        .body(bytes.to_vec())
        .send()
        .await
        .expect("deploy");
    assert_eq!(resp.status(), 200, "deploy refused");
    while serving(c, panal).await != want {}
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies of `CLIENTS` looping clients over `WINDOW`; `storm` keeps deploying
/// meanwhile. Returns the sorted latencies and how many deploys happened.
async fn load(panal: &Arc<Panal>, storm: Option<[Vec<u8>; 2]>) -> (Vec<Duration>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (panal, stop, samples) = (panal.clone(), stop.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = c.get(panal.at("/hello")).send().await.expect("get");
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.bytes().await.expect("body");
                mine.push(t.elapsed());
            }
            samples.lock().expect("lock").extend(mine);
        }));
    }
    let mut deploys = 0;
    let until = Instant::now() + WINDOW;
    match storm {
        Some(versions) => {
            let c = client();
            while Instant::now() < until {
                deploy_latency(&c, panal, &versions[deploys % 2]).await;
                deploys += 1;
            }
        }
        None => tokio::time::sleep(WINDOW).await,
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    let mut all = std::mem::take(&mut *samples.lock().expect("lock"));
    all.sort_unstable();
    (all, deploys)
}

/// Run both measurements and print them.
pub async fn run(report: &mut Report) {
    let data = tempfile::tempdir().expect("tmp");
    let manifest = format!(
        "version = 1\n[components.hello]\nsource = \"{}\"\nroutes = [\"/hello\"]\n",
        component("hello")
    );
    let panal = Arc::new(Panal::start(&manifest, data.path()));
    let c = client();
    let original = std::fs::read(component("hello")).expect("hello");

    // Fresh: a new sha every time, so nothing is cached. Precompiled: two versions that
    // were each deployed once before, alternated.
    let mut fresh = Vec::new();
    for i in 0..ROUNDS {
        fresh.push(deploy_latency(&c, &panal, &variant(&original, &format!("fresh-{i}"))).await);
    }
    let pair = [variant(&original, "a"), variant(&original, "b")];
    for v in &pair {
        deploy_latency(&c, &panal, v).await;
    }
    let mut warm = Vec::new();
    for i in 0..ROUNDS {
        warm.push(deploy_latency(&c, &panal, &pair[i % 2]).await);
    }
    let (fresh, warm) = (median(fresh), median(warm));

    let (steady, _) = load(&panal, None).await;
    let (stormy, deploys) = load(&panal, Some(pair)).await;
    Arc::into_inner(panal).expect("one owner").stop();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    report.other(
        &format!("deploy, fresh (compiled in the deploy), median of {ROUNDS}"),
        format!("{:.1} ms", ms(fresh)),
    );
    report.other(
        &format!("deploy, precompiled (compile cache), median of {ROUNDS}"),
        format!("{:.1} ms", ms(warm)),
    );
    report.ratio(
        "deploy fresh/precompiled".into(),
        fresh.as_secs_f64() / warm.as_secs_f64(),
        None,
    );
    for (name, s) in [("steady state", &steady), ("swap storm", &stormy)] {
        report.other(
            &format!("{CLIENTS} clients, {} s, {name}", WINDOW.as_secs()),
            format!(
                "{} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                s.len(),
                ms(percentile(s, 0.5)),
                ms(percentile(s, 0.99)),
                ms(percentile(s, 1.0)),
            ),
        );
    }
    report.other("deploys during the swap storm", deploys.to_string());
    report.ratio(
        "swap p99 storm/steady".into(),
        percentile(&stormy, 0.99).as_secs_f64() / percentile(&steady, 0.99).as_secs_f64(),
        None,
    );
}
