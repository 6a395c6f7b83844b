//! `GET /metrics` on the admin listener, read back after known traffic: requests by
//! component, version and status, the latency histogram, instances, in-flight, deploys
//! and failed deploys, keyvalue and messaging operations; and the text format itself
//! (every sample under a declared family, no series twice), also as Prometheus's own
//! `promtool check metrics` reads it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use panal_tests::{client, component, eventually, sha_prefix, Panal};

fn manifest() -> String {
    format!(
        r#"version = 1

[components.hello]
source = "{hello}"
routes = ["/hello"]

[components.a]
source = "{probe}"
routes = ["/a"]
keyvalue = ["default"]
messaging = {{ publish = ["events.>"], subscribe = ["events.*"] }}
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

/// The exposition as `series → value`, after checking its shape.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut families = HashSet::new();
    let mut series = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().expect("family name");
            let kind = words.next().expect("family type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(families.insert(name.to_string()), "{name} declared twice");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample has a value");
        let name = key.split('{').next().expect("name");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "{name} has no # TYPE before it");
        let value: f64 = value.parse().expect("numeric value");
        assert!(
            series.insert(key.to_string(), value).is_none(),
            "{key} appears twice"
        );
    }
    series
}

async fn scrape(panal: &Panal) -> HashMap<String, f64> {
    let resp = client()
        .get(format!("{}/metrics", panal.admin))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&resp.text().await.expect("text"))
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest(), data.path());
    let c = client();
    let hello = sha_prefix(&std::fs::read(component("hello")).expect("hello"));

    for _ in 0..7 {
        let resp = c.get(panal.at("/hello")).send().await.expect("get");
        assert_eq!(resp.status(), 200);
    }
    let put = c.put(panal.at("/a/kv/default/k")).body("v").send().await;
    assert_eq!(put.expect("put").status(), 204);
    let got = c.get(panal.at("/a/kv/default/k")).send().await;
    assert_eq!(got.expect("get").status(), 200);
    let missing = c.get(panal.at("/a/nothing-here")).send().await;
    assert_eq!(missing.expect("get").status(), 404);
    let sent = c.post(panal.at("/a/msg/publish/events.x")).body("m").send();
    assert!(sent.await.expect("publish").status().is_success());
    // The delivery is asynchronous: wait until the handler has run.
    let delivered = r#"panal_messaging_operations_total{component="a",op="delivered"}"#;
    let m = eventually(Duration::from_secs(10), || async {
        let m = scrape(&panal).await;
        (m.get(delivered).copied().unwrap_or(0.0) >= 1.0).then_some(m)
    })
    .await
    .expect("the delivery is counted");

    // Deploys: one refused, one that adds a component.
    let deploy = |name: &str, query: &str, body: Vec<u8>| {
        c.put(format!("{}/components/{name}{query}", panal.admin))
            .body(body)
            .send()
    };
    let refused = deploy("hello", "", b"junk".to_vec()).await.expect("deploy");
    assert_eq!(refused.status(), 422);
    let probe = std::fs::read(component("probe")).expect("probe");
    let added = deploy("extra", "?route=/extra&keyvalue=default", probe)
        .await
        .expect("deploy");
    assert_eq!(added.status(), 200);
    let m2 = scrape(&panal).await;

    let get = |m: &HashMap<String, f64>, key: &str| -> f64 {
        *m.get(key)
            .unwrap_or_else(|| panic!("no series {key} in {m:#?}"))
    };
    let hv = format!(r#"component="hello",version="{hello}""#);
    assert_eq!(
        get(&m, &format!(r#"panal_requests_total{{{hv},status="200"}}"#)),
        7.0
    );
    assert_eq!(
        get(&m, &format!("panal_request_duration_seconds_count{{{hv}}}")),
        7.0
    );
    assert_eq!(
        get(
            &m,
            &format!(r#"panal_request_duration_seconds_bucket{{{hv},le="+Inf"}}"#)
        ),
        7.0
    );
    // Cumulative buckets never go down.
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix(&format!(
                    "panal_request_duration_seconds_bucket{{{hv},le=\""
                ))?
                .strip_suffix("\"}")?;
            Some((le.parse().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert!(get(&m, &format!("panal_instances_created_total{{{hv}}}")) >= 7.0);
    assert_eq!(
        get(&m, r#"panal_requests_in_flight{component="hello"}"#),
        0.0
    );
    assert_eq!(get(&m, &format!("panal_component_version{{{hv}}}")), 1.0);
    // The probe's 404 is counted under its own status.
    let a_404 = m.iter().find(|(k, _)| {
        k.starts_with(r#"panal_requests_total{component="a""#) && k.ends_with(r#"status="404"}"#)
    });
    assert_eq!(a_404.map(|(_, v)| *v), Some(1.0));
    assert!(
        get(
            &m,
            r#"panal_keyvalue_operations_total{component="a",op="set"}"#
        ) >= 1.0
    );
    assert!(
        get(
            &m,
            r#"panal_keyvalue_operations_total{component="a",op="get"}"#
        ) >= 1.0
    );
    assert_eq!(
        get(
            &m,
            r#"panal_messaging_operations_total{component="a",op="publish"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &m2,
            r#"panal_deploys_total{component="hello",action="deploy",outcome="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &m2,
            r#"panal_deploys_total{component="extra",action="deploy",outcome="ok"}"#
        ),
        1.0
    );
    assert!(m2
        .keys()
        .any(|k| k.starts_with(r#"panal_component_version{component="extra""#)));
    let text = panal.metrics().await;
    promtool_accepts(&text);
    docs_use_only_these_families(&text);
    panal.stop();
}

/// The sample Prometheus configuration is valid, and every metric the Grafana dashboard
/// in `docs/` queries is one Panal exposes (so renaming one breaks this test).
fn docs_use_only_these_families(text: &str) {
    let docs = panal_tests::repo().join("docs");
    let out = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(docs.join("prometheus.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "docs/prometheus.yml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let dashboard = std::fs::read_to_string(docs.join("grafana-dashboard.json")).expect("read");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    for expr in &exprs {
        for (at, _) in expr.match_indices("panal_") {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains(base))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "`{name}` in `{expr}` is not exposed"
            );
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// `promtool check metrics` (scripts/setup.sh installs it) finds no problem in `text`.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/setup.sh (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
