//! `just chaos [MINUTES] [SEED]`: one chaos run over the shop on a three-host cluster
//! (see `panal_tests::chaos`), faults injected for MINUTES (default 30) from SEED
//! (default: the clock's, printed so the run can be replayed), then the summary table.
//! Exits 1 when an invariant was violated, 2 on bad arguments.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let minutes: f64 = match args.first().map(|m| m.parse()) {
        None => 30.0,
        Some(Ok(m)) if m > 0.0 && m <= 24.0 * 60.0 => m,
        Some(_) => usage("MINUTES must be a number of minutes, more than 0 and at most a day"),
    };
    let seed: u64 = match args.get(1).map(|s| s.parse()) {
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        Some(Ok(s)) => s,
        Some(Err(_)) => usage("SEED must be a whole number"),
    };
    if args.len() > 2 {
        usage("at most two arguments");
    }
    let settings = panal_tests::chaos::Settings {
        seed,
        run: Duration::from_secs_f64(minutes * 60.0),
        clients: 8,
        mix: panal_tests::chaos::nemesis::Mix::ALL,
        order: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // On Ctrl-C or SIGTERM the run is dropped, and with it every process it started.
    let report = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            report = panal_tests::chaos::run(&settings) => Some(report),
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
        }
    });
    let Some(report) = report else {
        eprintln!("chaos: interrupted; every process it started is stopped");
        std::process::exit(130);
    };
    println!("{}", report.table());
    if !report.passed() {
        eprintln!("chaos: invariants violated; replay with `just chaos {minutes} {seed}`");
        std::process::exit(1);
    }
}

fn usage(why: &str) -> ! {
    eprintln!("chaos: {why}\nusage: chaos [MINUTES] [SEED]");
    std::process::exit(2);
}
