//! Deployments on disk, under `DATA_DIR/deployments/`: every version's `.wasm` by sha256
//! (`blobs/`) and one record per component (`records/NAME.json`) with its history, the
//! routes of each version, and the grants of a component added by `deploy`. After a
//! restart the host serves what the records say, not the manifest's file;
//! `panal run --reset-deployments` deletes the folder and goes back to the manifest.
//!
//! Records are written to a temporary file and renamed, so a crash leaves the old or the
//! new record, never half of one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{ComponentSpec, Limits, Location, Outbound};

/// A record or blob that could not be read or written, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// `read` or `write`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record that is not what this version of Panal writes.
    #[error("{}: {source}", .path.display())]
    Json {
        /// The record's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// This host keeps no deployments (`panal check`, a test host).
    #[error("this host keeps no deployments")]
    NoDeployments,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One component's deployment history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Oldest first; the last one is current. At most [`HISTORY`].
    pub versions: Vec<VersionRecord>,
    /// Undeployed: not served until deployed again.
    #[serde(default)]
    pub removed: bool,
    /// Grants of a component that is not in the manifest.
    #[serde(default)]
    pub added: Option<Grants>,
}

/// One version in the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    /// sha256 of its `.wasm` (the blob's name).
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub deployed_at_ms: u64,
    /// `manifest`, `deploy` or `rollback`.
    pub origin: String,
    /// The routes it was served under.
    pub routes: Vec<RouteRecord>,
}

/// A route as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteRecord {
    /// Path prefix.
    pub prefix: String,
    /// Methods, when limited.
    pub methods: Option<Vec<String>>,
    /// Whether a bearer token is required.
    pub protected: bool,
    /// Roles the token must hold one of (records written before roles have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Rate limits, when the route has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<panal_gateway::ratelimit::RateLimit>,
    /// The components in front of it (older records have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub middleware: Vec<String>,
}

/// What a component added by `deploy` may touch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Buckets.
    pub keyvalue: Vec<String>,
    /// Components it may call by name.
    pub outbound: Vec<String>,
    /// Subjects it may publish to.
    pub publish: Vec<String>,
}

impl RouteRecord {
    /// From a gateway route.
    pub fn of(r: &panal_gateway::Route) -> Self {
        Self {
            prefix: r.prefix.clone(),
            methods: r
                .methods
                .as_ref()
                .map(|m| m.iter().map(ToString::to_string).collect()),
            protected: r.protected,
            roles: r.roles.clone(),
            rate_limit: r.rate_limit,
            middleware: r.middleware.clone(),
        }
    }

    /// Back to a gateway route of `component`, held to the manifest's rules: for a
    /// record that arrived over the network.
    pub fn checked(&self, component: &str) -> Result<panal_gateway::Route, String> {
        let methods = self
            .methods
            .as_ref()
            .map(|ms| {
                ms.iter()
                    .map(|m| crate::manifest::parse_method(m))
                    .collect()
            })
            .transpose()?;
        let route = panal_gateway::Route {
            methods,
            ..self.route(component)
        };
        match crate::manifest::route_problem(&route) {
            Some(why) => Err(format!("route `{}`: {why}", self.prefix)),
            None => Ok(route),
        }
    }

    /// Back to a gateway route of `component`.
    pub fn route(&self, component: &str) -> panal_gateway::Route {
        panal_gateway::Route {
            prefix: self.prefix.clone(),
            methods: self.methods.as_ref().map(|m| {
                m.iter()
                    .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                    .collect()
            }),
            component: component.to_string(),
            protected: self.protected,
            roles: self.roles.clone(),
            rate_limit: self.rate_limit,
            middleware: self.middleware.clone(),
        }
    }
}

/// How many versions a component's history keeps (what `rollback` can reach).
pub const HISTORY: usize = 20;

/// The folder.
#[derive(Debug, Clone)]
pub struct DeployStore {
    dir: PathBuf,
}

impl DeployStore {
    /// Open (creating) `dir`.
    pub fn open(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs"))?;
        std::fs::create_dir_all(dir.join("records"))?;
        Ok(Self { dir })
    }

    /// The record of `name`, if it was ever deployed.
    pub fn record(&self, name: &str) -> Result<Option<Record>, StoreError> {
        let path = self.record_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Json { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Replace the record of `name`, keeping its last [`HISTORY`] versions. The blobs of
    /// versions dropped from it go too, unless another record still names them.
    pub fn save(&self, name: &str, record: &Record) -> Result<(), StoreError> {
        let excess = record.versions.len().saturating_sub(HISTORY);
        let mut kept = record.clone();
        let dropped: Vec<VersionRecord> = kept.versions.drain(..excess).collect();
        let path = self.record_path(name);
        let bytes = serde_json::to_vec_pretty(&kept).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomically(&path, &bytes)?;
        if !dropped.is_empty() {
            let needed: BTreeSet<String> = self
                .names()
                .iter()
                .filter_map(|n| self.record(n).ok().flatten())
                .flat_map(|r| r.versions.into_iter().map(|v| v.sha256))
                .collect();
            for v in dropped.iter().filter(|v| !needed.contains(&v.sha256)) {
                // Best effort: a blob left behind is only disk space.
                let _ = std::fs::remove_file(self.blob_path(&v.sha256));
            }
        }
        Ok(())
    }

    /// Keep `bytes` as the blob `sha256` (once).
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(sha256);
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, bytes)
    }

    /// The blob `sha256`.
    pub fn blob(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(sha256);
        std::fs::read(&path).map_err(io("read", &path))
    }

    /// What to load: each manifest component (with the routes and bytes of its last
    /// deployed version when it has one, left out when undeployed), then the components
    /// only `deploy` added. The sha is `None` for the manifest's own file.
    pub fn effective(&self, manifest: &[ComponentSpec]) -> Vec<(ComponentSpec, Option<String>)> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for spec in manifest {
            seen.insert(spec.name.clone());
            match self.record(&spec.name) {
                Ok(Some(record)) if record.removed => {
                    tracing::info!(component = %spec.name, "undeployed earlier; not served");
                }
                Ok(Some(record)) => match record.versions.last() {
                    Some(v) => {
                        let mut spec = spec.clone();
                        spec.routes = v.routes.iter().map(|r| r.route(&spec.name)).collect();
                        out.push((spec, Some(v.sha256.clone())));
                    }
                    None => out.push((spec.clone(), None)),
                },
                Ok(None) => out.push((spec.clone(), None)),
                Err(e) => {
                    tracing::error!(component = %spec.name, %e, "unreadable deployment record; serving the manifest's file");
                    out.push((spec.clone(), None));
                }
            }
        }
        for name in self.names() {
            if seen.contains(&name) {
                continue;
            }
            let Ok(Some(record)) = self.record(&name) else {
                continue;
            };
            if record.removed {
                continue;
            }
            if let (Some(grants), Some(v)) = (&record.added, record.versions.last()) {
                let spec = added_spec(&name, &self.blob_path(&v.sha256), grants, &v.routes);
                out.push((spec, Some(v.sha256.clone())));
            }
        }
        out
    }

    fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("records")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join("records").join(format!("{name}.json"))
    }

    /// Where the blob `sha256` lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{sha256}.wasm"))
    }
}

/// The spec of a component that `deploy` added (not in the manifest): default limits.
pub fn added_spec(
    name: &str,
    source: &Path,
    grants: &Grants,
    routes: &[RouteRecord],
) -> ComponentSpec {
    ComponentSpec {
        name: name.to_string(),
        source: source.to_path_buf(),
        source_at: Location::default(),
        routes: routes.iter().map(|r| r.route(name)).collect(),
        buckets: grants.keyvalue.clone(),
        outbound: Outbound {
            components: grants.outbound.clone(),
            hosts: Vec::new(),
        },
        config: Vec::new(),
        publish: grants.publish.clone(),
        subscribe: Vec::new(),
        limits: Limits::default(),
        schedule: Vec::new(),
    }
}

/// Write to a temporary file, flush it to disk, rename it over `path`: after a crash or
/// a power cut the old or the new content is there, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(sha: &str) -> VersionRecord {
        VersionRecord {
            sha256: sha.to_string(),
            deployed_at_ms: 0,
            origin: "deploy".into(),
            routes: Vec::new(),
        }
    }

    #[test]
    fn history_is_capped_and_unneeded_blobs_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = DeployStore::open(dir.path().join("d")).expect("open");
        let shas: Vec<String> = (0..HISTORY + 3).map(|i| format!("{i:064x}")).collect();
        for sha in &shas {
            store.put_blob(sha, b"wasm").expect("blob");
        }
        // Another component still runs the oldest blob.
        let other = Record {
            versions: vec![version(&shas[0])],
            ..Record::default()
        };
        store.save("other", &other).expect("save");
        let record = Record {
            versions: shas.iter().map(|s| version(s)).collect(),
            ..Record::default()
        };
        store.save("hello", &record).expect("save");

        let kept = store.record("hello").expect("read").expect("record");
        assert_eq!(kept.versions.len(), HISTORY);
        assert_eq!(kept.versions[0].sha256, shas[3]);
        assert!(
            store.blob_path(&shas[0]).exists(),
            "still needed by `other`"
        );
        assert!(!store.blob_path(&shas[1]).exists());
        assert!(!store.blob_path(&shas[2]).exists());
        assert!(store.blob_path(&shas[3]).exists());
    }
}
