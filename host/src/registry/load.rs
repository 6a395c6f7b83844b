//! Loading a manifest's components at start: each one's current bytes (the manifest's
//! file, or the version a deploy made current, from the deploy store), prepared as a
//! [`Deployed`]; every failure is collected, each naming its component and line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::error::{ChangeError, Phase};
use super::store::DeployStore;
use super::version::{prepare, Deployed, Env};
use super::Registry;
use crate::capabilities::{linker, Backends};
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::engine::{Compiled, Compiler};

/// One component failed to load; names it, where it was declared and the phase.
#[derive(Debug, thiserror::Error)]
#[error("{manifest}:{line}:{col}: components.{name}.source: {message}")]
pub struct LoadError {
    /// Manifest path.
    pub manifest: String,
    /// Line of the component's `source`.
    pub line: usize,
    /// Column of the component's `source`.
    pub col: usize,
    /// The component.
    pub name: String,
    /// Where it stopped.
    pub phase: Phase,
    /// What went wrong.
    pub message: String,
}

/// Counts of how components were obtained, for the start-up log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Compiled during this load.
    pub compiled: usize,
    /// Taken from the on-disk cache.
    pub cached: usize,
}

impl Registry {
    /// Compile, link and check every component of `manifest` against `backends` (none
    /// for `panal check`). All failures are returned, not just the first.
    pub async fn load(
        manifest: &Manifest,
        compiler: Compiler,
        backends: Backends,
        deployments: Option<DeployStore>,
    ) -> Result<(Arc<Self>, LoadStats), Vec<LoadError>> {
        let error = |spec: Option<&ComponentSpec>, e: ChangeError| LoadError {
            manifest: manifest.path.display().to_string(),
            line: spec.map_or(0, |s| s.source_at.line),
            col: spec.map_or(0, |s| s.source_at.col),
            name: spec.map_or_else(|| "*".into(), |s| s.name.clone()),
            phase: e.phase,
            message: e.message,
        };
        let linker = linker(compiler.engine()).map_err(|e| {
            let why = format!("host linker setup failed: {e:#}");
            vec![error(None, ChangeError::new("*", Phase::Link, why))]
        })?;
        let env = Env {
            compiler,
            linker,
            backends,
            metrics: Arc::default(),
        };
        let specs = match &deployments {
            Some(d) => d.effective(&manifest.components),
            None => manifest
                .components
                .iter()
                .map(|s| (s.clone(), None))
                .collect(),
        };
        let mut components = HashMap::new();
        let mut errors = Vec::new();
        let mut stats = LoadStats::default();
        for (spec, deployed_sha) in specs {
            match load_one(&spec, deployed_sha.as_deref(), &env, deployments.as_ref()).await {
                Ok((deployed, how)) => {
                    match how {
                        Compiled::Fresh => stats.compiled += 1,
                        Compiled::Cached => stats.cached += 1,
                    }
                    components.insert(spec.name.clone(), Arc::new(ArcSwap::from_pointee(deployed)));
                }
                Err(e) => errors.push(error(Some(&spec), e)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok((Self::new(components, env, deployments), stats))
    }
}

/// One component: from the deploy store when a deploy made `deployed_sha` current,
/// else from the manifest's file (kept in the store too, so a rollback can reach it).
async fn load_one(
    spec: &ComponentSpec,
    deployed_sha: Option<&str>,
    env: &Env,
    store: Option<&DeployStore>,
) -> Result<(Deployed, Compiled), ChangeError> {
    let bytes = match (deployed_sha, store) {
        (Some(sha), Some(store)) => store.blob(sha).map_err(|e| e.to_string()),
        (Some(_), None) => Err(super::store::StoreError::NoDeployments.to_string()),
        (None, _) => read(&spec.source),
    }
    .map_err(ChangeError::at(&spec.name, Phase::Read))?;
    let (deployed, how) = prepare(Arc::new(spec.clone()), &bytes, env, None).await?;
    if let (Some(store), None) = (store, deployed_sha) {
        if let Err(e) = store.put_blob(&deployed.sha256, &bytes) {
            tracing::warn!(component = %spec.name, %e, "cannot keep a copy for rollback");
        }
    }
    tracing::info!(
        component = %spec.name,
        sha256 = %deployed.version(),
        compiled = matches!(how, Compiled::Fresh),
        from = if deployed_sha.is_some() { "deployments" } else { "manifest" },
        "component ready"
    );
    Ok((deployed, how))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}
