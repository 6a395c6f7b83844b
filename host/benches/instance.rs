//! Micro-benchmarks of the host, in process (criterion; `cargo bench -p panal`):
//!
//! - `instantiate-and-call/minimal`: one request through `Registry::call` (limits,
//!   a fresh instance from the pooling allocator, the handler, the body collected);
//! - `instantiate-and-call/bench-no-storage`: the same for the `bench` component on a
//!   path it answers 404 without touching storage (its instance cost alone);
//! - `keyvalue/get`, `keyvalue/set`: Panal's SQLite backend through its trait;
//! - `keyvalue/component-get-set`: the `bench` component's `kv/{key}` (one get and one
//!   set through `wasi:keyvalue`), the whole request as above.
//!
//! Needs the components built (`just components`).

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_main, Criterion};
use http_body_util::{BodyExt, Empty};
use panal::capabilities::keyvalue::{sqlite::SqliteBackend, KvBackend};
use panal::manifest::Manifest;

fn wasm(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../components/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `just components` first",
        path.display()
    );
    path.display().to_string()
}

fn request(path: &str) -> http::Request<wasmtime_wasi_http::WasiBody> {
    let body = Empty::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync();
    let mut req = http::Request::new(body);
    *req.uri_mut() = format!("http://localhost{path}").parse().expect("uri");
    req
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = tempfile::tempdir().expect("tmp");
    let text = format!(
        "version = 1\n\
         [components.minimal]\nsource = \"{}\"\nroutes = [\"/hello\"]\n\
         [components.bench]\nsource = \"{}\"\nroutes = [\"/bench\"]\nkeyvalue = [\"default\"]\n",
        wasm("minimal"),
        wasm("bench"),
    );
    let manifest =
        Manifest::parse(&data.path().join("panal.toml"), &text, &|_| None).expect("bench manifest");
    let kv: Arc<dyn KvBackend> = Arc::new(SqliteBackend::new(data.path().join("kv")).expect("kv"));
    let (registry, _ticker) = rt
        .block_on(panal::server::load_registry(
            &manifest,
            data.path(),
            Default::default(),
            panal::capabilities::Backends {
                kv: Some(kv.clone()),
                broker: None,
                memory: Default::default(),
            },
            None,
        ))
        .expect("registry");
    let executor = panal::triggers::Executor::new(registry.clone());

    let call = |name: &'static str, path: &'static str| {
        let executor = executor.clone();
        move || {
            let executor = executor.clone();
            async move {
                let resp = executor.call_http(name, request(path), 0).await;
                let expected = if path.ends_with("/none") { 404 } else { 200 };
                assert_eq!(resp.status().as_u16(), expected, "{name} {path}");
                resp.into_body().collect().await.expect("body");
            }
        }
    };
    c.bench_function("instantiate-and-call/minimal", |b| {
        b.to_async(&rt).iter(call("minimal", "/hello"));
    });
    // The keyvalue component's own cost, without storage: a path it answers 404.
    c.bench_function("instantiate-and-call/bench-no-storage", |b| {
        b.to_async(&rt).iter(call("bench", "/bench/none"));
    });

    let store = rt
        .block_on(kv.namespace(
            "micro",
            panal::capabilities::keyvalue::quota::KvLimits::of(&panal::manifest::Limits::default()),
        ))
        .expect("namespace");
    rt.block_on(store.set("b", "k", b"0")).expect("seed");
    let mut group = c.benchmark_group("keyvalue");
    group.bench_function("get", |b| {
        b.to_async(&rt).iter(|| async {
            store.get("b", "k").await.expect("get");
        });
    });
    group.bench_function("set", |b| {
        b.to_async(&rt).iter(|| async {
            store.set("b", "k", b"1").await.expect("set");
        });
    });
    group.bench_function("component-get-set", |b| {
        b.to_async(&rt).iter(call("bench", "/bench/kv/k"));
    });
    group.finish();
}

// The macro defines an undocumented `pub fn micro`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(micro, super::benches);
}
criterion_main!(group::micro);
