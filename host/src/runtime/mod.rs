//! The runtime: everything about running wasm that knows no capability, no component
//! registry and no trigger.
//!
//! - [`engine`]: the one wasmtime engine (pooling allocator, epoch ticker) and the
//!   on-disk cache of compiled components.
//! - [`limits`]: the store's resource limiter, capped request bodies, response bodies
//!   that end in an error when their instance was stopped, the concurrency slot.
//! - [`instance`]: one store with its limits and deadline armed (the only place a
//!   `Store` is made).
//! - [`budget`]: the host-wide budget of guest memory every live instance is charged
//!   the linear memory it grew to.
//! - [`failure`]: how a run of an instance can fail, named once, with its status, its
//!   log line and its JSON error body.

pub mod budget;
pub mod engine;
pub mod failure;
pub mod instance;
pub mod limits;

pub use failure::Failure;
