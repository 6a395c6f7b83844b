//! Panal: runs microservices as sandboxed WebAssembly components behind one gateway.
//!
//! # Layout
//! - [`manifest`]: `panal.toml`, strict, with errors that name the field and line.
//! - [`engine`]: the one wasmtime engine (pooling allocator, epoch ticker) and the
//!   on-disk cache of compiled components.
//! - [`registry`]: components compiled, linked, checked against their grants and
//!   pre-instantiated, each behind an `ArcSwap`.
//! - [`invoke`]: the request path: a fresh instance per request, limits, failures as
//!   JSON errors; also the gateway's backend.
//! - [`limits`]: memory, body size and the concurrency queue.
//! - [`state`]: per-instance store state and the capability views over it.
//! - capabilities: [`outbound`] (wasi:http out, in-process calls, with [`resilience`]), [`kv`]
//!   (wasi:keyvalue over a backend trait), [`config`] (wasi:config).
//! - [`metrics`]: counters and `GET /metrics` (Prometheus text).
//! - [`logging`]: tracing setup and component stdout/stderr as log lines.
//! - [`deploy`]: deploy, rollback, undeploy; [`watch`]: `panal run --watch`.
//! - [`timer`]: the timer trigger (`schedule`): in-process calls on a period.
//! - [`server`]: `panal run` / `panal check`; [`secret`]: the generated JWT secret.

pub mod admin;
mod bindings;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod invoke;
pub mod kv;
pub mod limits;
pub mod logging;
pub mod manifest;
pub mod messaging;
pub mod metrics;
pub mod outbound;
pub mod registry;
pub mod resilience;
pub mod secret;
pub mod server;
pub mod state;
pub mod timer;
pub mod watch;
