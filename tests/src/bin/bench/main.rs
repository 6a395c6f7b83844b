//! `just bench`: Panal side by side with what a user would pick instead, on loopback,
//! one system after another under the same `wrk` settings, reported as ratios (absolute
//! numbers on shared machines are noise). See BENCHMARKS.md for the scenarios.
//!
//! Environment: `BENCH_SECS` (per load run, default 5), `BENCH_CONNS` (default
//! `1,16,64`), `PANAL_WASMTIME` (a `wasmtime` binary; default `.bench/tools/bin/wasmtime`,
//! which `scripts/bench-tools.sh` installs; only the `local` section needs it),
//! `BENCH_ONLY` (comma-separated sections: local, instructions, chain, messaging,
//! shop, cluster, startup, swap).
//!
//! Writes the generated part of BENCHMARKS.md and `docs/benchmarks.png`.

mod chain;
mod chart;
mod cluster;
mod instructions;
mod load;
mod nats;
mod report;
mod scenarios;
mod startup;
mod swap;
mod systems;

use std::path::PathBuf;

use panal_tests::repo;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let kb: f64 = t.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0 / 1024.0)
        })
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}; every process (load tool included) on the same cores")
}

#[tokio::main]
async fn main() {
    let secs: u64 = env_or("BENCH_SECS", "5")
        .parse()
        .expect("BENCH_SECS: a number");
    let conns: Vec<usize> = env_or("BENCH_CONNS", "1,16,64")
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("BENCH_CONNS: numbers, comma-separated")
        })
        .collect();
    let only = env_or(
        "BENCH_ONLY",
        "local,instructions,chain,messaging,shop,cluster,startup,swap",
    );
    let run = |s: &str| only.split(',').any(|o| o.trim() == s);
    let wasmtime = std::env::var_os("PANAL_WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".bench/tools/bin/wasmtime"));
    assert!(
        !(run("local") || run("instructions")) || wasmtime.is_file(),
        "{} is missing: run scripts/bench-tools.sh (or `just bench`)",
        wasmtime.display()
    );
    let wrk = which("wrk").expect("wrk is missing: run scripts/bench-tools.sh (or `just bench`)");
    let mut b = scenarios::Bench {
        wrk: load::Wrk::new(wrk, secs),
        report: report::Report::default(),
        conns: conns.clone(),
        wasmtime,
    };
    if run("local") {
        scenarios::local(&mut b);
    }
    if run("instructions") {
        println!("instructions: per request at c=1, under callgrind");
        instructions::run(&mut b).await;
    }
    if run("chain") {
        chain::run(&mut b);
    }
    if run("messaging") {
        scenarios::messaging(&mut b).await;
    }
    if run("shop") {
        scenarios::shop(&mut b).await;
    }
    if run("cluster") {
        cluster::calls(&mut b);
        cluster::keyvalue(&mut b).await;
        cluster::shop(&mut b).await;
    }
    if run("startup") {
        println!("startup: panal run of the shop to its first 200");
        scenarios::startup(&mut b);
    }
    if run("swap") {
        println!("swap: deploy latency and p99 during a swap storm");
        swap::run(&mut b.report).await;
    }

    let mut report = b.report;
    report.commands.extend(b.wrk.commands);
    report.print_table();
    let chart = repo().join("docs/benchmarks.png");
    let _ = std::fs::create_dir_all(repo().join("docs"));
    if let Err(e) = chart::render(&report.rows, &chart) {
        eprintln!("cannot draw {}: {e:#}", chart.display());
    }
    let wasmtime_version = std::process::Command::new(&b.wasmtime)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "wasmtime (not run)".into());
    let settings = format!(
        "wrk 1 thread, {secs} s per run after a 1 s warm-up, connections {conns:?}; \
         a fresh instance per request except in the `-reuse` scenarios; {wasmtime_version} \
         (Panal's own wasmtime version)"
    );
    let md = report.markdown(&machine(), &settings, "docs/benchmarks.png");
    let path = repo().join("BENCHMARKS.md");
    match report::splice(&path, &md) {
        Ok(()) => println!("\nwrote {} and {}", path.display(), chart.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}
