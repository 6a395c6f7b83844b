//! The load tool: `wrk` on loopback, one thread, the same settings for every system,
//! summarised by a Lua `done` hook as one JSON line (requests, latency percentiles,
//! errors), so no text scraping.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One load run's result.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors, timeouts and answers of 400 or more.
    pub errors: u64,
}

/// What to send.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a str>,
    /// Lua run before each request is built (a `request` function, for varying ones).
    pub lua: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn get(url: &'a str) -> Self {
        Self {
            method: "GET",
            url,
            headers: &[],
            body: None,
            lua: None,
        }
    }
}

const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"#;

fn lua_string(s: &str) -> String {
    // %q-style escaping is enough: the bench builds these strings itself.
    format!("{s:?}")
}

/// Runs wrk from a fixed location, keeping the command lines it ran for the report.
pub struct Wrk {
    bin: PathBuf,
    scripts: tempfile::TempDir,
    pub secs: u64,
    pub commands: Vec<String>,
}

impl Wrk {
    pub fn new(bin: PathBuf, secs: u64) -> Self {
        Self {
            bin,
            scripts: tempfile::tempdir().expect("tmp"),
            secs,
            commands: Vec::new(),
        }
    }

    fn script(&self, name: &str, req: &Request<'_>) -> PathBuf {
        let mut lua = format!("wrk.method = {}\n", lua_string(req.method));
        for (k, v) in req.headers {
            lua += &format!("wrk.headers[{}] = {}\n", lua_string(k), lua_string(v));
        }
        if let Some(body) = req.body {
            lua += &format!("wrk.body = {}\n", lua_string(body));
        }
        if let Some(extra) = req.lua {
            lua += extra;
        }
        lua += DONE;
        let path = self.scripts.path().join(format!("{name}.lua"));
        std::fs::write(&path, lua).expect("write wrk script");
        path
    }

    /// `conns` connections for `secs` seconds (after a 1 s warm-up at the same load).
    pub fn run(&mut self, name: &str, req: &Request<'_>, conns: usize) -> Sample {
        let script = self.script(name, req);
        let _ = self.wrk(&script, req.url, conns, 1);
        let sample = self.wrk(&script, req.url, conns, self.secs);
        self.commands.push(format!(
            "wrk -t1 -c{conns} -d{}s --latency --timeout 10s -s {name}.lua {}",
            self.secs, req.url
        ));
        sample
    }

    fn wrk(&self, script: &Path, url: &str, conns: usize, secs: u64) -> Sample {
        let out = Command::new(&self.bin)
            .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s")])
            .args(["--latency", "--timeout", "10s", "-s"])
            .arg(script)
            .arg(url)
            .output()
            .expect("run wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        let json = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("wrk printed no summary for {url}:\n{text}"));
        let v: Value = serde_json::from_str(json).expect("wrk summary is JSON");
        let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Sample {
            rps: n("requests") / (n("duration_us") / 1e6).max(1e-9),
            p50_us: n("p50_us"),
            p99_us: n("p99_us"),
            errors: n("errors") as u64,
        }
    }
}
