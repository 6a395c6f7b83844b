//! Hostile clients against the real binary: the sample manifest serves only the shop and
//! a hello, catalogue writes need the `admin` role, the admin API refuses what a web
//! page could send it, and slow or greedy connections are cut off by the `[gateway]`
//! limits on both listeners.

use std::time::{Duration, Instant};

use panal_tests::shop::{Shop, SECRET};
use panal_tests::{client, component, Panal};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read from `s` until the server closes it (or `within` passes: then `None`).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// One whole HTTP/1.1 answer read from a kept-alive connection: the head, then exactly
/// `content-length` bytes of body (a single `read` may return only part of it).
async fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// One raw request to `addr` (`host:port`) with the given `Host` and extra header lines.
async fn raw(addr: &str, head: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("answered")
}

#[tokio::test]
async fn the_sample_manifest_serves_the_shop_and_hello_and_guards_the_catalogue() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with_file(&panal_tests::repo().join("panal.toml"), data.path())
        .env(&[("PANAL_JWT_SECRET", SECRET)])
        .start();
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    // The sample is the shop and a hello: no test fixture is reachable.
    let (s, _) = shop.get("/probe/kv/default/greeting", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let hello = shop
        .c
        .get(panal.at("/hello/x"))
        .send()
        .await
        .expect("hello");
    assert_eq!(hello.status(), StatusCode::OK);

    // Catalogue writes: no token 401, a plain user 403, an account the operator made
    // an admin 201.
    let new = json!({"name": "Honey", "price_cents": 750, "stock": 10});
    let (s, e) = shop.post("/products", None, new.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error"], "unauthorized");
    let patch = |token: Option<&str>| {
        let mut req = shop
            .c
            .patch(panal.at("/products/0123456789abcdef0123456789abcdef"))
            .json(&json!({"price_cents": 1}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    };
    let (s, _) = shop.send(patch(None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, ana) = shop.user("ana@example.com").await;
    let (s, e) = shop.post("/products", Some(&ana), new.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["error"], "forbidden");
    assert!(e["reason"].as_str().unwrap_or("").contains("admin"), "{e}");
    let (s, _) = shop.send(patch(Some(&ana))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (boss_id, boss) = shop.user("boss@example.com").await;
    panal.grant(&boss_id, "admin").await;
    let (s, p) = shop.post("/products", Some(&boss), new).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    let (s, p) = shop
        .send(
            shop.c
                .patch(panal.at(&format!("/products/{id}")))
                .bearer_auth(&boss)
                .json(&json!({"price_cents": 800})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    // Reads stay public.
    let (s, p) = shop.get(&format!("/products/{id}"), None).await;
    assert_eq!((s, p["price_cents"].clone()), (StatusCode::OK, json!(800)));

    // The admin API: its own address works; a web page's request or a rebound name not.
    let admin = panal.admin.trim_start_matches("http://").to_string();
    let ok = raw(
        &admin,
        &format!("GET /components HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let port = admin.rsplit(':').next().expect("port");
    let local = raw(
        &admin,
        &format!("GET /components HTTP/1.1\r\nhost: localhost:{port}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    for (what, head) in [
        (
            "a rebound name",
            format!("POST /components/user/rollback HTTP/1.1\r\nhost: evil.example:{port}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"),
        ),
        (
            "a web page",
            format!("POST /components/user/rollback HTTP/1.1\r\nhost: {admin}\r\norigin: http://evil.example\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"),
        ),
        (
            "no host",
            "GET /components HTTP/1.0\r\n\r\n".to_string(),
        ),
    ] {
        let answer = raw(&admin, &head).await;
        assert!(answer.starts_with("HTTP/1.1 403") || answer.starts_with("HTTP/1.0 403"), "{what}: {answer}");
        assert!(answer.contains("admin request refused"), "{what}: {answer}");
    }
    let log = panal.stop();
    assert!(!log.contains("rolled back"), "{log}");
}

fn limited_manifest() -> String {
    format!(
        r#"version = 1
[gateway]
header_timeout_ms = 300
idle_timeout_ms = 3000
body_timeout_ms = 500
max_connections = 64
max_connections_per_ip = 4

[components.hello]
source = "{hello}"
routes = ["/hello"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
"#,
        hello = component("hello"),
        probe = component("probe"),
    )
}

#[tokio::test]
async fn slow_and_greedy_connections_are_cut_off_on_both_listeners() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&limited_manifest(), data.path());
    let public = panal.url.trim_start_matches("http://").to_string();
    let admin = panal.admin.trim_start_matches("http://").to_string();
    let c = client();

    // Connections per client IP are capped; one more gets a clear 503 and is closed.
    let get = format!("GET /hello/x HTTP/1.1\r\nhost: {public}\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(public.as_str()).await.expect("connect");
        // A finished request makes sure the server counted this connection.
        s.write_all(get.as_bytes()).await.expect("request");
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(s);
    }
    let mut extra = TcpStream::connect(public.as_str()).await.expect("connect");
    let refused = read_until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("the fifth connection was neither served nor refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("max_connections_per_ip"), "{refused}");
    drop(held);
    // Places are given back: a new connection is served again.
    let back = panal_tests::eventually(Duration::from_secs(5), || async {
        let r = c.get(panal.at("/hello/again")).send().await.ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(back.is_some(), "closed connections were not given back");

    // An unfinished head is closed after header_timeout_ms, on both listeners.
    for addr in [&public, &admin] {
        let mut s = TcpStream::connect(addr.as_str()).await.expect("connect");
        s.write_all(b"GET /hello/x HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("half a head");
        let started = Instant::now();
        let answer = read_until_closed(&mut s, Duration::from_secs(10)).await;
        let answer = answer.unwrap_or_else(|| panic!("{addr}: a half head kept the connection"));
        assert!(!answer.contains("200 OK"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    // A kept-alive connection outlives the header timeout while idle, then is closed.
    let mut s = TcpStream::connect(public.as_str()).await.expect("connect");
    for _ in 0..2 {
        s.write_all(get.as_bytes()).await.expect("request");
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Longer than header_timeout_ms, shorter than idle_timeout_ms.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let closed = read_until_closed(&mut s, Duration::from_secs(15)).await;
    assert!(closed.is_some(), "an idle connection stayed open");

    // A body that trickles is answered 408 at body_timeout_ms.
    let mut s = TcpStream::connect(public.as_str()).await.expect("connect");
    s.write_all(
        format!(
            "PUT /probe/kv/default/slow HTTP/1.1\r\nhost: {public}\r\ncontent-length: 100\r\n\r\nonly ten b"
        )
        .as_bytes(),
    )
    .await
    .expect("head and some body");
    let answer = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("a slow body was never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout_ms"), "{answer}");
    let kept = client()
        .get(panal.at("/probe/kv/default/slow"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        kept.status(),
        StatusCode::NOT_FOUND,
        "a cut-off body was stored"
    );

    let log = panal.stop();
    assert!(log.contains("limit hit: connections"), "{log}");
    assert!(log.contains("limit hit: body_timeout_ms"), "{log}");
}

/// Clients that rotate their address (here: 600 loopback sources) each get a bucket of
/// a per-IP rate limit; the gateway keeps at most `max_rate_buckets` of them.
#[tokio::test]
async fn rotating_client_addresses_cannot_grow_the_rate_limiter() {
    let manifest = format!(
        r#"version = 1
[gateway]
max_rate_buckets = 200

[components.hello]
source = "{hello}"
routes = [{{ prefix = "/hello", rate_limit = {{ per_ip = "1/h" }} }}]
"#,
        hello = component("hello"),
    );
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::start(&manifest, data.path());
    let public: std::net::SocketAddr = panal
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let head = format!("GET /hello/x HTTP/1.1\r\nhost: {public}\r\nconnection: close\r\n\r\n");
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600u32 {
        let source = std::net::Ipv4Addr::new(127, 3, (i >> 8) as u8, (i & 0xff) as u8 + 1);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((source, 0).into())
            .expect("bind a loopback source");
        let mut s = socket.connect(public).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("request");
        let answer = read_until_closed(&mut s, Duration::from_secs(10))
            .await
            .expect("answered");
        *statuses.entry(answer[9..12].to_string()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get("200"), Some(&600), "{statuses:?}");
    let metrics = panal.metrics().await;
    let buckets: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("panal_gateway_rate_buckets "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bucket gauge in\n{metrics}"));
    assert!(buckets <= 200, "{buckets} buckets kept");
    assert!(buckets > 0);
    // The limit still holds for a client it remembers.
    let again = client()
        .get(panal.at("/hello/y"))
        .send()
        .await
        .expect("again");
    let first = again.status();
    let second = client()
        .get(panal.at("/hello/y"))
        .send()
        .await
        .expect("again");
    assert_eq!(
        (first, second.status()),
        (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS)
    );
    panal.stop();
}
