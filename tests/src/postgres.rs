//! A PostgreSQL for the tests: the one `PANAL_TEST_POSTGRES_URL` names, or a server of
//! the test's own (`initdb` + `pg_ctl` in a temp dir, on a free loopback port, trust
//! auth), stopped when dropped. Each test takes a fresh database ([`Postgres::database`])
//! and drops it at the end, so runs never see each other's rows.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL.
pub struct Postgres {
    /// `postgres://user@host:port` without a database.
    base: String,
    own: Option<Own>,
}

struct Own {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The folder of `initdb` and `pg_ctl`: on PATH, else Debian's newest version.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").is_file());
    versions.sort();
    versions.pop().expect(
        "no PostgreSQL server binaries (initdb): run scripts/setup.sh, or set \
         PANAL_TEST_POSTGRES_URL",
    )
}

/// Run `program` with `args`, as the `postgres` user when this process is root
/// (PostgreSQL refuses to run as root).
fn run(program: &Path, args: &[&str], as_postgres: bool) {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// The configured server, or a fresh one of this test's own.
    pub fn start() -> Self {
        if let Some(url) = std::env::var("PANAL_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            let base = url.trim_end_matches('/').to_string();
            let base = match base.rsplit_once('/') {
                Some((head, _db)) if head.contains("://") && head.len() > "postgres://".len() => {
                    head.to_string()
                }
                _ => base,
            };
            return Self { base, own: None };
        }
        Self::own(None)
    }

    /// A server of this test's own, whatever `PANAL_TEST_POSTGRES_URL` says (for a
    /// test that restarts it).
    pub fn start_own() -> Self {
        Self::own(None)
    }

    /// Restart a server of this test's own as a crash would (`pg_ctl restart -m
    /// immediate`: no checkpoint, every connection dropped, recovery from the WAL);
    /// returns once it takes connections again.
    pub fn restart(&self) {
        let own = self
            .own
            .as_ref()
            .expect("only a server of the test's own restarts");
        let data = own.data.display().to_string();
        // Its output to the log again: on a pipe it would keep `run` waiting forever.
        let log = own.data.with_file_name("log").display().to_string();
        run(
            &own.bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-m", "immediate", "-w", "restart"],
            own.as_postgres,
        );
    }

    /// The host and port it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        let hostport = self.base.rsplit('@').next().unwrap_or(&self.base);
        let hostport = hostport.trim_start_matches("postgres://");
        hostport.parse().expect("a 127.0.0.1:PORT address")
    }

    /// `postgres://user@ADDR/name`: database `name` reached at `addr` (a proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr, name: &str) -> String {
        let user = self.base.trim_start_matches("postgres://");
        let user = user.split('@').next().unwrap_or("postgres");
        format!("postgres://{user}@{addr}/{name}")
    }

    /// A server of this test's own that also takes TLS connections, with the server
    /// certificate and key of `certs` (its `ca.pem` verifies it).
    pub fn start_tls(certs: &crate::tls::Certs) -> Self {
        Self::own(Some(certs))
    }

    fn own(certs: Option<&crate::tls::Certs>) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if as_postgres {
            let chown = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(chown.success(), "cannot hand the temp dir to postgres");
        }
        let data = dir.path().join("data");
        let port = crate::free_port();
        let data_s = data.display().to_string();
        run(
            &bin.join("initdb"),
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
            as_postgres,
        );
        let mut opts = format!(
            "-p {port} -h 127.0.0.1 -k {} -F -c fsync=off",
            dir.path().display()
        );
        if let Some(certs) = certs {
            opts.push_str(&tls_options(certs, dir.path(), as_postgres));
        }
        let log = dir.path().join("log").display().to_string();
        run(
            &bin.join("pg_ctl"),
            &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
            as_postgres,
        );
        Self {
            base: format!("postgres://postgres@127.0.0.1:{port}"),
            own: Some(Own {
                bin,
                data,
                as_postgres,
                _dir: dir,
            }),
        }
    }

    /// The URL of a new, empty database `name` (dropped first if a crashed run left it).
    pub async fn database(&self, name: &str) -> String {
        let admin = format!("{}/postgres", self.base);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("connect to PostgreSQL");
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql).execute(&mut conn).await.expect(&sql);
        }
        format!("{}/{name}", self.base)
    }

    /// Drop database `name` (its connections closed first).
    pub async fn drop_database(&self, name: &str) {
        let admin = format!("{}/postgres", self.base);
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::query(&sql).execute(&mut conn).await;
        }
    }
}

/// `-c ssl=on` and the certificate options, the pair copied into `dir` where the
/// server may read the key (its own, mode 0600, as PostgreSQL demands).
fn tls_options(certs: &crate::tls::Certs, dir: &Path, as_postgres: bool) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(certs.path("server.pem"), &cert).expect("copy cert");
    std::fs::copy(certs.path("server.key"), &key).expect("copy key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if as_postgres {
        for file in [&cert, &key] {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(file)
                .status()
                .expect("chown");
            assert!(
                chown.success(),
                "cannot hand {} to postgres",
                file.display()
            );
        }
    }
    format!(
        " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display()
    )
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let data = own.data.display().to_string();
            let mut cmd = if own.as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(own.bin.join("pg_ctl"));
                c
            } else {
                Command::new(own.bin.join("pg_ctl"))
            };
            let _ = cmd
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
