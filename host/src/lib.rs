//! Panal: runs microservices as sandboxed WebAssembly components behind one gateway.
//!
//! # Layout (lower layers never import higher ones; `ARCHITECTURE.md` has the picture)
//! - [`manifest`]: `panal.toml` as data, strict, with errors that name the field and
//!   line. Imports nothing else of the host.
//! - [`runtime`]: the wasmtime engine, pool and compile cache, the store's limits and
//!   deadline, and how a run fails ([`runtime::Failure`]).
//! - [`capabilities`]: `http_out`, `keyvalue`, `messaging`, `config`, one folder each,
//!   behind one [`capabilities::Capability`] interface; the per-instance
//!   [`capabilities::State`].
//! - [`registry`]: the versions of each component (load, deploy, rollback, history).
//! - [`cluster`]: several hosts as one over NATS: membership, rollout of deploys,
//!   calls to components that run on other hosts, the cluster's roles.
//! - [`triggers`]: HTTP, messaging, timers and calls from other hosts, all through one
//!   [`triggers::Executor`].
//! - [`admin`]: the admin API; [`server`]: `panal run` / `panal check` and
//!   [`server::serve`] on listeners the caller bound.
//! - Leaves any layer may use: [`metrics`] (counters, `/metrics`), [`traces`] (spans
//!   over OTLP, off unless the manifest names a collector), [`logging`],
//!   [`secret`] (the generated JWT secret), [`roles`] (operator-granted roles); [`cli`] is the client side of the admin API.

pub mod admin;
pub mod capabilities;
pub mod cli;
pub mod cluster;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod registry;
pub mod roles;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod traces;
pub mod triggers;
