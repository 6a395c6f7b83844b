//! The probe's other endpoints: wasi:config reads, an outgoing call, and misbehaviour
//! (trap, endless loop, big or unbounded allocation, unbounded recursion, an endless
//! response) for the host's limit tests.

use panal_sdk::config::store::{self as config, Error as ConfigError};
use panal_sdk::wasi::http::types::ResponseOutparam;
use serde_json::{json, Map, Value};

/// `GET config/{key}` → `{"key":k,"value":v|null}`.
pub fn config_get(out: ResponseOutparam, key: &str) {
    match config::get(key) {
        Ok(value) => panal_sdk::json(out, 200, &json!({ "key": key, "value": value })),
        Err(e) => panal_sdk::error(out, 500, &config_error_text(e)),
    }
}

/// `GET config` → an object of every key and value.
pub fn config_all(out: ResponseOutparam) {
    match config::get_all() {
        Ok(pairs) => {
            let object: Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            panal_sdk::json(out, 200, &Value::Object(object));
        }
        Err(e) => panal_sdk::error(out, 500, &config_error_text(e)),
    }
}

fn config_error_text(e: ConfigError) -> String {
    match e {
        ConfigError::Upstream(s) => format!("upstream: {s}"),
        ConfigError::Io(s) => format!("io: {s}"),
    }
}

/// `GET call?url=URL` → outgoing GET (`POST`: the body POSTed as JSON); 200
/// `{"status","body"}` or 502 `{"error"}`.
pub fn call(out: ResponseOutparam, query: Option<&str>, post: Option<Vec<u8>>) {
    let Some(url) = panal_sdk::query_param(query, "url") else {
        return panal_sdk::error(out, 400, "missing ?url=");
    };
    // `forge=1`: try to speak for another user, roles and caller (the host must not let it).
    let forged: &[(&str, &str)] = if panal_sdk::query_param(query, "forge").is_some() {
        &[
            (panal_sdk::USER_ID_HEADER, "forged-user"),
            (panal_sdk::ROLES_HEADER, "admin"),
            (panal_sdk::CALLER_HEADER, "forged-caller"),
        ]
    } else {
        &[]
    };
    use panal_sdk::wasi::http::types::Method;
    let sent = match &post {
        Some(body) => {
            let headers = [&[("content-type", "application/json")][..], forged].concat();
            panal_sdk::client::send(Method::Post, &url, &headers, Some(body))
        }
        None => panal_sdk::client::send(Method::Get, &url, forged, None),
    };
    match sent {
        Ok((status, body)) => {
            let body = String::from_utf8_lossy(&body);
            panal_sdk::json(out, 200, &json!({ "status": status, "body": body }));
        }
        Err(e) => panal_sdk::error(out, 502, &e),
    }
}

/// `GET whoami`: the caller as the host told it: user, roles and calling component.
pub fn whoami(out: ResponseOutparam, req: &panal_sdk::wasi::http::types::IncomingRequest) {
    let h = |name: &str| panal_sdk::header(req, name);
    let doc = json!({
        "user": h(panal_sdk::USER_ID_HEADER),
        "roles": h(panal_sdk::ROLES_HEADER),
        "caller": h(panal_sdk::CALLER_HEADER),
        "method": panal_sdk::method_str(&req.method()),
        "path": panal_sdk::path_and_query(req).0,
    });
    panal_sdk::json(out, 200, &doc);
}

/// `GET spin`: loops forever; only the host's interruption ends it.
pub fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// `GET alloc?mb=N` (default 1): allocates N MiB, writes every 4096th byte, answers
/// `{"allocated_mb":N}`. An allocation beyond the host's memory limit traps.
pub fn alloc(out: ResponseOutparam, query: Option<&str>) {
    let mb = match panal_sdk::query_param(query, "mb").map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return panal_sdk::error(out, 400, "bad mb="),
    };
    let len = mb.saturating_mul(1024 * 1024);
    let mut block = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        block[i] = 1;
    }
    std::hint::black_box(&block);
    panal_sdk::json(out, 200, &json!({ "allocated_mb": mb }));
}

/// `GET grow?pages=N&hold_ms=M`: grows linear memory one 64 KiB page at a time, up to N
/// pages or until the host refuses (`memory.grow` answers -1, no trap), keeps it M ms,
/// then answers `{"grown":PAGES,"refused":BOOL}`.
pub fn grow(out: ResponseOutparam, query: Option<&str>) {
    let number = |name| panal_sdk::query_param(query, name).map(|t| t.parse::<usize>());
    let (Some(Ok(pages)), hold) = (number("pages"), number("hold_ms")) else {
        return panal_sdk::error(out, 400, "bad pages=");
    };
    let mut grown = 0;
    while grown < pages && grow_one_page() {
        grown += 1;
    }
    if let Some(Ok(ms)) = hold {
        let ns = u64::try_from(ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(1_000_000);
        panal_sdk::wasi::clocks::monotonic_clock::subscribe_duration(ns).block();
    }
    let refused = grown < pages;
    panal_sdk::json(out, 200, &json!({ "grown": grown, "refused": refused }));
}

/// One more page of linear memory, or `false` when the host refuses it (`cargo test`
/// builds the probe for the host's own target, which has no linear memory to grow).
fn grow_one_page() -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_grow(0, 1) != usize::MAX
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        false
    }
}

/// `GET sleep?ms=N`: waits on a wasi clock (no CPU burnt), then answers; lets tests keep a
/// request in flight across a host shutdown.
pub fn sleep(out: ResponseOutparam, query: Option<&str>) {
    let ms = match panal_sdk::query_param(query, "ms").map(|t| t.parse::<u64>()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => return panal_sdk::error(out, 400, "bad ms="),
    };
    panal_sdk::wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
    panal_sdk::json(out, 200, &json!({ "slept_ms": ms }));
}

/// `GET recurse`: recursion without a base case. Each frame keeps its value in wasm
/// locals, not in Rust's stack in linear memory, so it is wasm's own call stack that
/// overflows (a trap the host's stack limit catches).
pub fn recurse() -> ! {
    // Endless on purpose; the arithmetic after the call keeps it from becoming a loop.
    #[allow(unconditional_recursion)]
    #[inline(never)]
    fn down(depth: u64) -> u64 {
        down(depth.wrapping_add(1))
            .wrapping_mul(3)
            .wrapping_add(depth)
    }
    let n = down(0);
    unreachable!("recursion ended at {n}")
}

/// `GET hog`: allocates 1 MiB after 1 MiB, touching each, and never frees: it ends when
/// the memory limit refuses to grow (a trap).
pub fn hog() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1024 * 1024]);
        std::hint::black_box(&held);
    }
}

/// `GET stream`: a 200 whose body never ends, in 4 KiB chunks (the most one blocking
/// write takes), until the host stops it or the client goes away.
pub fn stream(out: ResponseOutparam) {
    use panal_sdk::wasi::http::types::{Fields, OutgoingResponse};
    let resp = OutgoingResponse::new(Fields::new());
    let Ok(body) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    let Ok(stream) = body.write() else { return };
    let chunk = [b'x'; 4096];
    while stream.blocking_write_and_flush(&chunk).is_ok() {}
}

/// `GET sandbox`: what the component can reach of the machine: environment variables,
/// the file system (`/` and `.`), and a TCP connection to `target` (default
/// 127.0.0.1:4222). Each is reported as what it got, so a test can require "nothing".
pub fn sandbox(out: ResponseOutparam, query: Option<&str>) {
    let target = panal_sdk::query_param(query, "target").unwrap_or_else(|| "127.0.0.1:4222".into());
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let dir = |path: &str| match std::fs::read_dir(path) {
        Ok(entries) => json!({ "entries": entries.count() }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let tcp = match std::net::TcpStream::connect(target.as_str()) {
        Ok(_) => json!({ "connected": true }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let file = match std::fs::File::create("escape.txt") {
        Ok(_) => json!({ "created": true }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    panal_sdk::json(
        out,
        200,
        &json!({ "env": env, "root": dir("/"), "cwd": dir("."), "tcp": tcp, "create": file }),
    );
}
