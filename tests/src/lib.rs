//! Test harness: starts the real `panal` binary on 127.0.0.1:0 with a manifest written
//! for the test, reads the bound addresses from its first stdout line, keeps its log
//! (stderr) in a file for assertions, and stops it with SIGTERM.
//!
//! The binary is the workspace's `target/<profile>/panal` (built by `just test` before
//! `cargo test`), the fixture components come from `components/target/wasm32-wasip2`.

pub mod chaos;
pub mod cluster;
pub mod fixtures;
mod jwt;
pub mod load;
pub mod nats;
pub mod otlp;
pub mod postgres;
pub mod proxy;
pub mod shop;
pub mod tls;

pub use jwt::{base64_url, sign_hs256};
pub use nats::{NatsCluster, NatsServer};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `panal` binary next to this test binary's profile folder.
pub fn panal_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> (tests) or target/<profile>/<bin> (bench)
    let mut profile = exe.parent().expect("binary has a folder");
    if profile.ends_with("deps") {
        profile = profile.parent().expect("deps has a parent");
    }
    let bin = profile.join("panal");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build --release -p panal`, or `just test`)",
        bin.display()
    );
    bin
}

/// A fixture or service component built by `just components`.
pub fn component(name: &str) -> String {
    let path = repo().join(format!(
        "components/target/wasm32-wasip2/release/{name}.wasm"
    ));
    assert!(
        path.is_file(),
        "{} is missing: build the components first (`just components`)",
        path.display()
    );
    path.display().to_string()
}

/// A component in another language built by `scripts/guests.sh` (`just components`).
pub fn guest(name: &str) -> String {
    let path = repo().join(format!("components/target/guests/{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the components first (`just components`)",
        path.display()
    );
    path.display().to_string()
}

/// `bytes` with a custom section appended: the same behaviour, another sha256.
pub fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"panal-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// The version `x-panal-version` reports for `bytes`: its sha256 prefix.
pub fn sha_prefix(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_string()
}

/// What `panal run` with `manifest` (TOML text) and `args` printed on stderr when it
/// refused to start; panics if it started instead (or was still running after 60 s).
pub fn refused(manifest: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest_path = dir.path().join("panal.toml");
    std::fs::write(&manifest_path, manifest).expect("write manifest");
    let log = dir.path().join("stderr");
    let mut child = Command::new(panal_bin())
        .arg("run")
        .arg("--manifest")
        .arg(&manifest_path)
        .args(["--listen", "127.0.0.1:0"])
        .args(if args.contains(&"--admin-listen") {
            &[][..]
        } else {
            &["--admin-listen", "127.0.0.1:0"]
        })
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env("PANAL_CLUSTER_KEY", CLUSTER_KEY)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn panal");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "panal was still running after 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "panal should have refused to start: {stderr}"
    );
    stderr
}

/// `program`, or `program` run under `under` (a wrapper and its arguments: valgrind).
pub fn command_under<S: AsRef<str>>(under: &[S], program: impl AsRef<std::ffi::OsStr>) -> Command {
    let Some((wrapper, rest)) = under.split_first() else {
        return Command::new(program);
    };
    let mut cmd = Command::new(wrapper.as_ref());
    cmd.args(rest.iter().map(AsRef::as_ref)).arg(program);
    cmd
}

/// The cluster key every host the harness starts has (`PANAL_CLUSTER_KEY`), unless
/// the test gives another.
pub const CLUSTER_KEY: &str = "test-cluster-key-0123456789abcdef-0123456789";

/// A running `panal run`.
pub struct Panal {
    child: Child,
    /// Base URL of the gateway, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Base URL of the admin listener.
    pub admin: String,
    log: PathBuf,
    /// Owns the manifest folder; storage lives in `data_dir`, which the test owns.
    _dir: tempfile::TempDir,
}

/// A test host to start: its manifest, its storage, extra environment and `panal run`
/// flags ([`Panal::with`], [`Panal::with_file`]); kept, it starts the same host again.
#[derive(Clone)]
pub struct Start {
    manifest: Result<String, PathBuf>,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    under: Vec<String>, // a wrapper `panal` runs under (e.g. valgrind), if any
}

impl Start {
    /// Run `panal` under `command` (its program and arguments, `panal run …` after).
    #[must_use]
    pub fn under<S: AsRef<str>>(mut self, command: &[S]) -> Self {
        self.under = command.iter().map(|a| a.as_ref().to_string()).collect();
        self
    }

    /// With these environment variables too.
    #[must_use]
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        let owned = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        self.env.extend(owned);
        self
    }

    /// With these `panal run` flags too.
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Start it; returns once it listens (panics with its log if it does not).
    pub fn start(self) -> Panal {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest_path = match self.manifest {
            Ok(text) => {
                let path = dir.path().join("panal.toml");
                std::fs::write(&path, text).expect("write manifest");
                path
            }
            Err(path) => path,
        };
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let under = command_under(&self.under, panal_bin());
        Panal::start_in(dir, &manifest_path, &self.data_dir, under, &env, &args)
    }
}

impl Panal {
    /// Start panal with `manifest` (TOML text) and storage in `data_dir`.
    pub fn start(manifest: &str, data_dir: &Path) -> Self {
        Self::with(manifest, data_dir).start()
    }

    /// A host with `manifest` (TOML text) and storage in `data_dir`, to give more
    /// environment or flags before [`Start::start`].
    pub fn with(manifest: &str, data_dir: &Path) -> Start {
        Start {
            manifest: Ok(manifest.to_string()),
            data_dir: data_dir.to_path_buf(),
            env: Vec::new(),
            args: Vec::new(),
            under: Vec::new(),
        }
    }

    /// A host with the manifest file at `path` (e.g. the repository's own
    /// `panal.toml`) and storage in `data_dir`.
    pub fn with_file(path: &Path, data_dir: &Path) -> Start {
        Start {
            manifest: Err(path.to_path_buf()),
            ..Self::with("", data_dir)
        }
    }

    /// `cmd` (`panal` or its wrapper) as `panal run` of `manifest_path`, plus `env`, `args`.
    fn start_in(
        dir: tempfile::TempDir,
        manifest_path: &Path,
        data_dir: &Path,
        mut cmd: Command,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let log = dir.path().join("panal.log");
        let mut child = cmd
            .arg("run")
            .arg("--manifest")
            .arg(manifest_path)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("PANAL_CLUSTER_KEY", CLUSTER_KEY)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn panal");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        if read.is_err() || !line.starts_with("panal listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "panal did not start: {line:?}\n--- log ---\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        // "panal listening on http://A (admin http://B)"
        let mut urls = line
            .split_whitespace()
            .map(|w| w.trim_end_matches(')'))
            .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
            .map(str::to_string);
        let url = urls.next().expect("public url");
        let admin = urls.next().expect("admin url");
        Self {
            child,
            url,
            admin,
            log,
            _dir: dir,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Instances of component `name` created so far, all versions
    /// (`panal_instances_created_total`).
    pub async fn instances_created(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        let prefix = format!("panal_instances_created_total{{component=\"{name}\"");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The admin listener's `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Give `account` the role `role` through the admin API, as an operator does.
    pub async fn grant(&self, account: &str, role: &str) {
        let resp = client()
            .put(format!("{}/roles/{account}/{role}", self.admin))
            .send()
            .await
            .expect("grant");
        assert!(resp.status().is_success(), "grant: {}", resp.status());
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Send SIGTERM and wait for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "panal exited with {status}\n{}",
                    self.log()
                );
                return self.log();
            }
            assert!(
                Instant::now() < deadline,
                "panal did not stop\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Panal {
    /// Its process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no clean-up at all (what a crashed machine looks like to the others).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Panal {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request written by hand on a fresh connection to the gateway, so no
/// client library tidies the path or the framing: `METHOD PATH` with `headers` (lines
/// without CRLF), then `body` as given. Returns the raw answer, read to its end; the
/// host may answer and close before the body is all sent, which is not an error here.
pub async fn raw_http(
    panal: &Panal,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = panal.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("request head");
    let _ = s.write_all(body).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// An HTTP client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Make sure the server has seen everything `client` sent before (its subscriptions in
/// particular): a request on the same connection gets its answer only afterwards.
pub async fn synced(client: &async_nats::Client) {
    // Nobody answers this subject: the "no responders" status is the round trip.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("_panal.sync", "".into()),
    )
    .await;
}

/// Poll `check` until it returns `Some` or `within` passes (for effects that arrive
/// asynchronously, such as a delivered message).
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET `url` and read its JSON body (panics with the url on failure).
pub async fn get_json(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    let url = url.into_url().expect("url");
    c.get(url.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}
