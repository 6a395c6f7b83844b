//! How a host takes its place in a cluster: which cluster (`[cluster]` or `--cluster`),
//! which components run here (`--components`; the others are reached on other hosts),
//! and joining it over NATS.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Refused, RunOptions, NATS_READY_WAIT};
use crate::cluster::seal::Seal;
use crate::cluster::wire::MIN_PAYLOAD;
use crate::cluster::Cluster;
use crate::manifest::{ClusterSpec, ComponentSpec, Manifest, Storage};
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
        let url = panal_nats::redact(url);
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
        key: manifest.cluster.as_ref().and_then(|c| c.key.clone()),
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

/// `spec` with its key: the manifest's `[cluster] key`, else `PANAL_CLUSTER_KEY`; a
/// host joins no cluster without one.
pub(super) fn keyed(mut spec: ClusterSpec) -> anyhow::Result<ClusterSpec> {
    if spec.key.is_none() {
        spec.key = std::env::var("PANAL_CLUSTER_KEY")
            .ok()
            .filter(|k| !k.is_empty());
    }
    let Some(key) = &spec.key else {
        return Err(Refused(
            "cluster: no cluster key. Every host of a cluster seals its calls and deploys with \
             the same secret: set PANAL_CLUSTER_KEY (at least 32 bytes; `openssl rand -hex 32` \
             makes one) or [cluster] key = \"${...}\""
                .into(),
        )
        .into());
    };
    // The seal's own rule, asked before connecting so a bad key fails at once.
    Seal::new(key.as_bytes()).map_err(|e| Refused(format!("cluster: {e}")))?;
    Ok(spec)
}

/// Connect to the cluster's NATS and join it with `executor`'s components, listed at
/// `public_addr` (they answer the cluster's calls through the remote-call trigger);
/// `roles` follows its grants.
pub(super) async fn join_cluster(
    spec: &ClusterSpec,
    opts: &RunOptions,
    executor: &Arc<Executor>,
    elsewhere: &[ComponentSpec],
    (public_addr, roles): (SocketAddr, Arc<crate::roles::Roles>),
) -> anyhow::Result<Arc<Cluster>> {
    let nats = panal_nats::Nats::connect(&spec.nats, &opts.cluster_auth)
        .await
        .map_err(|e| Refused(format!("cluster: cannot connect to NATS: {e}")))?;
    nats.ready(&spec.nats, NATS_READY_WAIT)
        .await
        .map_err(|e| Refused(format!("cluster: {e}")))?;
    trusted(&nats, &spec.nats, opts.insecure_cluster)?;
    let limits = elsewhere
        .iter()
        .map(|c| (c.name.clone(), c.limits))
        .collect();
    let host = format!("{}@{public_addr}", std::process::id());
    let answers = Arc::new(crate::triggers::remote::Remote(Arc::downgrade(executor)));
    let local = (executor.registry().clone(), answers as _);
    Cluster::join(nats, spec, &host, local, limits, roles)
        .await
        .map_err(|e| Refused(format!("{e:#}")).into())
}

/// Whether the cluster's NATS keeps strangers out (it requires authentication and this
/// host authenticated), or the operator said `--insecure-cluster`; and whether its
/// `max_payload` leaves room for a call's head.
fn trusted(nats: &panal_nats::Nats, url: &str, insecure: bool) -> anyhow::Result<()> {
    let url = panal_nats::redact(url);
    if !nats.authenticated() {
        if !insecure {
            return Err(Refused(format!(
                "cluster: the NATS server at {url} lets clients in without authentication, so \
                 anyone who reaches it could call any component as any user and deploy code.\n\
                 Require authentication on the server (README: NATS in production) and give \
                 this host its credentials (nats://user:pass@host, --nats-creds, --nats-nkey \
                 or --cluster-creds, --cluster-nkey), or pass --insecure-cluster on a laptop"
            ))
            .into());
        }
        tracing::warn!(
            %url,
            "--insecure-cluster: the cluster's NATS lets anyone in; whoever reaches it can \
             call any component as any user and deploy code"
        );
    }
    let max = nats.max_payload();
    if max < MIN_PAYLOAD {
        return Err(Refused(format!(
            "cluster: the NATS server at {url} announces max_payload {max} bytes; the \
             cluster's calls need at least {MIN_PAYLOAD}: raise max_payload in its configuration"
        ))
        .into());
    }
    Ok(())
}
