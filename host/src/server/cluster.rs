//! How a host takes its place in a cluster: which cluster (`[cluster]` or `--cluster`),
//! which components run here (`--components`; the others are reached on other hosts),
//! and joining it over NATS.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Refused, RunOptions, NATS_READY_WAIT};
use crate::manifest::{ClusterSpec, ComponentSpec, Manifest, Storage};
use crate::triggers::cluster::{Changed, Cluster};
use crate::triggers::Executor;

/// The cluster to join: `--cluster URL` (named by the manifest, else `panal`) or the
/// manifest's `[cluster]`.
pub(super) fn cluster_of(
    manifest: &Manifest,
    opts: &RunOptions,
) -> anyhow::Result<Option<ClusterSpec>> {
    let Some(url) = &opts.cluster else {
        let mut spec = manifest.cluster.clone();
        if let (Some(spec), Some(n)) = (&mut spec, opts.replicas) {
            spec.replicas = n;
        }
        return Ok(spec);
    };
    if !matches!(Storage::at(url, 1), Some(Storage::Nats { .. })) {
        return Err(Refused(format!("--cluster `{url}` is not a nats:// or tls:// URL")).into());
    }
    let name = manifest
        .cluster
        .as_ref()
        .map_or_else(|| "panal".to_string(), |c| c.name.clone());
    let replicas = opts
        .replicas
        .or(manifest.cluster.as_ref().map(|c| c.replicas))
        .unwrap_or(1);
    Ok(Some(ClusterSpec {
        name,
        nats: url.clone(),
        replicas,
    }))
}

/// Keep in `manifest` only the components `--components` names (all without it); the
/// others, returned, run on other hosts of the cluster.
pub(super) fn run_here(
    manifest: &mut Manifest,
    only: Option<&[String]>,
    in_cluster: bool,
) -> anyhow::Result<Vec<ComponentSpec>> {
    let Some(only) = only else {
        return Ok(Vec::new());
    };
    if !in_cluster {
        let why = "--components needs a cluster to reach the other components on:                    add [cluster] to the manifest or pass --cluster nats://...";
        return Err(Refused(why.into()).into());
    }
    let known: Vec<&str> = manifest
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if let Some(unknown) = only.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(Refused(format!(
            "--components: `{unknown}` is not a component of {} (it has: {})",
            manifest.path.display(),
            known.join(", ")
        ))
        .into());
    }
    let (here, elsewhere) = std::mem::take(&mut manifest.components)
        .into_iter()
        .partition(|c| only.contains(&c.name));
    manifest.components = here;
    Ok(elsewhere)
}

/// Connect to the cluster's NATS and join it with `executor`'s components.
pub(super) async fn join_cluster(
    spec: &ClusterSpec,
    executor: &Arc<Executor>,
    elsewhere: &[ComponentSpec],
    public_addr: SocketAddr,
    changed: Changed,
) -> anyhow::Result<Arc<Cluster>> {
    let nats = panal_nats::Nats::connect(&spec.nats)
        .await
        .map_err(|e| Refused(format!("cluster: cannot connect to NATS: {e}")))?;
    if !nats.wait_connected(NATS_READY_WAIT).await {
        return Err(Refused(format!("cluster: NATS at {} did not answer", spec.nats)).into());
    }
    let limits = elsewhere
        .iter()
        .map(|c| (c.name.clone(), c.limits))
        .collect();
    let host = format!("{}@{public_addr}", std::process::id());
    Cluster::join(nats, spec, &host, executor, limits, changed)
        .await
        .map_err(|e| Refused(format!("{e:#}")).into())
}
