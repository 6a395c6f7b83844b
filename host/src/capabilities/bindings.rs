//! Host bindings for the interfaces Panal implements itself (keyvalue, config,
//! messaging) and the messaging handler components may export. WASI and wasi:http come
//! from wasmtime-wasi and wasmtime-wasi-http.

#![allow(missing_docs, dependency_on_unit_never_type_fallback)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "panal:platform/host",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::capabilities::keyvalue::host::Bucket,
        "wasi:keyvalue/atomics.cas": crate::capabilities::keyvalue::host::Cas,
        "wasi:messaging/types.client": crate::capabilities::messaging::host::Client,
        "wasi:messaging/types.message": crate::capabilities::messaging::host::Message,
        "wasi:messaging/request-reply.request-options": crate::capabilities::messaging::host::RequestOptions,
    },
});

pub use wasi::config::store as config;
pub use wasi::keyvalue::{atomics, batch, store};
pub use wasi::messaging::{producer, request_reply, types as messaging_types};
