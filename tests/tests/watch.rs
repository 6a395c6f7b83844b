//! `panal run --watch` through the real binary: a component file rewritten in place is
//! redeployed while clients keep calling; a half-written file is never served (its
//! deploy is refused and logged, the old version answers) and the finished file is.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use panal_tests::{client, component, eventually, sha_prefix, variant, Panal};

async fn version(c: &reqwest::Client, panal: &Panal) -> String {
    let resp = c.get(panal.at("/hello")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-panal-version"]
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_redeploys_a_rebuilt_file_and_never_a_half_written_one() {
    let data = tempfile::tempdir().expect("tmp");
    let original = std::fs::read(component("hello")).expect("hello");
    let file = data.path().join("hello.wasm");
    std::fs::write(&file, &original).expect("write");
    let manifest = format!(
        "version = 1\n\n[components.hello]\nsource = \"{}\"\nroutes = [\"/hello\"]\n",
        file.display()
    );
    let panal = Arc::new(
        Panal::with(&manifest, data.path())
            .args(&["--watch"])
            .start(),
    );
    let c = client();
    let v1 = sha_prefix(&original);
    assert_eq!(version(&c, &panal).await, v1);

    // Clients call throughout; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (panal, stop, served, failures) = (
            panal.clone(),
            stop.clone(),
            served.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let outcome = match c.get(panal.at("/hello")).send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(drop).map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.lock().expect("lock").push(e);
                        0
                    }
                };
            }
        }));
    }

    // Half the new build, then a pause far longer than the watcher's settle time.
    let next = variant(&original, "rebuilt");
    let v2 = sha_prefix(&next);
    std::fs::write(&file, &next[..next.len() / 2]).expect("write half");
    let refused = eventually(Duration::from_secs(10), || async {
        panal.log().contains("watch: refused").then_some(())
    })
    .await;
    assert!(refused.is_some(), "no refusal logged:\n{}", panal.log());
    assert_eq!(
        version(&c, &panal).await,
        v1,
        "a half-written file is serving"
    );

    // The rest of the write: the finished file is deployed.
    std::fs::write(&file, &next).expect("write all");
    let switched = eventually(Duration::from_secs(10), || async {
        (version(&c, &panal).await == v2).then_some(())
    })
    .await;
    assert!(switched.is_some(), "v2 never served:\n{}", panal.log());
    assert!(panal.log().contains("watch: redeployed"));

    // The same bytes written again are no new version.
    std::fs::write(&file, &next).expect("rewrite");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(panal.log().matches("watch: redeployed").count(), 1);

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let failures = failures.lock().expect("lock");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(served.load(Ordering::Relaxed) > 50);
    Arc::into_inner(panal).expect("one owner").stop();
}
