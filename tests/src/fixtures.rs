//! Broken components written as WebAssembly text, for what a Rust build cannot make on
//! purpose: a start function that traps, an import no host has, a handler that always
//! traps. Each is assembled into component bytes with the `wat` crate.

/// A component exporting `wasi:http/incoming-handler` whose `handle` is the core
/// module `$m`'s export `handle` (`(param i32 i32)`), `$m` being `core_module`.
fn http_handler(core_module: &str) -> Vec<u8> {
    handler_with(core_module, "(core instance $i (instantiate $m))")
}

/// Like [`http_handler`], with `$i` made by `instantiate` (to pass `$m` its imports).
fn handler_with(core_module: &str, instantiate: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
  {core_module}
  {instantiate}
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $h (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $h))
)"#
    );
    wat::parse_str(text).expect("fixture WAT")
}

/// Exports the HTTP handler correctly, but its core module's start function traps.
pub fn traps_at_start() -> Vec<u8> {
    http_handler(
        r#"(core module $m
    (func (export "handle") (param i32 i32))
    (func $boom unreachable)
    (start $boom))"#,
    )
}

/// Exports the HTTP handler, which traps on every request.
pub fn traps_on_request() -> Vec<u8> {
    http_handler(r#"(core module $m (func (export "handle") (param i32 i32) unreachable))"#)
}

/// Serves nothing the host can give it: it imports an interface no host has.
pub fn missing_import() -> Vec<u8> {
    wat::parse_str(
        r#"(component
  (import "acme:missing/thing@1.0.0" (instance (export "poke" (func))))
)"#,
    )
    .expect("fixture WAT")
}

/// A handler whose component instantiates `extra` more (empty) core modules: each
/// instance of it takes `extra + 1` core instances from the pool.
pub fn many_core_instances(extra: usize) -> Vec<u8> {
    let mut module = String::from(
        r#"(core module $m (func (export "handle") (param i32 i32) unreachable))
  (core module $empty)"#,
    );
    for _ in 0..extra {
        module.push_str("\n  (core instance (instantiate $empty))");
    }
    http_handler(&module)
}

/// A handler whose two core modules have a linear memory each; it grows both by
/// `pages` (64 KiB each) and traps when a growth is refused; it never answers otherwise.
pub fn two_memories_growing(pages: u32) -> Vec<u8> {
    handler_with(
        &format!(
            r#"(core module $a
    (memory 0)
    (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))
  (core instance $ia (instantiate $a))
  (core module $m
    (import "a" "grow" (func $grow_a (param i32) (result i32)))
    (memory 0)
    (func (export "handle") (param i32 i32)
      (if (i32.lt_s (memory.grow (i32.const {pages})) (i32.const 0)) (then unreachable))
      (if (i32.lt_s (call $grow_a (i32.const {pages})) (i32.const 0)) (then unreachable))))"#
        ),
        r#"(core instance $i (instantiate $m (with "a" (instance $ia))))"#,
    )
}
