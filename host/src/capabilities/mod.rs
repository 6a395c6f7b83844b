//! The capabilities a component may be granted, one folder each: [`http_out`] (outgoing
//! `wasi:http`, in-process calls to other components), [`keyvalue`] (`wasi:keyvalue`),
//! [`messaging`] (`wasi:messaging`) and [`config`] (`wasi:config`). A folder holds the
//! capability's trait and backends, its WIT host impl, its grant check and its counters.
//!
//! They all speak one small interface, [`Capability`] (after Spin's factors):
//! `link` adds its interfaces to the host's one linker; `configure` checks one version
//! of a component against its grants and builds what that version holds of it (its
//! [`Grants`]); `prepare` makes its part of one instance's [`State`]; `enter` has a kept
//! instance take on its next request. The wiring ([`Grants`], `Instances`, [`linker`])
//! is generated from one list, `capabilities!`, so adding a capability is a new folder
//! (with its view of the [`State`]) plus one line there.

pub(crate) mod bindings;
pub mod config;
pub mod context;
pub mod http_out;
pub mod keyvalue;
pub mod messaging;
mod state;
mod tasks;

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::Engine;

pub use context::{trace_of, CallContext, TRACE_HEADERS};
pub use state::State;

use crate::manifest::ComponentSpec;
use crate::metrics::Stats;

/// The one interface of a capability.
pub trait Capability {
    /// What one version of a component holds of it: checked grants, opened storage.
    type Grant: Send + Sync + 'static;
    /// Its part of one instance's [`State`].
    type Instance: Send + 'static;

    /// Add its WIT interfaces to the host's linker (once per host).
    fn link(linker: &mut Linker<State>) -> wasmtime::Result<()>;

    /// Check `version` (its imports against its grants) and build what it holds; at load
    /// and on every deploy, so a version that breaks a grant rule never serves. The
    /// error says what to add to the manifest.
    fn configure(
        version: &Version<'_>,
    ) -> impl Future<Output = Result<Self::Grant, GrantError>> + Send;

    /// Its state for one instance started by `ctx`.
    fn prepare(grant: &Self::Grant, ctx: &CallContext) -> Self::Instance;

    /// A kept instance (`limits.reuse`) takes its next request, started by `ctx`.
    fn enter(_instance: &mut Self::Instance, _ctx: &CallContext) {}
}

/// A capability refused a version, naming the manifest field to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GrantError {
    /// The manifest field of the grant (`keyvalue`, `outbound`, ...).
    pub field: &'static str,
    /// What is wrong and what to add.
    pub message: String,
}

/// What [`Capability::configure`] sees of the version being loaded.
pub struct Version<'a> {
    /// Its manifest entry (grants, limits, config).
    pub spec: &'a ComponentSpec,
    /// The interfaces it imports, e.g. `wasi:keyvalue/store@0.2.0-draft2`.
    pub imports: &'a [String],
    /// The component's counters.
    pub stats: &'a Arc<Stats>,
    /// The host's backends.
    pub backends: &'a Backends,
}

/// The host's backends of the capabilities that have one. `panal check` has none: it
/// links and checks, but opens no storage and connects to no broker.
#[derive(Clone, Default)]
pub struct Backends {
    /// Keyed storage.
    pub kv: Option<Arc<dyn keyvalue::KvBackend>>,
    /// Messaging.
    pub broker: Option<Arc<dyn messaging::Broker>>,
    /// The host's guest memory budget (unbounded by default).
    pub memory: Arc<crate::runtime::budget::MemoryBudget>,
}

/// Every capability, once: the list [`Grants`] (what a version holds of each),
/// `Instances` (what one instance holds of each, in its [`State`]) and the linker's
/// lines are generated from.
macro_rules! capabilities {
    ($($field:ident: $cap:ty,)*) => {
        /// What one version of a component holds of every capability.
        pub struct Grants {
            $(pub(crate) $field: <$cap as Capability>::Grant,)*
        }

        impl Grants {
            /// Configure every capability for `version`.
            pub async fn configure(version: &Version<'_>) -> Result<Self, GrantError> {
                Ok(Self {
                    $($field: <$cap>::configure(version).await?,)*
                })
            }
        }

        /// What one instance holds of every capability.
        pub(crate) struct Instances {
            $(pub(crate) $field: <$cap as Capability>::Instance,)*
        }

        impl Instances {
            fn prepare(grants: &Grants, ctx: &CallContext) -> Self {
                Self {
                    $($field: <$cap>::prepare(&grants.$field, ctx),)*
                }
            }

            fn enter(&mut self, ctx: &CallContext) {
                $(<$cap>::enter(&mut self.$field, ctx);)*
            }
        }

        fn link_all(linker: &mut Linker<State>) -> wasmtime::Result<()> {
            $(<$cap>::link(linker)?;)*
            Ok(())
        }
    };
}

capabilities! {
    http_out: http_out::HttpOut,
    keyvalue: keyvalue::Keyvalue,
    messaging: messaging::Messaging,
    config: config::Config,
}

/// The linker with WASI, `wasi:http` and every capability a component may import.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    let fail = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
    // WASI 0.3: what a `wasi:http/service` component imports besides wasi:http.
    wasmtime_wasi::p3::clocks::add_to_linker(&mut linker).map_err(fail)?;
    wasmtime_wasi::p3::random::add_to_linker(&mut linker).map_err(fail)?;
    wasmtime_wasi::p3::cli::add_to_linker(&mut linker).map_err(fail)?;
    link_all(&mut linker).map_err(fail)?;
    Ok(linker)
}
