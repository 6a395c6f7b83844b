//! NATS servers of the test's own: one [`NatsServer`] on a free loopback port, or a
//! [`NatsCluster`] of three with JetStream, each with its own store, stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A `nats-server` of the test's own on a free loopback port, stopped on drop.
pub struct NatsServer {
    child: Option<Child>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Start one (with JetStream and its own store dir); panics if `nats-server` is
    /// missing (`scripts/setup.sh` installs it).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Start one on `port` with a fresh store.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, "")
    }

    /// Start one on `port` with a fresh store and `config` (nats-server configuration
    /// text, e.g. `max_payload: 65536`) besides the usual flags.
    pub fn start_with(port: u16, config: &str) -> Self {
        let store = tempfile::tempdir().expect("tmp");
        std::fs::write(store.path().join("extra.conf"), config).expect("write config");
        let child = spawn_nats(port, store.path());
        Self {
            child: Some(child),
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
        }
    }

    /// Stop it (its store stays for [`NatsServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port with the same store (streams and consumers kept).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn_nats(self.port, self.store.path()));
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn spawn_nats(port: u16, store: &Path) -> Child {
    let mut cmd = Command::new(nats_bin());
    let extra = store.join("extra.conf");
    if extra.is_file() {
        cmd.arg("-c").arg(&extra);
    }
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store);
    launch(cmd, port)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three `nats-server`s in one JetStream cluster on loopback, each with its own store.
pub struct NatsCluster {
    nodes: Vec<Node>,
}

struct Node {
    child: Option<Child>,
    port: u16,
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start three servers routed to each other and wait until JetStream can place a
    /// stream with three replicas.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// As [`NatsCluster::start`], with `extra` configuration text on every server.
    pub async fn start_with(extra: &str) -> Self {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tmp");
            let routes: Vec<String> = ports
                .iter()
                .filter(|(p, _)| p != port)
                .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let conf = dir.path().join("node.conf");
            let text = format!(
                "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{port}\"\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: \"panal\", listen: \"127.0.0.1:{cluster_port}\", routes: [{}] }}\n{extra}\n",
                dir.path().join("js").display(),
                routes.join(", ")
            );
            std::fs::write(&conf, text).expect("write config");
            nodes.push(Node {
                child: None,
                port: *port,
                conf,
                _dir: dir,
            });
        }
        let mut cluster = Self { nodes };
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.ready().await;
        cluster
    }

    /// `nats://127.0.0.1:PORT` of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every server's url, comma-separated (what a client given the whole cluster gets).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stop server `i` (SIGKILL; its store stays for [`NatsCluster::restart`]).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start server `i` again with its store.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        let node = &mut self.nodes[i];
        node.child = Some(spawn_conf(&node.conf, node.port));
    }

    /// Wait until the cluster's JetStream takes a stream of three replicas.
    pub async fn ready(&self) {
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
        jetstream_ready(&urls).await;
    }
}

/// Wait (up to a minute) until the JetStream cluster of the servers at `urls` takes a
/// stream of three replicas.
pub async fn jetstream_ready(urls: &[String]) {
    let servers: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().expect("server address"))
        .collect();
    let client = async_nats::connect(servers).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let made = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "panal_ready".into(),
                subjects: vec!["_panal.ready".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        if made.is_ok() && js.delete_stream("panal_ready").await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the NATS cluster did not form: {:?}",
            made.err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

/// The `nats-server` to run: `PANAL_NATS_SERVER`, else the one `scripts/setup.sh`
/// installs (2.10 or newer) in `~/.local/bin`, else the machine's.
fn nats_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("PANAL_NATS_SERVER") {
        return bin.into();
    }
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/bin/nats-server"));
    home.into_iter()
        .chain(["/usr/sbin/nats-server", "/usr/bin/nats-server"].map(Into::into))
        .find(|b| b.exists())
        .unwrap_or_else(|| "nats-server".into())
}

/// A `nats-server` with configuration file `conf`, once it takes connections on `port`.
pub(crate) fn spawn_conf(conf: &Path, port: u16) -> Child {
    let mut cmd = Command::new(nats_bin());
    cmd.arg("-c").arg(conf);
    launch(cmd, port)
}

/// Start `cmd` (a nats-server), quietly, and wait until it takes connections on `port`.
fn launch(mut cmd: Command, port: u16) -> Child {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server (install it with scripts/setup.sh)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
