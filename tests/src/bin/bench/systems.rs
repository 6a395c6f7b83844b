//! The systems Panal is compared with, as child processes on loopback: `wasmtime serve`
//! and the `native` hyper servers. Each is killed (by its own PID) when dropped.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server child and the base URL it announced.
pub struct Server {
    child: Child,
    pub url: String,
    /// How it was started, for the report.
    pub command: String,
}

impl Server {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `http://ADDR` in `line`, without a trailing slash.
fn url_in(line: &str) -> Option<String> {
    let at = line.find("http://")?;
    let rest = &line[at..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('/').to_string())
}

fn spawn(mut cmd: Command, announce_on_stderr: bool, command: String) -> Server {
    if announce_on_stderr {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let lines: Box<dyn std::io::Read + Send> = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), _) if !announce_on_stderr => Box::new(out),
        (_, Some(err)) => Box::new(err),
        _ => panic!("no output to read from `{command}`"),
    };
    let mut reader = BufReader::new(lines);
    let mut line = String::new();
    let url = loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{command}` exited before announcing its address");
            }
            Ok(_) => {
                if let Some(url) = url_in(&line) {
                    break url;
                }
            }
        }
    };
    // Keep draining, so a chatty server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Server {
        child,
        url,
        command,
    }
}

/// `wasmtime serve` of `wasm` with its defaults (one fresh instance per request).
pub fn wasmtime_serve(wasmtime: &Path, wasm: &str, extra: &[&str]) -> Server {
    wasmtime_serve_under::<&str>(&[], wasmtime, wasm, extra)
}

/// [`wasmtime_serve`] run under `under` (a program and its arguments, e.g. valgrind).
pub fn wasmtime_serve_under<S: AsRef<str>>(
    under: &[S],
    wasmtime: &Path,
    wasm: &str,
    extra: &[&str],
) -> Server {
    let mut cmd = panal_tests::command_under(under, wasmtime);
    cmd.args(["serve", "--addr", "127.0.0.1:0"])
        .args(extra)
        .arg(wasm);
    let shown = format!(
        "{}wasmtime serve --addr 127.0.0.1:0 {}{wasm}",
        under
            .iter()
            .map(|a| format!("{} ", a.as_ref()))
            .collect::<String>(),
        extra.iter().map(|a| format!("{a} ")).collect::<String>()
    );
    spawn(cmd, true, shown)
}

/// The `native` baseline binary in `mode` (next to this bench binary).
pub fn native(args: &[&str]) -> Server {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("native")))
        .filter(|p| p.is_file())
        .expect("the `native` binary beside `bench` (cargo build --release -p panal-tests)");
    let mut cmd = Command::new(bin);
    cmd.args(args);
    spawn(cmd, false, format!("native {}", args.join(" ")))
}
