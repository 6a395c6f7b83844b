//! Guests written in other languages run unchanged: a Python WASI 0.2 proxy and 0.3
//! service (componentize-py) and a JavaScript 0.2 proxy (componentize-js), built from a
//! few lines of source in `components/py` and `components/js` by `scripts/guests.sh`
//! (the tools install once, the builds are cached). Each runs fresh and kept (reuse for
//! 0.2, concurrent instances for 0.3), through the gateway and called by name from
//! another component. (Not the JavaScript one kept: its engine cannot serve a second
//! request in one instance, StarlingMonkey issue #247; the README says so.)

use std::process::Command;

use futures::future::join_all;
use panal_tests::{client, component, repo, Panal};

/// Build the guests (or find them built); their paths by name.
fn guests() -> (String, String, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/guests.sh"))
        .output()
        .expect("run scripts/guests.sh");
    assert!(
        out.status.success(),
        "scripts/guests.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = |name: &str| {
        repo()
            .join("components/target/guests")
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    };
    (at("py-hello"), at("py-hello-p3"), at("js-hello"))
}

fn manifest(py: &str, py3: &str, js: &str) -> String {
    format!(
        r#"version = 1
[components.py]
source = "{py}"
routes = ["/py"]

[components.py-reuse]
source = "{py}"
routes = ["/py-reuse"]
limits = {{ reuse = 100 }}

[components.py3]
source = "{py3}"
routes = ["/py3"]

[components.py3-fresh]
source = "{py3}"
routes = ["/py3-fresh"]
limits = {{ reuse = 1 }}

[components.js]
source = "{js}"
routes = ["/js"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
outbound = ["py", "py3", "js"]
"#,
        probe = component("probe"),
    )
}

#[tokio::test]
async fn python_and_javascript_components_run_unchanged() {
    let (py, py3, js) = guests();
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(&py, &py3, &js), data.path());
    let c = client();

    let cases = [
        ("py", "hello from Python: GET"),
        ("py-reuse", "hello from Python: GET"),
        ("py3", "hello from Python 0.3: GET"),
        ("py3-fresh", "hello from Python 0.3: GET"),
        ("js", "hello from JavaScript: GET"),
    ];
    for (name, greeting) in cases {
        // 12 at once, each answered with its own path.
        let before = panal.instances_created(name).await;
        let answers = join_all((0..12).map(|i| {
            let url = panal.at(&format!("/{name}/n{i}?q={i}"));
            let c = c.clone();
            async move {
                let r = c.get(url).send().await.expect("get");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            }
        }))
        .await;
        for (i, (status, body)) in answers.iter().enumerate() {
            assert_eq!(*status, 200, "{name} {i}: {body}");
            assert_eq!(body, &format!("{greeting} /{name}/n{i}?q={i}"), "{name}");
        }
        // One after another: kept instances answer again, fresh ones never.
        for i in 0..4 {
            let r = c
                .get(panal.at(&format!("/{name}/seq{i}")))
                .send()
                .await
                .expect("get");
            assert_eq!(r.status(), 200, "{name}");
        }
        let made = panal.instances_created(name).await - before;
        if name.ends_with("-reuse") || name == "py3" {
            assert!(made < 16, "{name}: 16 requests took {made} instances");
        } else {
            assert_eq!(made, 16, "{name}: a fresh instance per request");
        }
    }

    // Called by name from a Rust component, in-process.
    for (name, greeting) in [
        ("py", "hello from Python: GET /py/called"),
        ("py3", "hello from Python 0.3: GET /py3/called"),
        ("js", "hello from JavaScript: GET /js/called"),
    ] {
        let r = c
            .get(panal.at(&format!("/probe/call?url=http://{name}/{name}/called")))
            .send()
            .await
            .expect("call");
        assert_eq!(r.status(), 200, "{name}");
        let text = r.text().await.expect("body");
        assert!(text.contains(greeting), "{name}: {text}");
    }
    panal.stop();
}
