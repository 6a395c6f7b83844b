//! Jepsen-style fault runs over the shop on a real cluster ([`world`]): clients order
//! through every gateway with retries and idempotency keys ([`workload`]) while a
//! seeded nemesis partitions, pauses, kills and restarts processes and deploys and
//! rolls back ([`nemesis`], [`changes`]); after healing and a quiet period the checker
//! reads everything back and verifies the shop's invariants ([`check`]). `just chaos
//! [MINUTES] [SEED]` runs one; `tests/tests/chaos.rs` runs short ones in the suite.

pub mod changes;
pub mod check;
mod disk;
pub mod nemesis;
mod report;
pub mod workload;
pub mod world;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use report::Report;

use crate::shop::{admin_token, token_of};
use crate::{client, component};
use check::Stored;
use world::{World, HOSTS};

/// A healed cluster must serve through every gateway again within this.
pub const RECOVERY: Duration = Duration::from_secs(30);
/// The checker waits for the shop to settle (pending orders swept, events delivered)
/// while it makes progress: until QUIET passes with nothing stored changing, or
/// [`SETTLE_CAP`] in all. A backlog of messages after a long run is worked off, not
/// counted as lost; one that stops moving is.
const QUIET: Duration = Duration::from_secs(60);
const SETTLE_CAP: Duration = Duration::from_secs(15 * 60);
/// Stock of the product that sells out during a run (the others never do).
const SCARCE: u64 = 60;
const PLENTY: u64 = 1_000_000;

/// One run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Draws the nemesis's schedule and the clients' choices.
    pub seed: u64,
    /// How long faults are injected and clients order.
    pub run: Duration,
    /// Clients ordering at once.
    pub clients: usize,
    /// The faults drawn.
    pub mix: nemesis::Mix,
    /// Another build of the order service to run (a deliberately broken one, which the
    /// checker must catch); `None`: the shop's own.
    pub order: Option<String>,
}

/// The shop as the chaos run deploys it: durable subscriptions, and the order
/// service's sweep every 5 s for orders pending over 20 s (beyond any request's
/// deadline and any pause the nemesis makes).
pub fn manifest(order: Option<&str>) -> String {
    let mut shop = crate::shop::manifest_on("http", true, "");
    if let Some(order) = order {
        let ours = crate::component("order");
        assert!(shop.contains(&ours), "the shop manifest changed");
        shop = shop.replace(&ours, order);
    }
    let order_config = r#"config = { payment_via = "http" }"#;
    assert!(shop.contains(order_config), "the shop manifest changed");
    shop.replacen(
        order_config,
        "config = { payment_via = \"http\", settle_after_secs = \"20\" }\n\
         schedule = [{ every = \"5s\", path = \"/internal/reconcile\" }]",
        1,
    )
}

/// Run `settings` and check the result.
pub async fn run(settings: &Settings) -> Report {
    let steps = nemesis::schedule(settings.seed, settings.run, settings.mix);
    eprintln!("chaos: seed {}, schedule:", settings.seed);
    for step in &steps {
        eprintln!("{step}");
    }
    let begun = Instant::now();
    let mut world = World::start(&manifest(settings.order.as_deref())).await;
    let (created, probe) = setup(&world).await;
    eprintln!(
        "chaos: the cluster is up in {:.1}s; faults begin",
        begun.elapsed().as_secs_f64()
    );
    let products: Vec<String> = created.keys().cloned().collect();
    let shop = workload::Shop {
        gateways: world.gateways(),
        products: products.clone(),
        seed: settings.seed,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let clients = tokio::spawn(workload::run(shop, settings.clients, stopped));
    let mut changes = changes::Changes::new(std::fs::read(component("product")).expect("product"));
    let mut recoveries = Vec::new();
    let started = Instant::now();
    for step in &steps {
        tokio::time::sleep_until((started + step.at).into()).await;
        step.fault.inject(&mut world).await;
        tokio::time::sleep(step.lasts / 2).await;
        let sending = step.change.and_then(|change| changes.send(&world, change));
        tokio::time::sleep(step.lasts / 2).await;
        step.fault.heal(&mut world).await;
        let took = recovery(&world, &probe).await;
        if let Some(sending) = sending {
            changes.answered(sending).await;
        }
        eprintln!("chaos: {step}: healed, served again after {took:?}");
        recoveries.push((step.fault.kind(), took));
    }
    tokio::time::sleep_until((started + settings.run).into()).await;
    let _ = stop.send(true);
    eprintln!("chaos: faults over; clients finish their orders");
    let history = clients.await.expect("clients");
    let seen = std::mem::take(&mut *history.lock().expect("history"));
    eprintln!("chaos: checking");
    let (settled, stored) = settle(&world, &seen, &created).await;
    let served = changes.check(&world, &products[0]).await;
    if let Some(dir) = std::env::var_os(KEEP) {
        keep(&world, &seen, &stored, std::path::Path::new(&dir));
    }
    Report::new(
        settings,
        steps,
        recoveries,
        seen,
        settled,
        served,
        &changes,
        world.logs(10),
    )
}

/// The admin grant, the products (one scarce) and a probe user's token.
async fn setup(world: &World) -> (HashMap<String, u64>, String) {
    let host = world.host(1).expect("host 1");
    let admin = admin_token(host).await;
    let c = client();
    let mut created = HashMap::new();
    for (name, stock) in [("Scarce jars", SCARCE), ("Jars", PLENTY), ("Lids", PLENTY)] {
        let body = serde_json::json!({"name": name, "price_cents": 250, "stock": stock});
        let r = c
            .post(host.at("/products"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await;
        let p: serde_json::Value = r.expect("create product").json().await.expect("json");
        created.insert(p["id"].as_str().expect("product id").to_string(), stock);
    }
    (created, token_of("chaos-probe"))
}

/// How long until every gateway answers `GET /orders` (a call to order, across hosts
/// for host 2) with 200 again; None past [`RECOVERY`].
async fn recovery(world: &World, token: &str) -> Option<Duration> {
    let since = Instant::now();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    for h in 0..HOSTS {
        loop {
            let url = world.host(h)?.at("/orders");
            let ok = c.get(&url).bearer_auth(token).send().await;
            if ok.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if since.elapsed() > RECOVERY {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Some(since.elapsed())
}

/// The environment variable naming a folder where a run leaves every log, every record
/// and every order the clients tried, to be read after it.
pub const KEEP: &str = "PANAL_CHAOS_LOGS";

/// Writes what [`KEEP`] promises into `dir`; a failure to is only reported.
fn keep(world: &World, seen: &workload::Seen, stored: &Stored, dir: &std::path::Path) {
    let written = world.keep_logs(dir).and_then(|()| {
        std::fs::write(dir.join("records.txt"), stored.dump())?;
        let orders: Vec<String> = seen.orders.iter().map(|o| format!("{o:?}")).collect();
        std::fs::write(dir.join("orders.txt"), orders.join("\n"))
    });
    match written {
        Ok(()) => eprintln!("chaos: logs and records kept in {}", dir.display()),
        Err(e) => eprintln!("chaos: could not keep logs in {}: {e}", dir.display()),
    }
}

/// What the checker found once the shop settled, or once it gave up waiting.
pub struct Settled {
    /// Each invariant's result.
    pub verdicts: check::Verdicts,
    /// Orders still pending.
    pub pending: usize,
    /// How long after the clients finished; `None` when the shop never settled.
    pub took: Option<Duration>,
}

/// Check until every invariant holds and no order is pending, or nothing stored changes
/// for [`QUIET`], or [`SETTLE_CAP`] passes; what it found, and the records read last.
async fn settle(
    world: &World,
    seen: &workload::Seen,
    created: &HashMap<String, u64>,
) -> (Settled, Stored) {
    let begun = Instant::now();
    let (mut last, mut moved) = (None, Instant::now());
    loop {
        let stored = Stored::read(&world.db_url)
            .await
            .expect("read the shop's records");
        let verdicts = check::check(&stored, seen, created);
        let pending = stored.pending();
        let (records, buckets) = stored.size();
        eprintln!("chaos: {records} records in {buckets} buckets, {pending} orders pending");
        let clean = verdicts.values().all(|v| v.violations.is_empty());
        let now = stored.fingerprint();
        if last.replace(now) != Some(now) {
            moved = Instant::now();
        }
        let still = moved.elapsed() > QUIET || begun.elapsed() > SETTLE_CAP;
        if (clean && pending == 0) || still {
            let took = (clean && pending == 0).then(|| begun.elapsed());
            let settled = Settled {
                verdicts,
                pending,
                took,
            };
            return (settled, stored);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
