//! Bindings for a component that also *handles* messages: world
//! `panal:platform/guest-handler` exports `wasi:messaging/incoming-handler`. Its imports
//! are the ones of [`crate::bindings`], reused, so both share one set of types.
//!
//! A service implements [`exports::wasi::messaging::incoming_handler::Guest`] and exports
//! it with `panal_sdk::handler::export_messaging_handler!(MyService with_types_in panal_sdk::handler);`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "panal:platform/guest-handler",
    with: {
        "wasi:keyvalue/store@0.2.0-draft2": crate::bindings::wasi::keyvalue::store,
        "wasi:keyvalue/atomics@0.2.0-draft2": crate::bindings::wasi::keyvalue::atomics,
        "wasi:keyvalue/batch@0.2.0-draft2": crate::bindings::wasi::keyvalue::batch,
        "wasi:config/store@0.2.0-draft": crate::bindings::wasi::config::store,
        "wasi:messaging/types@0.2.0-draft": crate::bindings::wasi::messaging::types,
        "wasi:messaging/producer@0.2.0-draft": crate::bindings::wasi::messaging::producer,
        "wasi:messaging/request-reply@0.2.0-draft": crate::bindings::wasi::messaging::request_reply,
    },
    pub_export_macro: true,
    export_macro_name: "export_messaging_handler",
});
