//! Short chaos runs (see `panal_tests::chaos`): the shop on three hosts, three NATS
//! servers and PostgreSQL, with every link behind a proxy, under a seeded schedule of
//! partitions, pauses, kills, restarts, deploys and rollbacks; afterwards the checker
//! finds every invariant held. A failing seed is replayed with `just chaos MINUTES SEED`.

use std::time::Duration;

use panal_tests::chaos::{run, Settings};

/// Two seeds of 50 s each: together about two minutes of faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shop_keeps_its_invariants_through_faults() {
    for seed in [1, 2] {
        let settings = Settings {
            seed,
            run: Duration::from_secs(50),
            clients: 6,
        };
        let report = run(&settings).await;
        eprintln!("{}", report.table());
        assert!(report.passed(), "seed {seed}:\n{}", report.table());
    }
}
