//! The processes a chaos run breaks: three `nats-server`s in one JetStream cluster
//! (`sync_interval: always`, so an acknowledged write is on disk), PostgreSQL, and
//! three `panal` hosts, every link between them through a [`Proxy`] of the harness:
//! host → each NATS server, host → PostgreSQL, and NATS server → NATS server (each
//! server dials each other one through its own proxy and advertises an address where
//! nobody listens, so no route goes around them). Clients reach the gateways directly.
//! Nothing leaves loopback.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, RwLock};

use super::disk::Disk;
use crate::postgres::Postgres;
use crate::proxy::{Proxy, Way};
use crate::shop::SECRET;
use crate::{free_port, Panal, Start};

/// How many hosts and NATS servers.
pub const HOSTS: usize = 3;

/// The components each host runs: order and product on two hosts each, so a call
/// often crosses hosts, and every gateway can take every request.
pub const COMPONENTS: [&str; HOSTS] = [
    "user,order,payment,notification,shipping",
    "user,product,order,payment",
    "user,product,notification,payment",
];

/// A process the nemesis can pause, kill and restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// A `panal` host.
    Host(usize),
    /// A `nats-server`.
    Nats(usize),
}

/// How a link breaks: closed (a dead peer, RST/FIN), or bytes dropped one way or both
/// with the connection left open (a partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Every connection closed, new ones refused.
    Cut,
    /// Bytes going this way stop (held until healed).
    Drop(Way),
}

/// The gateways' base URLs, host by host (a restarted host listens on a new port).
pub type Gateways = Arc<RwLock<Vec<String>>>;

struct Node {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

struct Host {
    start: Start,
    panal: Option<Panal>,
    data: Disk,
    /// The logs of its processes killed before the one running now.
    earlier: String,
}

/// Everything of one run; dropping it stops every process.
pub struct World {
    nodes: Vec<Node>,
    /// `routes[i][j]`: server `i` dialing server `j`.
    routes: Vec<Vec<Option<Proxy>>>,
    /// `links[h][n]`: host `h` to NATS server `n`.
    links: Vec<Vec<Proxy>>,
    /// Host `h` to PostgreSQL.
    pg_links: Vec<Proxy>,
    hosts: Vec<Host>,
    gateways: Gateways,
    /// The shared database, reached directly (the checker's way in).
    pub db_url: String,
    /// The PostgreSQL server.
    pub pg: Postgres,
}

impl World {
    /// Start it all with `manifest` on every host; returns once every host serves.
    pub async fn start(manifest: &str) -> Self {
        let pg = tokio::task::spawn_blocking(Postgres::start_own)
            .await
            .expect("start PostgreSQL");
        let db = "panal_chaos";
        let db_url = pg.database(db).await;
        let (nodes, routes) = nats_cluster().await;
        let mut links = Vec::new();
        let mut pg_links = Vec::new();
        for _ in 0..HOSTS {
            let mut mine = Vec::new();
            for node in &nodes {
                mine.push(Proxy::start(([127, 0, 0, 1], node.port).into()).await);
            }
            links.push(mine);
            pg_links.push(Proxy::start(pg.addr()).await);
        }
        let mut hosts = Vec::new();
        for (h, components) in COMPONENTS.iter().enumerate() {
            let data = Disk::new();
            let urls: Vec<String> = links[h]
                .iter()
                .map(|p| format!("nats://{}", p.addr))
                .collect();
            let urls = urls.join(",");
            let storage = pg.url_via(pg_links[h].addr, db);
            let start = Panal::with(manifest, data.path())
                .env(&[("PANAL_TEST_JWT_SECRET", SECRET)])
                .args(&["--cluster", &urls, "--nats", &urls])
                .args(&["--storage-url", &storage, "--replicas", "3"])
                .args(&["--components", components, "--insecure-cluster"]);
            hosts.push(Host {
                start,
                panal: None,
                data,
                earlier: String::new(),
            });
        }
        let mut world = Self {
            nodes,
            routes,
            links,
            pg_links,
            hosts,
            gateways: Arc::new(RwLock::new(vec![String::new(); HOSTS])),
            db_url,
            pg,
        };
        // One after the other: started at once, their first JetStream requests (streams,
        // buckets) time out on a cluster that has just formed, and a host gives up.
        for h in 0..HOSTS {
            world.restart(Proc::Host(h)).await;
        }
        world
    }

    /// The gateways, kept current across restarts.
    pub fn gateways(&self) -> Gateways {
        self.gateways.clone()
    }

    /// Host `h`'s admin base URL, unless it is down.
    pub fn admin(&self, h: usize) -> Option<String> {
        self.hosts[h].panal.as_ref().map(|p| p.admin.clone())
    }

    /// Host `h`, unless it is down.
    pub fn host(&self, h: usize) -> Option<&Panal> {
        self.hosts[h].panal.as_ref()
    }

    /// Break every link of host `h` to the NATS servers (`Drop(Up)`: what it sends).
    pub fn host_off_nats(&self, h: usize, how: Break) {
        for proxy in &self.links[h] {
            apply(proxy, how);
        }
    }

    /// Break host `h`'s link to PostgreSQL.
    pub fn host_off_pg(&self, h: usize, how: Break) {
        apply(&self.pg_links[h], how);
    }

    /// Break NATS server `n`'s routes to the other two (`Drop(Up)`: what `n` sends);
    /// its clients stay connected to it, on the minority side.
    pub fn nats_isolated(&self, n: usize, how: Break) {
        for (i, row) in self.routes.iter().enumerate() {
            for (j, proxy) in row.iter().enumerate() {
                let Some(proxy) = proxy else { continue };
                if i == n {
                    apply(proxy, how);
                } else if j == n {
                    apply(proxy, flip(how));
                }
            }
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        let routes = self.routes.iter().flatten().flatten();
        let links = self.links.iter().flatten();
        for proxy in routes.chain(links).chain(&self.pg_links) {
            proxy.heal();
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT `p`.
    pub fn signal(&self, p: Proc, stop: bool) {
        let pid = match p {
            Proc::Host(h) => self.hosts[h].panal.as_ref().map(Panal::pid),
            Proc::Nats(n) => self.nodes[n].child.as_ref().map(Child::id),
        };
        if let Some(pid) = pid {
            let sig = if stop { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// SIGKILL `p`; it stays down until [`World::restart`].
    pub fn kill(&mut self, p: Proc) {
        match p {
            Proc::Host(h) => {
                if let Some(panal) = self.hosts[h].panal.take() {
                    let host = &mut self.hosts[h];
                    host.earlier.push_str(&panal.log());
                    host.earlier.push_str("--- killed; restarted ---\n");
                    panal.kill();
                }
            }
            Proc::Nats(n) => {
                if let Some(mut child) = self.nodes[n].child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    /// Start `p` again (killed first if it runs), with its data as the kill left it.
    pub async fn restart(&mut self, p: Proc) {
        self.kill(p);
        match p {
            Proc::Host(h) => {
                let start = self.hosts[h].start.clone();
                let panal = tokio::task::spawn_blocking(move || start.start())
                    .await
                    .expect("start a host");
                self.gateways.write().expect("gateways")[h] = panal.url.clone();
                self.hosts[h].panal = Some(panal);
            }
            Proc::Nats(n) => {
                let node = &mut self.nodes[n];
                let (conf, port) = (node.conf.clone(), node.port);
                let child =
                    tokio::task::spawn_blocking(move || crate::nats::spawn_conf(&conf, port))
                        .await
                        .expect("start nats-server");
                node.child = Some(child);
            }
        }
    }

    /// Fill host `h`'s data dir to the last byte; false when it has no disk of its own.
    pub fn fill_disk(&self, h: usize) -> bool {
        self.hosts[h].data.fill()
    }

    /// Room again on host `h`'s disk.
    pub fn free_disk(&self, h: usize) {
        self.hosts[h].data.free();
    }

    /// Restart PostgreSQL as a crash would (every connection dropped mid-write).
    pub async fn restart_pg(&self) {
        tokio::task::block_in_place(|| self.pg.restart());
    }

    /// The last `lines` lines of each host's and NATS server's log that mention errors
    /// or warnings, for a report.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for (h, host) in self.hosts.iter().enumerate() {
            let Some(panal) = &host.panal else { continue };
            tail(
                &mut out,
                &format!("host {h}"),
                &panal.log(),
                &["ERROR", "WARN"],
                lines,
            );
        }
        for (n, node) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(node.conf.with_file_name("nats.log"));
            let log = log.unwrap_or_default();
            tail(
                &mut out,
                &format!("NATS server {n}"),
                &log,
                &["[ERR]", "[WRN]"],
                lines,
            );
        }
        out
    }
}

impl World {
    /// Writes every host's and NATS server's whole log into `dir` (`host-H.log`,
    /// `nats-N.log`), for a person to read after a failed run.
    pub fn keep_logs(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (h, host) in self.hosts.iter().enumerate() {
            let now = host.panal.as_ref().map(Panal::log).unwrap_or_default();
            std::fs::write(
                dir.join(format!("host-{h}.log")),
                host.earlier.clone() + &now,
            )?;
        }
        for (n, node) in self.nodes.iter().enumerate() {
            std::fs::copy(
                node.conf.with_file_name("nats.log"),
                dir.join(format!("nats-{n}.log")),
            )?;
        }
        Ok(())
    }
}

/// The last `lines` lines of `log` with any of `marks`, under a heading `who`.
fn tail(out: &mut String, who: &str, log: &str, marks: &[&str], lines: usize) {
    let picked: Vec<&str> = log
        .lines()
        .filter(|l| marks.iter().any(|m| l.contains(m)))
        .collect();
    out.push_str(&format!("--- {who} ---\n"));
    for line in &picked[picked.len().saturating_sub(lines)..] {
        out.push_str(line);
        out.push('\n');
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for h in 0..HOSTS {
            self.signal(Proc::Host(h), false);
            self.kill(Proc::Host(h));
        }
        for n in 0..self.nodes.len() {
            self.signal(Proc::Nats(n), false);
            self.kill(Proc::Nats(n));
        }
    }
}

fn apply(proxy: &Proxy, how: Break) {
    match how {
        Break::Cut => proxy.cut(),
        Break::Drop(way) => proxy.blackhole(way),
    }
}

/// The same break seen from the other end of a link.
fn flip(how: Break) -> Break {
    match how {
        Break::Drop(Way::Up) => Break::Drop(Way::Down),
        Break::Drop(Way::Down) => Break::Drop(Way::Up),
        other => other,
    }
}

type Routes = Vec<Vec<Option<Proxy>>>;

/// Three servers whose routes all pass through proxies, once JetStream takes R3.
async fn nats_cluster() -> (Vec<Node>, Routes) {
    let ports: Vec<(u16, u16)> = (0..HOSTS).map(|_| (free_port(), free_port())).collect();
    let mut routes: Routes = Vec::new();
    for i in 0..HOSTS {
        let mut row = Vec::new();
        for (j, (_, cluster)) in ports.iter().enumerate() {
            row.push(if i == j {
                None
            } else {
                Some(Proxy::start(([127, 0, 0, 1], *cluster).into()).await)
            });
        }
        routes.push(row);
    }
    let mut nodes = Vec::new();
    for (i, (port, cluster)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tmp");
        let dials: Vec<String> = routes[i]
            .iter()
            .flatten()
            .map(|p| format!("\"nats-route://{}\"", p.addr))
            .collect();
        // Port 1 takes no connection: a route learnt by gossip fails once and is not
        // tried again (connect_retries 0), so every route is one of the proxied ones.
        let conf = dir.path().join("node.conf");
        let text = format!(
            "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{port}\"\nlog_file: \"{}\"\n\
             jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
             cluster {{ name: \"chaos\", listen: \"127.0.0.1:{cluster}\", \
             advertise: \"127.0.0.1:1\", no_advertise: true, routes: [{}] }}\n",
            dir.path().join("nats.log").display(),
            dir.path().join("js").display(),
            dials.join(", ")
        );
        std::fs::write(&conf, text).expect("write config");
        let child = crate::nats::spawn_conf(&conf, *port);
        nodes.push(Node {
            child: Some(child),
            port: *port,
            conf,
            _dir: dir,
        });
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
        .collect();
    crate::nats::jetstream_ready(&urls).await;
    (nodes, routes)
}
