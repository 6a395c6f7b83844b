//! Instructions per request, which repeat where seconds do not: each system runs under
//! `valgrind --tool=callgrind` with counting off, takes a warm-up, then counts exactly
//! [`REQUESTS`] requests sent one after another on one kept-alive connection (c=1),
//! between `callgrind_control -i on` and a dump. Every thread of the server is counted
//! (workers, the epoch ticker, the log writer); the client is another process and is
//! not. Kernel work (syscalls, page faults) is not counted: a system that trades
//! instructions for syscalls looks cheaper here than it is in seconds.
//!
//! Valgrind gives a process well under 64 GiB of address space, so both systems run
//! with the same smaller pool: 64 instances, 128 MiB reserved per linear memory (the
//! largest `memory_mb`) instead of 4 GiB. Compiled code then checks bounds itself, the
//! same on both. Dumps stay in `.bench/callgrind/` for `callgrind_annotate`.
//!
//! Panal keeps up to 4 MiB of each memory resident between instances and resets it with
//! a `memset`; `wasmtime serve` gives it back to the kernel (`madvise`), which callgrind
//! does not see. A second ratio leaves the reset out of both.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use panal_tests::{client, component, repo, Panal};

use crate::report::Target;
use crate::scenarios::Bench;
use crate::{systems, which};

/// Requests counted per system.
const REQUESTS: u64 = 1000;
/// Requests sent before counting starts.
const WARM_UP: u64 = 100;

/// The same pool on both systems (see the module's header).
const PANAL_POOL: [&str; 4] = ["--max-instances", "64", "--memory-reservation-mb", "128"];
const SERVE_POOL: [&str; 12] = [
    "-O",
    "memory-reservation=134217728",
    "-O",
    "pooling-max-memory-size=134217728",
    "-O",
    "pooling-total-component-instances=64",
    "-O",
    "pooling-total-memories=128",
    "-O",
    "pooling-total-core-instances=1024",
    "-O",
    "pooling-total-tables=512",
];

/// Each scenario: its name, the path Panal serves it at (see [`manifest`]), and the
/// component, path and extra flags `wasmtime serve` gets for it.
const SCENARIOS: [(&str, &str, &str, &str, &[&str]); 3] = [
    ("hello", "/hello", "minimal", "/hello", &[]),
    (
        "hello-reuse",
        "/reuse",
        "minimal",
        "/hello",
        &["--max-instance-reuse-count", "1000"],
    ),
    ("hello-p3", "/p3/x", "hello_p3", "/p3/x", &["-Scli"]),
];

fn manifest() -> String {
    let minimal = component("minimal");
    format!(
        "version = 1\n\
         [components.minimal]\nsource = \"{minimal}\"\nroutes = [\"/hello\"]\n\
         [components.minimal-reuse]\nsource = \"{minimal}\"\nroutes = [\"/reuse\"]\n\
         limits = {{ reuse = 1000 }}\n\
         [components.hello-p3]\nsource = \"{}\"\nroutes = [\"/p3\"]\n",
        component("hello_p3")
    )
}

/// Where dumps go, emptied first.
fn dumps() -> PathBuf {
    let dir = repo().join(".bench/callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create .bench/callgrind");
    dir
}

/// `valgrind --tool=callgrind` writing `dir/name.out*`, counting off until told.
fn callgrind(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}/{name}.out", dir.display()),
        format!("--log-file={}/{name}.log", dir.display()),
    ]
}

/// hello, hello-reuse and hello-p3 on Panal and on `wasmtime serve`, counted.
pub async fn run(b: &mut Bench) {
    if which("valgrind").is_none() || which("callgrind_control").is_none() {
        println!("instructions: valgrind is missing (scripts/bench-tools.sh installs it); skipped");
        return;
    }
    let dir = dumps();
    let data = tempfile::tempdir().expect("tmp");
    // Compile once natively with the same engine settings, so the counted run loads
    // its components from the cache instead of compiling them under valgrind.
    Panal::with(&manifest(), data.path())
        .args(&PANAL_POOL)
        .start()
        .stop();
    let under = callgrind(&dir, "panal");
    let panal = Panal::with(&manifest(), data.path())
        .args(&PANAL_POOL)
        .under(&under)
        .start();
    b.started(&format!(
        "{} panal run {}",
        under.join(" "),
        PANAL_POOL.join(" ")
    ));
    let mut counted = Vec::new();
    for (_, path, ..) in SCENARIOS {
        counted.push(count(panal.pid(), &dir, "panal", &panal.at(path)).await);
    }
    drop(panal);
    for ((scenario, _, wasm, path, extra), (panal_n, panal_reset)) in
        SCENARIOS.into_iter().zip(counted)
    {
        let name = format!("serve-{scenario}");
        let args: Vec<&str> = SERVE_POOL.iter().chain(extra).copied().collect();
        let under = callgrind(&dir, &name);
        let server = systems::wasmtime_serve_under(&under, &b.wasmtime, &component(wasm), &args);
        b.started(&server.command);
        let (serve_n, serve_reset) =
            count(server.pid(), &dir, &name, &format!("{}{path}", server.url)).await;
        b.report.other(
            &format!("{scenario} instructions per request, panal"),
            format!("{panal_n:.0}"),
        );
        b.report.other(
            &format!("{scenario} instructions per request, wasmtime serve"),
            format!("{serve_n:.0}"),
        );
        b.report.ratio(
            format!("{scenario} instructions panal/wasmtime-serve"),
            panal_n / serve_n,
            Some(Target::AtMost(1.0)),
        );
        b.report.ratio(
            format!("{scenario} instructions without memory reset panal/wasmtime-serve"),
            (panal_n - panal_reset) / (serve_n - serve_reset),
            None,
        );
    }
}

/// Instructions per request of the server `pid` (under callgrind, writing `dir/name.out*`)
/// answering `url`: a warm-up, then [`REQUESTS`] counted; and how many of them reset
/// a finished instance's kept-resident memory ([`reset`]).
async fn count(pid: u32, dir: &Path, name: &str, url: &str) -> (f64, f64) {
    let c = client();
    let send = |n: u64| {
        let c = c.clone();
        async move {
            for _ in 0..n {
                let resp = c.get(url).send().await.expect("request");
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                resp.bytes().await.expect("body");
            }
        }
    };
    ready(&c, url).await;
    send(WARM_UP).await;
    control(pid, &["-z"]);
    control(pid, &["-i", "on"]);
    send(REQUESTS).await;
    control(pid, &["-i", "off"]);
    let before = dump_files(dir, name);
    control(pid, &["-d"]);
    let dump = dump_files(dir, name)
        .into_iter()
        .find(|f| !before.contains(f))
        .unwrap_or_else(|| panic!("callgrind wrote no dump for {name} in {}", dir.display()));
    let per = |n: u64| n as f64 / REQUESTS as f64;
    (per(total(&dump)), per(reset(&dump)))
}

/// Instructions spent resetting kept-resident linear memory (wasmtime's
/// `manually_reset_region`: a `memset`, and a copy of the data segments) in `dump`.
/// Valgrind counts each step of a `rep stosb` as an instruction where the CPU runs it
/// as one, so this part is worth far fewer cycles than its count; it is shown apart.
fn reset(dump: &Path) -> u64 {
    let out = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg(dump)
        .output()
        .expect("run callgrind_annotate");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("manually_reset_region"))
        .filter_map(|l| l.split_whitespace().next()?.replace(',', "").parse().ok())
        .max()
        .unwrap_or(0)
}

/// Wait until `url` answers (a server under valgrind starts slowly).
async fn ready(c: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if let Ok(resp) = c.get(url).send().await {
            if resp.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{url} did not answer within 5 minutes under valgrind");
}

/// `callgrind_control ARGS PID`, which must succeed.
fn control(pid: u32, args: &[&str]) {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .expect("run callgrind_control");
    assert!(
        out.status.success(),
        "callgrind_control {args:?} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dump_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.out");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The event total a callgrind dump ends with (`totals: N`, or `summary: N`).
fn total(dump: &Path) -> u64 {
    let text = std::fs::read_to_string(dump).expect("read dump");
    text.lines()
        .rev()
        .find_map(|l| {
            let rest = l
                .strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no totals in {}", dump.display()))
}
