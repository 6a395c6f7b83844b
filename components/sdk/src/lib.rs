//! Panal guest SDK: what a Panal service (a wasm32-wasip2 `wasi:http/proxy` component)
//! needs beyond the `wasi` crate.
//!
//! - [`keyvalue`] and [`config`]: bindings of `wasi:keyvalue@0.2.0-draft2` (store, atomics,
//!   batch) and `wasi:config/store@0.2.0-draft`, generated from the repository's `wit/`
//!   (world `panal:platform/guest`).
//! - [`request`]: read an incoming request's body, headers, method, path segments, query.
//! - [`response`]: write a whole response (`json`, `bytes`, `error`, `empty`, `respond`).
//! - [`client`]: outgoing HTTP (`get`, `post`, `send`, `send_json`) over
//!   `wasi:http/outgoing-handler`.
//! - [`api`]: `ApiError` (status + JSON error body), `ApiResult`, `reply`.
//! - [`body`]: `Validator`, which reads a JSON body and lists every bad or unknown field.
//! - [`kv`]: compare-and-swap loops (`update`, `claim`) over wasi:keyvalue atomics.
//! - [`messaging`]: `wasi:messaging@0.2.0-draft` (types, producer, request-reply);
//!   [`handler`] for components that handle messages (`export_messaging_handler!`).
//! - [`random`] (ids from `wasi:random`) and [`time`] (unix seconds, RFC 3339).
//!
//! The component itself is exported with the `wasi` crate, re-exported here as [`wasi`]:
//! `panal_sdk::wasi::http::proxy::export!(MyService);`.

pub mod api;
pub mod bindings;
pub mod body;
pub mod client;
pub mod handler;
pub mod kv;
pub mod random;
pub mod request;
pub mod response;
pub mod time;

pub use api::{reply, ApiError, ApiResult};
pub use bindings::wasi::config;
pub use bindings::wasi::keyvalue;
pub use bindings::wasi::messaging;
pub use body::{Obj, Validator};
pub use random::{is_id, random_id};
pub use request::{
    caller_id, caller_roles, header, is_idempotency_key, method_str, path_and_query, path_segments,
    query_param, query_params, read_body, read_incoming_body, read_json_object, require_caller,
    require_component, require_role, CALLER_HEADER, CLIENT_IP_HEADER, ROLES_HEADER, USER_ID_HEADER,
};
pub use response::{bytes, empty, error, json, respond};

/// The `wasi` crate (wasi:http types, `wasi::http::proxy::export!`), re-exported so that
/// services can name one dependency.
pub use wasi;
