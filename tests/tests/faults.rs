//! Fault containment through the real binary: a component that loops forever, allocates
//! without bound, traps, recurses without bound, streams an endless response or sleeps
//! past its deadline fails only its own request, with the right status and a JSON error
//! that names it, while a healthy component called at the same time keeps answering.
//! Then the other limits: the concurrency queue and its 503, and request body size.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panal_tests::{client, component, eventually, raw_http, Panal};
use serde_json::Value;

fn manifest() -> String {
    format!(
        r#"version = 1
[components.hello]
source = "{hello}"
routes = ["/hello"]
limits = {{ max_body_kb = 1 }}

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
limits = {{ timeout_ms = 1500, memory_mb = 32, max_body_kb = 1 }}

[components.narrow]
source = "{probe}"
routes = ["/narrow"]
keyvalue = ["default"]
limits = {{ max_concurrency = 2, queue_ms = 50 }}

[components.patient]
source = "{probe}"
routes = ["/patient"]
keyvalue = ["default"]
limits = {{ max_concurrency = 1, queue_ms = 3000 }}
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

/// Run `fault` while four clients call the healthy `hello` in a loop; every one of their
/// requests must succeed, before, during and after the fault.
async fn while_healthy<T>(panal: &Arc<Panal>, fault: impl std::future::Future<Output = T>) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let healthy: Vec<_> = (0..4)
        .map(|_| {
            let (panal, stop, answered) = (panal.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let resp = c.get(panal.at("/hello")).send().await.expect("hello");
                    assert_eq!(resp.status(), 200, "the healthy component failed");
                    resp.bytes().await.expect("hello body");
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Healthy traffic flows before the fault starts (a fault that ends in a few ms would
    // otherwise race the clients' first connections)...
    let count = || answered.load(Ordering::Relaxed);
    let flowing = eventually(Duration::from_secs(10), || async {
        (count() >= 4).then_some(())
    });
    assert!(
        flowing.await.is_some(),
        "the healthy clients got no answers"
    );
    let out = fault.await;
    // ...and still flows once it has ended.
    let after = count();
    let still = eventually(Duration::from_secs(10), || async {
        (count() >= after + 4).then_some(())
    });
    assert!(still.await.is_some(), "no healthy answers after the fault");
    stop.store(true, Ordering::Relaxed);
    for h in healthy {
        h.await.expect("healthy client");
    }
    out
}

/// GET `path` on probe while hello is called; status and JSON error of the answer.
async fn fault(panal: &Arc<Panal>, path: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = while_healthy(panal, client().get(panal.at(path)).send())
        .await
        .expect("fault answered");
    let status = resp.status().as_u16();
    let ct = resp.headers()["content-type"].to_str().expect("ascii");
    assert_eq!(ct, "application/json", "{path}");
    let body: Value = resp.json().await.expect("json error");
    assert_eq!(body["component"], "probe", "{path}: {body}");
    (status, body, started.elapsed())
}

/// A host of the test's own, and its data dir (kept until the test ends).
fn start() -> (Arc<Panal>, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    (Arc::new(panal), data)
}

fn stop(panal: Arc<Panal>) -> String {
    Arc::into_inner(panal).expect("one owner").stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_its_deadline() {
    let (panal, _data) = start();
    let (status, body, took) = fault(&panal, "/probe/spin").await;
    assert_eq!(status, 504);
    assert!(
        body["error"].as_str().unwrap_or("").contains("1500 ms"),
        "{body}"
    );
    assert!(took < Duration::from_secs(10));
    assert!(stop(panal).contains("limit hit: timeout_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_limit() {
    let (panal, _data) = start();
    let (status, body, _) = fault(&panal, "/probe/hog").await;
    assert_eq!(status, 500);
    assert_eq!(
        body["error"], "component ran out of memory (limit 32 MiB)",
        "{body}"
    );
    let log = stop(panal);
    assert!(log.contains("limit hit: memory_mb"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_only_its_request() {
    let (panal, _data) = start();
    let (status, body, _) = fault(&panal, "/probe/trap").await;
    assert_eq!(status, 500);
    assert!(body["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("component failed"));
    stop(panal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_exhausts_only_its_stack() {
    let (panal, _data) = start();
    let (status, body, _) = fault(&panal, "/probe/recurse").await;
    assert_eq!(status, 500);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("call stack exhausted"),
        "{body}"
    );
    stop(panal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_past_the_deadline_is_a_504() {
    let (panal, _data) = start();
    let (status, body, took) = fault(&panal, "/probe/sleep?ms=20000").await;
    assert_eq!(status, 504);
    assert!(
        body["error"].as_str().unwrap_or("").contains("1500 ms"),
        "{body}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    stop(panal);
}

/// The head (200) is already out when the deadline comes, so the status cannot change:
/// the body is cut off instead, and the client sees an incomplete response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_response_is_cut_off_at_the_deadline() {
    let (panal, _data) = start();
    let started = Instant::now();
    let (status, body) = while_healthy(&panal, async {
        let resp = client()
            .get(panal.at("/probe/stream"))
            .send()
            .await
            .expect("head");
        (resp.status().as_u16(), resp.bytes().await)
    })
    .await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "an endless body ended cleanly");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(stop(panal).contains("limit hit: timeout_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_concurrency_requests_queue_briefly_then_get_503() {
    let (panal, _data) = start();
    let c = client();
    // narrow: two slots, a 50 ms queue. Two slow requests take both slots.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(c.get(panal.at("/narrow/sleep?ms=1500")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = c
        .get(panal.at("/narrow/config"))
        .send()
        .await
        .expect("third");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["component"], "narrow");
    for s in slow {
        assert_eq!(s.await.expect("join").expect("slow").status(), 200);
    }
    // patient: one slot, a 3 s queue: the second request waits for the first.
    let first = tokio::spawn(c.get(panal.at("/patient/sleep?ms=400")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = c
        .get(panal.at("/patient/config"))
        .send()
        .await
        .expect("second");
    assert_eq!(second.status(), 200, "a queued request was refused");
    assert_eq!(first.await.expect("join").expect("first").status(), 200);
    assert!(stop(panal).contains("limit hit: max_concurrency"));
}

/// A raw HTTP/1.1 request with a chunked body of `len` bytes; the whole raw answer.
async fn chunked(panal: &Panal, method: &str, path: &str, len: usize) -> String {
    let mut body = format!("100\r\n{}\r\n", "y".repeat(256)).repeat(len / 256);
    body.push_str("0\r\n\r\n");
    raw_http(
        panal,
        method,
        path,
        &["transfer-encoding: chunked"],
        body.as_bytes(),
    )
    .await
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[tokio::test]
async fn bodies_over_max_body_kb_are_refused_with_413() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let small = c
        .put(panal.at("/probe/kv/default/k"))
        .body(vec![b'a'; 512])
        .send();
    assert_eq!(small.await.expect("small").status(), 204);
    // Declared too big: refused before any instance runs.
    let big = c
        .put(panal.at("/probe/kv/default/k"))
        .body(vec![b'a'; 2048])
        .send();
    let big = big.await.expect("big");
    assert_eq!(big.status(), 413);
    let body: Value = big.json().await.expect("json");
    assert_eq!(body["component"], "probe");
    assert!(
        body["error"].as_str().unwrap_or("").contains("1 KiB"),
        "{body}"
    );
    // Not declared (chunked): cut off while the component reads it, answered 413.
    let cut = chunked(&panal, "PUT", "/probe/kv/default/k", 4096).await;
    assert_eq!(status_line(&cut), "HTTP/1.1 413 Payload Too Large", "{cut}");
    let fits = chunked(&panal, "PUT", "/probe/kv/default/k", 512).await;
    assert_eq!(status_line(&fits), "HTTP/1.1 204 No Content", "{fits}");
    // hello streams its echo back, so its 200 head is out before the limit trips: the
    // response is then broken off (no last chunk), never a whole-looking short echo.
    let streamed = chunked(&panal, "POST", "/hello/echo", 4096).await;
    assert_eq!(status_line(&streamed), "HTTP/1.1 200 OK", "{streamed}");
    assert!(
        !streamed.ends_with("0\r\n\r\n"),
        "a cut-off echo looked complete"
    );
    let whole = chunked(&panal, "POST", "/hello/echo", 512).await;
    assert!(whole.ends_with("0\r\n\r\n"), "{whole}");
    assert!(panal.stop().contains("limit hit: max_body_kb"));
}
