//! Hot swap through the real binary: redeploys under 64 concurrent clients with no
//! failed request, rejected deploys that leave the old version serving, deployments
//! that survive a restart, and the `panal deploy|rollback|undeploy|status` commands.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panal_tests::{client, component, fixtures, panal_bin, sha_prefix, variant, Panal};
use serde_json::Value;

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
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

async fn deploy(panal: &Panal, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    client()
        .put(format!("{}/components/{name}", panal.admin))
        .body(bytes)
        .send()
        .await
        .expect("deploy")
}

async fn version(panal: &Panal) -> String {
    let resp = client().get(panal.at("/hello")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-panal-version"]
        .to_str()
        .expect("ascii")
        .to_string()
}

fn cli(panal: &Panal, args: &[&str]) -> std::process::Output {
    Command::new(panal_bin())
        .args(args)
        .args(["--admin", &panal.admin])
        .output()
        .expect("run panal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_see_no_failure_across_twenty_swaps() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Arc::new(Panal::start(&manifest(), data.path()));
    let original = std::fs::read(component("hello")).expect("hello");
    let versions = [variant(&original, "one"), variant(&original, "two")];
    let names = [sha_prefix(&versions[0]), sha_prefix(&versions[1])];

    let stop = Arc::new(AtomicBool::new(false));
    // (started, answered, version) per request; failures as text.
    let seen = Arc::new(Mutex::new(Vec::<(Instant, Instant, String)>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (panal, stop, seen, failures) =
            (panal.clone(), stop.clone(), seen.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match c.get(panal.at("/hello")).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let v = resp.headers()["x-panal-version"]
                            .to_str()
                            .unwrap_or("?")
                            .to_string();
                        let ok = resp.bytes().await.is_ok();
                        if ok {
                            let answered = Instant::now();
                            seen.lock().expect("lock").push((started, answered, v));
                        } else {
                            failures.lock().expect("lock").push("body cut".into());
                        }
                    }
                    Ok(resp) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("status {}", resp.status())),
                    Err(e) => failures.lock().expect("lock").push(format!("{e}")),
                }
            }
        }));
    }
    // (began, done, version) per deploy.
    let mut deploys = Vec::new();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = Instant::now();
        let resp = deploy(&panal, "hello", versions[i % 2].clone()).await;
        let done = Instant::now();
        assert_eq!(resp.status(), 200, "deploy {i}");
        let answer: Value = resp.json().await.expect("json");
        assert_eq!(answer["version"], names[i % 2]);
        deploys.push((began, done, names[i % 2].clone()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }

    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let seen = seen.lock().expect("lock");
    assert!(seen.len() > 200, "only {} requests", seen.len());
    for name in &names {
        assert!(seen.iter().any(|(_, _, v)| v == name), "never saw {name}");
    }
    // A request that started after deploy k finished, and was answered before deploy
    // k+1 began, is served by deploy k's version: never by the one it replaced. (One
    // answered later may rightly see k+1's, which is the replaced one again.)
    let mut checked = 0;
    for (started, answered, v) in seen.iter() {
        let Some(k) = deploys.iter().rposition(|(_, done, _)| done < started) else {
            continue;
        };
        if deploys
            .get(k + 1)
            .is_some_and(|(began, _, _)| began <= answered)
        {
            continue;
        }
        assert_eq!(
            v, &deploys[k].2,
            "a request after deploy {k} saw an older version"
        );
        checked += 1;
    }
    assert!(
        checked > 100,
        "only {checked} requests fell between two deploys"
    );
    let panal = Arc::into_inner(panal).expect("one owner");
    panal.stop();
}

#[tokio::test]
async fn bad_deploys_are_refused_and_the_old_version_keeps_serving() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let before = version(&panal).await;
    let probe = std::fs::read(component("probe")).expect("probe");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not wasm", b"hello, world".to_vec(), "not a WebAssembly"),
        ("a core module", b"\0asm\x01\0\0\0".to_vec(), "core"),
        // An empty component: valid, but it serves nothing.
        (
            "no http export",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "wasi:http/incoming-handler",
        ),
        // probe imports wasi:keyvalue; hello is granted no bucket.
        ("a broken grant", probe, "no bucket is granted"),
        (
            "an import the host lacks",
            fixtures::missing_import(),
            "acme:missing/thing",
        ),
        (
            "a trap while instantiating",
            fixtures::traps_at_start(),
            "trapped while instantiating",
        ),
    ];
    for (what, bytes, why) in cases {
        let resp = deploy(&panal, "hello", bytes).await;
        assert_eq!(resp.status(), 422, "{what}");
        let answer: Value = resp.json().await.expect("json");
        let reason = answer["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{what}: {reason}");
        assert_eq!(version(&panal).await, before, "{what} changed the version");
    }
    // The CLI reports the refusal and exits non-zero.
    let file = data.path().join("junk.wasm");
    std::fs::write(&file, b"junk").expect("write");
    let out = cli(&panal, &["deploy", "hello", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing changed") && err.contains("not a WebAssembly"),
        "{err}"
    );
    panal.stop();
}

#[tokio::test]
async fn deployments_survive_a_restart_and_roll_back() {
    let data = tempfile::tempdir().expect("tmp");
    let original = std::fs::read(component("hello")).expect("hello");
    let v1 = sha_prefix(&original);
    let v2_bytes = variant(&original, "two");
    let v2 = sha_prefix(&v2_bytes);
    let panal = Panal::start(&manifest(), data.path());
    assert_eq!(version(&panal).await, v1);
    let file = data.path().join("hello-v2.wasm");
    std::fs::write(&file, &v2_bytes).expect("write");
    let out = cli(&panal, &["deploy", "hello", file.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(version(&panal).await, v2);
    panal.stop();

    // The restarted host serves what was deployed, not the manifest's file...
    let panal = Panal::start(&manifest(), data.path());
    assert_eq!(version(&panal).await, v2);
    let out = cli(&panal, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let hello = status["components"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "hello"))
        .expect("hello in status");
    assert_eq!(hello["version"], v2.as_str());
    assert_eq!(hello["versions"], 2);
    // ...and a rollback goes back to the manifest's version.
    let out = cli(&panal, &["rollback", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(version(&panal).await, v1);
    let out = cli(&panal, &["rollback", "hello"]);
    assert!(!out.status.success(), "nothing earlier to roll back to");
    panal.stop();

    // --reset-deployments goes back to the manifest.
    let panal = Panal::with(&manifest(), data.path())
        .args(&["--reset-deployments"])
        .start();
    assert_eq!(version(&panal).await, v1);
    panal.stop();
}

#[tokio::test]
async fn a_new_component_is_added_routed_and_undeployed() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    assert_eq!(
        c.get(panal.at("/greet"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );
    // A new component needs routes.
    let out = cli(&panal, &["deploy", "greeter", &component("hello")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--route"));
    // A route another component holds is refused.
    let out = cli(
        &panal,
        &[
            "deploy",
            "greeter",
            &component("hello"),
            "--route",
            "/hello",
        ],
    );
    assert!(!out.status.success());
    let out = cli(
        &panal,
        &[
            "deploy",
            "greeter",
            &component("hello"),
            "--route",
            "/greet",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = c.get(panal.at("/greet")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    let out = cli(&panal, &["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("greeter") && table.contains("/greet"),
        "{table}"
    );
    let out = cli(&panal, &["undeploy", "greeter"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.get(panal.at("/greet"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );
    // The others never noticed.
    assert_eq!(
        c.get(panal.at("/hello"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    panal.stop();
}

#[tokio::test]
async fn the_admin_api_wants_the_token_when_one_is_set() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest(), data.path())
        .env(&[("PANAL_ADMIN_TOKEN", "tok-123")])
        .start();
    let c = client();
    let url = format!("{}/components", panal.admin);
    assert_eq!(c.get(&url).send().await.expect("get").status(), 401);
    let wrong = c
        .get(&url)
        .bearer_auth("tok-124")
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), 401);
    let right = c
        .get(&url)
        .bearer_auth("tok-123")
        .send()
        .await
        .expect("get");
    assert_eq!(right.status(), 200);
    let health = c
        .get(format!("{}/healthz", panal.admin))
        .send()
        .await
        .expect("get");
    assert_eq!(health.status(), 200);
    panal.stop();
}
