//! Short chaos runs in the suite (`just chaos` runs long ones): each seed's schedule of
//! partitions, pauses, kills, restarts (PostgreSQL's too), full disks, deploys and
//! rollbacks for a minute or two over the shop on three hosts, three NATS servers and
//! PostgreSQL, then every invariant checked; and the checker against a deliberately
//! broken order service.
//!
//! Two-minute runs of seeds 1 and 2 found, each now fixed (with `tests/tests/outage.rs`
//! and `tests/tests/partition.rs` for the ones a plain test shows):
//! - a paid order without its shipment: `orders.paid` dead-lettered while the shipping
//!   host could not reach PostgreSQL (messages now wait outages out), and events the
//!   outbox gave up on because a stream out of reach answered "no stream found";
//! - an order stored by an attempt that then failed never had `orders.created` told
//!   (the sweep tells it now);
//! - stock given back by a failed attempt while a replay of its `Idempotency-Key` paid
//!   for the order (attempts with a key now leave that to the sweep);
//! - a rollback answered by a host cut off from NATS, kept there after healing (such a
//!   change is now refused with 503);
//! - an order `paid` whose payment could not be read by its id: the charge's storage
//!   failed between claiming its key and writing its record, and a lookup by key
//!   answered from the claim (lookups now write the record first; `tests/tests/shop.rs`);
//! - units held by no order: stock a failed order could not give back at once, and
//!   events it could not tell, were forgotten with its marker (the marker now stays
//!   until the sweep finished it; `tests/tests/breaker.rs`); holds the product service
//!   forgot after a minute while their order was still unsettled; and a reservation sent
//!   again after its release, which took the units a second time (holds now last until
//!   their order settles them, and a settled one a minute more; `tests/tests/stock.rs`).

use std::time::Duration;

use panal_tests::chaos::{nemesis::Mix, run, Settings};
use panal_tests::repo;

/// Each seed, and how long it injects faults (a schedule depends on both).
const RUNS: [(u64, Duration); 2] = [(1, Duration::from_secs(120)), (2, Duration::from_secs(60))];

/// One run at a time: each is a whole cluster, and the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The checker itself, against an order service that ignores `Idempotency-Key`
/// (`scripts/build-components.sh` builds it under `target/broken/`): clients that retry
/// through faults place orders twice, and the run must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_orders_placed_twice() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let broken = repo().join("components/target/broken/wasm32-wasip2/release/order.wasm");
    assert!(
        broken.is_file(),
        "{} is missing: `just components`",
        broken.display()
    );
    let settings = Settings {
        seed: 3,
        run: Duration::from_secs(40),
        clients: 6,
        mix: Mix {
            storage: false,
            changes: false,
        },
        order: Some(broken.display().to_string()),
    };
    let report = run(&settings).await;
    println!("{}", report.table());
    let twice = &report.verdicts["no order no client made"].violations;
    assert!(
        twice
            .iter()
            .any(|v| v.contains("a retry placed an order twice")),
        "the checker missed the broken order service: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shop_keeps_its_promises_through_faults() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut failed = Vec::new();
    for (seed, faults) in RUNS {
        let settings = Settings {
            seed,
            run: faults,
            clients: 6,
            mix: Mix::ALL,
            order: None,
        };
        let report = run(&settings).await;
        println!("{}", report.table());
        if !report.passed() {
            let minutes = faults.as_secs_f64() / 60.0;
            failed.push(format!("`just chaos {minutes} {seed}`"));
        }
    }
    assert!(
        failed.is_empty(),
        "invariants violated (tables above); replay with {}",
        failed.join(", ")
    );
}
