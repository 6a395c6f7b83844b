//! Password guessing and sign-up floods against the sample manifest (`panal.toml`),
//! from several client addresses on loopback (127.0.0.2, .3, .4): an address that keeps
//! failing on an account is held back with 429 and `Retry-After` while the owner, from
//! another address, still logs in; one address gets 20 logins a minute and ten sign-ups
//! at once, then 429 with `Retry-After`; tokens carry `iat`.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;
use panal_tests::shop::SECRET;
use panal_tests::Panal;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A client whose connections come from `127.0.0.N`.
fn from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .build()
        .expect("client")
}

/// POST `body` to `path`: status, `Retry-After` (seconds) and JSON body.
async fn post(
    c: &reqwest::Client,
    panal: &Panal,
    path: &str,
    body: Value,
) -> (StatusCode, Option<u64>, Value) {
    let resp = c
        .post(panal.at(path))
        .json(&body)
        .send()
        .await
        .expect("post");
    let wait = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (
        resp.status(),
        wait,
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// The first `free` answers were `ok`; the rest `ok` at most twice more (a token may
/// refill meanwhile) and otherwise 429 with `Retry-After`.
fn assert_rate_limited(answers: &[(u16, Option<u64>)], free: usize, ok: u16) {
    assert!(answers[..free].iter().all(|(s, _)| *s == ok), "{answers:?}");
    let rest = &answers[free..];
    let limited = rest
        .iter()
        .filter(|(s, w)| *s == 429 && w.is_some())
        .count();
    let passed = rest.iter().filter(|(s, _)| *s == ok).count();
    assert!(
        passed <= 2 && limited + passed == rest.len() && limited > 0,
        "{answers:?}"
    );
}

fn login(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

#[tokio::test]
async fn guessing_is_held_back_per_address_and_floods_get_429() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with_file(&panal_tests::repo().join("panal.toml"), data.path())
        .env(&[("PANAL_JWT_SECRET", SECRET)])
        .start();
    let (owner, attacker) = (from(1), from(2));
    let ana = json!({"email": "ana@example.com", "name": "Ana", "password": "correct horse"});
    let (s, _, u) = post(&owner, &panal, "/users", ana).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");

    // Five wrong passwords from one address answer 401; then it waits, doubling.
    for _ in 0..5 {
        let (s, _, e) = post(
            &attacker,
            &panal,
            "/users/login",
            login("ana@example.com", "guess"),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    }
    let (s, wait, e) = post(
        &attacker,
        &panal,
        "/users/login",
        login("ana@example.com", "correct horse"),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert!(
        wait.is_some_and(|w| (1..=2).contains(&w)),
        "Retry-After {wait:?}"
    );

    // The owner, elsewhere, is not locked out; the token says when it was issued.
    let (s, _, t) = post(
        &owner,
        &panal,
        "/users/login",
        login("ana@example.com", "correct horse"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let token = t["token"].as_str().expect("token");
    let claims = token.split('.').nth(1).expect("claims");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .expect("base64"),
    )
    .expect("json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let iat = claims["iat"].as_u64().expect("iat");
    assert!(
        iat.abs_diff(now) < 120 && claims["exp"].as_u64() > Some(iat),
        "{claims}"
    );

    // One address trying many accounts: 20 a minute, then the gateway's 429.
    let sprayer = from(3);
    let mut answered = Vec::new();
    for i in 0..25 {
        let (s, wait, _) = post(
            &sprayer,
            &panal,
            "/users/login",
            login(&format!("x{i}@example.com"), "guess"),
        )
        .await;
        answered.push((s.as_u16(), wait));
    }
    // The first 20 are tried; then 429, with a token refilled now and then (one every
    // 3 s) on a slow machine.
    assert_rate_limited(&answered, 20, 401);

    // Sign-ups: a burst of ten from one address, then 429.
    let flooder = from(4);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let user =
            json!({"email": format!("f{i}@example.com"), "name": "F", "password": "long enough"});
        let (s, wait, _) = post(&flooder, &panal, "/users", user).await;
        statuses.push((s.as_u16(), wait));
    }
    assert_rate_limited(&statuses, 10, 201);
    panal.stop();
}
