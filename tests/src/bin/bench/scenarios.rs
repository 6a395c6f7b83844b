//! The load scenarios: each system under the same wrk settings, one after another.

use panal_tests::{client, component, shop, NatsServer, Panal};

use crate::load::{Request, Wrk};
use crate::report::{Report, Target};
use crate::systems;

/// Shared by every scenario.
pub struct Bench {
    pub wrk: Wrk,
    pub report: Report,
    pub conns: Vec<usize>,
    pub wasmtime: std::path::PathBuf,
}

impl Bench {
    pub fn load(&mut self, scenario: &str, system: &str, req: &Request<'_>) {
        for &c in &self.conns.clone() {
            let name = format!("{scenario}-{system}-c{c}");
            let sample = self.wrk.run(&name, req, c);
            self.report.row(scenario, system, c, sample);
        }
    }

    pub fn started(&mut self, what: &str) {
        self.report.commands.push(what.to_string());
    }
}

/// Components for hello, keyvalue and calls on one Panal.
fn local_manifest() -> String {
    format!(
        r#"version = 1
[components.minimal]
source = "{minimal}"
routes = ["/hello"]

[components.hello-p3]
source = "{hello_p3}"
routes = ["/p3"]

[components.minimal-reuse]
source = "{minimal}"
routes = ["/reuse"]
limits = {{ reuse = 1000 }}

[components.bench]
source = "{bench}"
routes = ["/bench"]
keyvalue = ["default"]

[components.bench-reuse]
source = "{bench}"
routes = ["/bench-reuse"]
keyvalue = ["default"]
limits = {{ reuse = 1000 }}

[components.hello]
source = "{hello}"
routes = ["/greet"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
outbound = ["hello", "127.0.0.1"]
"#,
        minimal = component("minimal"),
        hello_p3 = component("hello_p3"),
        bench = component("bench"),
        hello = component("hello"),
        probe = component("probe"),
    )
}

/// hello, keyvalue and the in-process call, against their baselines.
pub fn local(b: &mut Bench) {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&local_manifest(), data.path());
    b.started("panal run --manifest bench.toml (minimal at /hello, bench at /bench; manifest in tests/src/bin/bench/scenarios.rs)");
    let wasmtime = systems::wasmtime_serve(&b.wasmtime, &component("minimal"), &[]);
    b.started(&wasmtime.command);
    let reusing = systems::wasmtime_serve(
        &b.wasmtime,
        &component("minimal"),
        &["--max-instance-reuse-count", "1000"],
    );
    b.started(&reusing.command);
    let native = systems::native(&["hello"]);
    b.started(&native.command);

    println!("hello: the same component on Panal and `wasmtime serve`; native hyper the ceiling");
    b.load("hello", "panal", &Request::get(&panal.at("/hello")));
    let url = format!("{}/hello", wasmtime.url);
    b.load("hello", "wasmtime-serve", &Request::get(&url));
    let url = format!("{}/hello", native.url);
    b.load("hello", "native-hyper", &Request::get(&url));
    println!("hello-reuse: instances reused (up to 1000 requests each) on both hosts");
    b.load("hello-reuse", "panal", &Request::get(&panal.at("/reuse")));
    let url = format!("{}/hello", reusing.url);
    b.load("hello-reuse", "wasmtime-serve", &Request::get(&url));
    drop((wasmtime, reusing, native));
    println!(
        "hello-p3: a WASI 0.3 service (hello-p3), Panal beside `wasmtime serve` (its defaults)"
    );
    let p3 = systems::wasmtime_serve(&b.wasmtime, &component("hello_p3"), &["-Scli"]);
    b.started(&p3.command);
    b.load("hello-p3", "panal", &Request::get(&panal.at("/p3/x")));
    let url = format!("{}/p3/x", p3.url);
    b.load("hello-p3", "wasmtime-serve", &Request::get(&url));
    drop(p3);
    let at_least = |x| Some(Target::AtLeast(x));
    b.report
        .rps_ratios("hello-p3", "panal", "wasmtime-serve", at_least(1.0));
    b.report
        .rps_ratios("hello", "panal", "wasmtime-serve", at_least(1.0));
    b.report
        .rps_ratios("hello", "panal", "native-hyper", at_least(0.25));
    b.report
        .rps_ratios("hello-reuse", "panal", "wasmtime-serve", None);
    b.report.cross_ratios(
        ("hello-reuse", "panal"),
        ("hello", "native-hyper"),
        at_least(0.5),
    );

    println!("keyvalue: one get + one set per request, Panal's SQLite backend on both sides");
    let kv_dir = tempfile::tempdir().expect("tmp");
    let native = systems::native(&["kv", &kv_dir.path().display().to_string()]);
    b.started(&native.command);
    b.load(
        "keyvalue",
        "panal",
        &Request::get(&panal.at("/bench/kv/hot")),
    );
    b.load(
        "keyvalue",
        "native-hyper",
        &Request::get(&format!("{}/kv/hot", native.url)),
    );
    println!("keyvalue-reuse: the same, the component opted into instance reuse");
    let url = panal.at("/bench-reuse/kv/hot");
    b.load("keyvalue-reuse", "panal", &Request::get(&url));
    drop(native);
    b.report.rps_ratios(
        "keyvalue",
        "panal",
        "native-hyper",
        Some(Target::AtLeast(0.7)),
    );
    b.report.cross_ratios(
        ("keyvalue-reuse", "panal"),
        ("keyvalue", "native-hyper"),
        None,
    );

    println!("calls: one component calling another, in-process by name vs over a socket");
    b.load(
        "calls",
        "in-process",
        &Request::get(&panal.at("/probe/call?url=http://hello/x")),
    );
    let via_socket = format!("/probe/call?url={}/greet/x", panal.url);
    b.load(
        "calls",
        "over-socket",
        &Request::get(&panal.at(&via_socket)),
    );
    b.report
        .rps_ratios("calls", "in-process", "over-socket", None);
    panal.stop();
}

/// Publish per request, raw publish rate, and request-reply round trips, on a
/// `nats-server` of the bench's own.
pub async fn messaging(b: &mut Bench) {
    let nats = NatsServer::start();
    b.started(&format!("nats-server -p {} (the bench's own)", nats.port()));
    let manifest = format!(
        r#"version = 1
[messaging]
backend = "nats"
url = "{url}"

[components.bench]
source = "{bench}"
routes = ["/bench"]
keyvalue = ["default"]
messaging = {{ publish = ["bench.>"], subscribe = [{{ subject = "bench.echo", queue = "bench" }}] }}
"#,
        url = nats.url,
        bench = component("bench"),
    );
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest, data.path());
    let native = systems::native(&["publish", &nats.url]);
    b.started(&native.command);
    let body = "x".repeat(64);
    let p_url = panal.at("/bench/publish/bench.events");
    let n_url = format!("{}/publish/bench.events", native.url);
    println!("messaging: one publish per HTTP request, component vs native hyper + async-nats");
    for (system, url) in [("panal", &p_url), ("native-hyper", &n_url)] {
        let req = Request {
            method: "POST",
            url,
            headers: &[("content-type", "text/plain")],
            body: Some(&body),
            lua: None,
        };
        b.load("publish", system, &req);
    }
    drop(native);
    b.report
        .rps_ratios("publish", "panal", "native-hyper", None);

    let rate = crate::nats::raw_publish_rate(&nats.url).await;
    b.report.other(
        "raw async-nats publish rate (64 B, one client)",
        format!("{rate:.0} msg/s"),
    );
    let rtt = crate::nats::round_trips(&nats.url).await;
    b.report.other(
        "request-reply, raw async-nats responder",
        format!("p50 {:.0} µs, p99 {:.0} µs", rtt.raw.0, rtt.raw.1),
    );
    b.report.other(
        "request-reply, component responder",
        format!(
            "p50 {:.0} µs, p99 {:.0} µs",
            rtt.component.0, rtt.component.1
        ),
    );
    b.report.ratio(
        "request-reply added by a component, p50 µs".into(),
        rtt.component.0 - rtt.raw.0,
        Some(Target::AtMost(150.0)),
    );
    panal.stop();
}

/// Users and products the shop bench spreads its orders over (one hot product and one
/// user's inbox would measure contention on two keys, not the shop).
const SHOPPERS: usize = 16;

/// A wrk script placing orders on the shop behind `panal`: [`SHOPPERS`] users and
/// products are made first, and each order picks one of each at random.
/// `POST url` with the order bodies and tokens of `lua` (from [`orders_lua`]).
pub fn orders_request<'a>(url: &'a str, lua: &'a str) -> Request<'a> {
    Request {
        method: "POST",
        url,
        headers: &[("content-type", "application/json")],
        body: None,
        lua: Some(lua),
    }
}

pub async fn orders_lua(panal: &Panal) -> String {
    let s = shop::Shop { panal, c: client() };
    let mut tokens = Vec::new();
    let mut products = Vec::new();
    for i in 0..SHOPPERS {
        tokens.push(s.user(&format!("bench{i}@example.com")).await.1);
        products.push(
            s.product(&format!("Bench widget {i}"), 100, 1_000_000_000)
                .await,
        );
    }
    let list = |v: &[String]| {
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
tokens = {{ {} }}
products = {{ {} }}
request = function()
  local body = '{{"items":[{{"product_id":"' .. products[math.random(#products)] ..
    '","quantity":1}}],"card_number":"4242424242424242"}}'
  wrk.headers["authorization"] = "Bearer " .. tokens[math.random(#tokens)]
  return wrk.format("POST", nil, wrk.headers, body)
end
"#,
        list(&tokens),
        list(&products)
    )
}

/// `POST /orders` end to end: price, reserve, charge, store, publish, file the events.
pub async fn shop(b: &mut Bench) {
    println!("shop: POST /orders end to end, {SHOPPERS} users and products picked at random, with and without the (Python) shipping service");
    let with = shop::manifest();
    let without = shop::without(&with, "shipping");
    for (system, manifest) in [("with-shipping", with), ("without-shipping", without)] {
        let data = tempfile::tempdir().expect("tmp");
        let panal = Panal::with(&manifest, data.path())
            .env(&[("PANAL_TEST_JWT_SECRET", shop::SECRET)])
            .start();
        let lua = orders_lua(&panal).await;
        let url = panal.at("/orders");
        let req = orders_request(&url, &lua);
        b.report.other(
            &format!("shop {system}: RSS idle"),
            mb(rss_kib(panal.pid())),
        );
        b.load("shop", system, &req);
        b.report.other(
            &format!("shop {system}: RSS after the load"),
            mb(rss_kib(panal.pid())),
        );
        if system == "with-shipping" {
            let lag = quiet(&panal, "shipping").await;
            b.report.other(
                "shop with-shipping: shipping's last delivery after the load",
                format!("{lag:.1} s"),
            );
        }
        panal.stop();
    }
    b.report.rps_ratios(
        "shop",
        "with-shipping",
        "without-shipping",
        Some(Target::AtLeast(0.9)),
    );
}

/// The resident set of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

pub fn mb(kib: u64) -> String {
    format!("{:.0} MB", kib as f64 / 1024.0)
}

/// Seconds from now to the last message delivery to `component`: its delivered and
/// failed counts are read until they have not moved for two seconds (its backlog of
/// durable deliveries worked through).
async fn quiet(panal: &Panal, component: &str) -> f64 {
    let begun = std::time::Instant::now();
    let prefix = format!("panal_messaging_operations_total{{component=\"{component}\"");
    let (mut last, mut moved) = (u64::MAX, begun);
    while moved.elapsed() < std::time::Duration::from_secs(2) {
        let text = panal.metrics().await;
        let handled: u64 = text
            .lines()
            .filter(|l| l.starts_with(&prefix) && !l.contains("op=\"publish\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if handled != last {
            (last, moved) = (handled, std::time::Instant::now());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    moved.duration_since(begun).as_secs_f64()
}

/// `panal run` of the shop to its first 200, with an empty compile cache and a warm one.
pub fn startup(b: &mut Bench) {
    let data = tempfile::tempdir().expect("tmp");
    let manifest = shop::manifest();
    let mut cold = Vec::new();
    for i in 0..3 {
        let dir = data.path().join(format!("cold-{i}"));
        cold.push(crate::startup::first_200(&manifest, &dir));
    }
    let warm_dir = data.path().join("cold-0");
    let warm: Vec<f64> = (0..7)
        .map(|_| crate::startup::first_200(&manifest, &warm_dir))
        .collect();
    let (cold, warm) = (median(cold), median(warm));
    b.report.other(
        "start to first 200, shop, cold compile cache (median of 3)",
        format!("{cold:.0} ms"),
    );
    b.report.other(
        "start to first 200, shop, warm compile cache (median of 7)",
        format!("{warm:.0} ms"),
    );
    b.report
        .ratio("startup warm, ms".into(), warm, Some(Target::AtMost(150.0)));
    b.report
        .ratio("startup cold/warm".into(), cold / warm, None);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
