//! The `chain` scenario: the classic microservice deployment as the baseline. Three
//! services, each doing one keyvalue read and calling the next (the last answers):
//! on Panal as components calling each other by name in-process (fresh instances, kept
//! ones, and WASI 0.3 concurrent ones), and as three native
//! hyper processes over loopback HTTP, each with its own SQLite file, which is what a
//! team would run without Panal.

use panal_tests::{component, Panal};

use crate::load::Request;
use crate::report::Target;
use crate::scenarios::Bench;
use crate::systems;

/// The services of the chain, first to last.
const LINKS: [&str; 3] = ["chain-a", "chain-b", "chain-c"];

/// The chain as components of `source` (`bench`, or `probe_p3` for WASI 0.3): each
/// reads `default`, then calls the next by name. `limits` (a TOML inline table's fields,
/// or empty) applies to every link.
fn manifest(prefix: &str, source: &str, limits: &str) -> String {
    let bench = component(source);
    let mut toml = String::new();
    for (i, link) in LINKS.iter().enumerate() {
        let name = format!("{prefix}{link}");
        toml += &format!("\n[components.{name}]\nsource = \"{bench}\"\nkeyvalue = [\"default\"]\n");
        if i == 0 {
            toml += &format!("routes = [\"/{prefix}chain\"]\n");
        }
        if let Some(next) = LINKS.get(i + 1) {
            let next = format!("{prefix}{next}");
            toml += &format!("outbound = [\"{next}\"]\nconfig = {{ next = \"{next}\" }}\n");
        }
        if !limits.is_empty() {
            toml += &format!("limits = {{ {limits} }}\n");
        }
    }
    toml
}

/// Panal (fresh instances, instances kept for 1000 requests, WASI 0.3 with its
/// defaults) against three native services.
pub fn run(b: &mut Bench) {
    println!("chain: 3 services, each one keyvalue read and a call to the next");
    let data = tempfile::tempdir().expect("tmp");
    let all = [
        manifest("", "bench", ""),
        manifest("reuse-", "bench", "reuse = 1000"),
        manifest("p3-", "probe_p3", ""),
    ];
    let panal = Panal::start(&format!("version = 1\n{}", all.concat()), data.path());
    b.started("panal run (chain-a -> chain-b -> chain-c, `bench` components calling by name; manifest in tests/src/bin/bench/chain.rs)");
    let mut natives: Vec<systems::Server> = Vec::new();
    for (i, link) in LINKS.iter().enumerate().rev() {
        let dir = data.path().join(format!("native-{link}"));
        std::fs::create_dir_all(&dir).expect("native dir");
        let mut args = vec!["chain".to_string(), dir.display().to_string()];
        if let Some(next) = natives.last() {
            args.push(next.url.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = systems::native(&args);
        if i == 0 {
            b.started(&server.command);
        }
        natives.push(server);
    }
    b.load("chain", "panal", &Request::get(&panal.at("/chain/chain/k")));
    b.load(
        "chain",
        "panal-reuse",
        &Request::get(&panal.at("/reuse-chain/chain/k")),
    );
    b.load(
        "chain",
        "panal-p3",
        &Request::get(&panal.at("/p3-chain/chain/k")),
    );
    let first = natives.last().expect("three native services");
    let url = format!("{}/chain/k", first.url);
    b.load("chain", "native-services", &Request::get(&url));
    drop(natives);
    panal.stop();
    let at_least = |x| Some(Target::AtLeast(x));
    b.report
        .rps_ratios("chain", "panal", "native-services", at_least(1.0));
    for panal in ["panal-reuse", "panal-p3"] {
        b.report
            .rps_ratios("chain", panal, "native-services", at_least(1.0));
    }
}
