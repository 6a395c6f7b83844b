//! The keyvalue capability's grant: deny by default. A component that imports
//! `wasi:keyvalue` must be granted a bucket; one that is granted any gets its own
//! namespace (database per service) opened at load, with its quota.

use wasmtime::component::Linker;

use super::host::{self, KvGrant};
use super::quota::KvLimits;
use crate::capabilities::{CallContext, Capability, GrantError, State, Version};

/// The keyvalue capability.
pub struct Keyvalue;

impl Capability for Keyvalue {
    type Grant = KvGrant;
    type Instance = KvGrant;

    fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
        host::add_to_linker(linker, State::kv)
    }

    async fn configure(version: &Version<'_>) -> Result<KvGrant, GrantError> {
        let spec = version.spec;
        let imports_kv = version
            .imports
            .iter()
            .any(|name| name.starts_with("wasi:keyvalue/"));
        if imports_kv && spec.buckets.is_empty() {
            return Err(GrantError {
                field: "keyvalue",
                message: format!(
                    "imports wasi:keyvalue but no bucket is granted: add `keyvalue = [\"...\"]` \
                     to [components.{}] (bucket not granted)",
                    spec.name
                ),
            });
        }
        let store = match &version.backends.kv {
            Some(kv) if !spec.buckets.is_empty() => Some(
                kv.namespace(&spec.name, KvLimits::of(&spec.limits))
                    .await
                    .map_err(|e| GrantError {
                        field: "keyvalue",
                        message: format!("cannot open its storage: {e:#}"),
                    })?,
            ),
            _ => None,
        };
        Ok(KvGrant {
            store,
            buckets: spec.buckets.clone().into(),
            stats: version.stats.clone(),
        })
    }

    fn prepare(grant: &KvGrant, _ctx: &CallContext) -> KvGrant {
        grant.clone()
    }
}
