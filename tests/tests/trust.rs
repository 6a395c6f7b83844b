//! Trust between hosts and NATS, through the real binary and real `nats-server`s: a host
//! refuses to join a cluster over a NATS server that lets anyone in (unless the
//! operator says `--insecure-cluster`, which is warned), or one whose `max_payload`
//! leaves no room for a call; hosts authenticate with a password in the URL, an nkey
//! seed file, and TLS with a CA and a client certificate the test makes; messaging and
//! the cluster connect as different NATS users, in different accounts (as the README
//! advises), and the components' account does not reach the hosts' calls; a wrong password is refused with the
//! server's reason; a client without credentials is kept out.

use futures::StreamExt;
use panal_tests::tls::Certs;
use panal_tests::{client, component, free_port, refused, NatsServer, Panal};

fn manifest(nats: &str) -> String {
    let probe = component("probe");
    format!(
        r#"version = 1

[cluster]
name = "trust"
nats = "{nats}"

[components.front]
source = "{probe}"
routes = ["/front"]
outbound = ["back"]
keyvalue = ["f"]

[components.back]
source = "{probe}"
routes = ["/back"]
keyvalue = ["b"]
config = {{ who = "back" }}
"#
    )
}

#[tokio::test]
async fn an_open_nats_is_refused_unless_insecure_and_a_tiny_max_payload_always() {
    let open = NatsServer::start();
    let err = refused(&manifest(&open.url), &[], &[]);
    assert!(err.contains("without authentication"), "{err}");
    assert!(err.contains("--insecure-cluster"), "{err}");

    let data = tempfile::tempdir().expect("dir");
    let host = Panal::with(&manifest(&open.url), data.path())
        .args(&["--insecure-cluster"])
        .start();
    let log = host.stop();
    assert!(
        log.contains("WARN")
            && log.contains("--insecure-cluster: the cluster's NATS lets anyone in"),
        "{log}"
    );

    let tiny = NatsServer::start_with(free_port(), "max_payload: 1024");
    let err = refused(&manifest(&tiny.url), &[], &["--insecure-cluster"]);
    assert!(err.contains("max_payload 1024"), "{err}");
}

#[tokio::test]
async fn hosts_authenticate_with_a_password_or_an_nkey_and_strangers_are_kept_out() {
    let key = nkeys::KeyPair::new_user();
    let seeds = tempfile::tempdir().expect("dir");
    let seed = seeds.path().join("host.nk");
    std::fs::write(&seed, key.seed().expect("seed")).expect("write seed");
    let monitor = free_port();
    let port = free_port();
    let _nats = NatsServer::start_with(
        port,
        &format!(
            "http: \"127.0.0.1:{monitor}\"\naccounts {{\n\
             HOSTS: {{ jetstream: enabled, users: [\n\
               {{ user: \"panal\", password: \"hosts-pw\" }}, {{ nkey: \"{}\" }} ] }}\n\
             APPS: {{ jetstream: enabled, users: [ {{ user: \"app\", password: \"app-pw\" }} ] }}\n\
             }}\n",
            key.public_key()
        ),
    );
    let at = |user: &str| format!("nats://{user}@127.0.0.1:{port}");

    let err = refused(&manifest(&at("panal:wrong")), &[], &[]);
    assert!(err.contains("did not let this host in"), "{err}");
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password leaked into the error: {err}"
    );

    let a_dir = tempfile::tempdir().expect("dir");
    let a = Panal::with(&manifest(&at("panal:hosts-pw")), a_dir.path())
        .args(&["--components", "front", "--nats", &at("app:app-pw")])
        .start();
    let b_dir = tempfile::tempdir().expect("dir");
    let seed_arg = seed.display().to_string();
    let b = Panal::with(&manifest(&format!("nats://127.0.0.1:{port}")), b_dir.path())
        .args(&["--components", "back", "--cluster-nkey", &seed_arg])
        .start();

    // A's gateway reaches `back` on B over the authenticated connections.
    let who = client()
        .get(a.at("/back/config/who"))
        .send()
        .await
        .expect("get");
    assert_eq!(who.status(), 200, "{}", a.log());
    assert!(who.text().await.expect("body").contains("back"));

    // Messaging and the cluster are different NATS users, B's cluster user is the nkey.
    let connz: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{monitor}/connz?auth=1"))
        .send()
        .await
        .expect("connz")
        .json()
        .await
        .expect("json");
    let users: Vec<&str> = connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["authorized_user"].as_str())
        .collect();
    for user in ["panal", "app", key.public_key().as_str()] {
        assert!(users.contains(&user), "{user} not among {users:?}");
    }
    assert!(
        !a.log().contains("hosts-pw") && !a.log().contains("app-pw"),
        "a password was logged"
    );

    // The components' account does not reach the hosts' calls.
    let app = async_nats::ConnectOptions::with_user_and_password("app".into(), "app-pw".into())
        .connect(format!("127.0.0.1:{port}"))
        .await
        .expect("app user");
    let call = app.request("panal.trust.call.back", "x".into()).await;
    assert!(
        call.is_err(),
        "the app account reached a host's call: {call:?}"
    );
    // Nor the hosts' buckets: desired versions, roles (and storage, were it on NATS).
    let js = async_nats::jetstream::new(app.clone());
    for bucket in ["panal-trust-desired", "panal-trust-roles"] {
        let kv = js.get_key_value(bucket).await;
        assert!(kv.is_err(), "the app account opened {bucket}");
    }

    // A client without credentials is not let in.
    assert!(async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .is_err());
    drop((a, b));
}

#[tokio::test]
async fn a_host_reaches_nats_over_tls_with_a_ca_and_a_client_certificate() {
    let certs = Certs::make();
    let port = free_port();
    let _nats = NatsServer::start_with(
        port,
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}\n\
             authorization {{ users: [ {{ user: \"panal\", password: \"tls-pw\" }} ] }}\n",
            certs.file("server.pem"),
            certs.file("server.key"),
            certs.file("ca.pem")
        ),
    );
    let url = format!("tls://panal:tls-pw@127.0.0.1:{port}");
    let (ca, cert, key) = (
        certs.file("ca.pem"),
        certs.file("client.pem"),
        certs.file("client.key"),
    );

    // The server's certificate is not trusted without the CA.
    let err = refused(
        &manifest(&url),
        &[],
        &["--nats-cert", &cert, "--nats-key", &key],
    );
    assert!(err.contains("did not let this host in"), "{err}");
    // The server wants a client certificate.
    let err = refused(&manifest(&url), &[], &["--nats-ca", &ca]);
    assert!(err.contains("did not let this host in"), "{err}");
    // A certificate file that is not there is named.
    let err = refused(&manifest(&url), &[], &["--nats-ca", "/nonexistent/ca.pem"]);
    assert!(
        err.contains("the NATS CA file /nonexistent/ca.pem"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("dir");
    let host = Panal::with(&manifest(&url), dir.path())
        .env(&[("PANAL_NATS_CA", ca.as_str())])
        .args(&["--nats-cert", &cert, "--nats-key", &key])
        .start();
    let who = client()
        .get(host.at("/back/config/who"))
        .send()
        .await
        .expect("get");
    assert_eq!(who.status(), 200, "{}", host.log());
}

#[test]
fn an_admin_api_beyond_loopback_needs_a_token() {
    let err = refused(
        &manifest("nats://127.0.0.1:1"),
        &[],
        &["--admin-listen", "0.0.0.0:0"],
    );
    assert!(
        err.contains("is not a loopback address: set PANAL_ADMIN_TOKEN"),
        "{err}"
    );
}

/// A call frame as hosts send it: the head's length, the head (JSON), the body.
fn frame(head: &serde_json::Value, body: &[u8]) -> bytes::Bytes {
    let head = serde_json::to_vec(head).expect("json");
    let mut out = (head.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out.into()
}

/// The status in the head of an answer frame.
fn status_of(answer: &async_nats::Message) -> u64 {
    let len = u32::from_be_bytes(answer.payload[..4].try_into().expect("4 bytes")) as usize;
    let head: serde_json::Value =
        serde_json::from_slice(&answer.payload[4..4 + len]).expect("head");
    head["status"].as_u64().expect("status")
}

/// A client on the NATS network (here an open one, the worst case) cannot forge a call
/// (unsealed, sealed with another key, or a replay of a real one), nor a deploy (a
/// desired version of its own, or bytes under another version's name); each refusal
/// is counted in `/metrics`, and the host keeps serving what it served.
#[tokio::test]
async fn a_client_on_nats_cannot_forge_a_call_or_a_deploy() {
    let nats = NatsServer::start();
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let args = |only: &'static str| ["--components", only, "--insecure-cluster"];
    let a = Panal::with(&manifest(&nats.url), a_dir.path())
        .args(&args("front"))
        .start();
    let b = Panal::with(&manifest(&nats.url), b_dir.path())
        .args(&args("back"))
        .start();
    let c = client();
    let served = c.get(a.at("/back/config/who")).send().await.expect("get");
    assert_eq!(served.status(), 200, "{}", a.log());
    let version = served.headers()["x-panal-version"].clone();

    let outside = async_nats::connect(&nats.url).await.expect("connect");
    let subject = "panal.trust.call.back";
    let head = serde_json::json!({
        "method": "GET", "uri": "http://back/back/config/who",
        "headers": [["x-panal-user-id", "ana"]], "depth": 0,
    });
    // Unsealed, and sealed with a key of the forger's own.
    let unsealed = outside
        .request(subject, frame(&head, b""))
        .await
        .expect("answer");
    assert_eq!(status_of(&unsealed), 403);
    let mut forged = async_nats::HeaderMap::new();
    forged.insert(
        "Panal-Seal",
        format!("1.{}.{:032x}.{}", 1, 7, "ab".repeat(32)).as_str(),
    );
    let answer = outside
        .request_with_headers(subject, forged, frame(&head, b""))
        .await
        .expect("answer");
    assert_eq!(status_of(&answer), 403);

    // A real call, seen on the wire and sent again, is refused as a replay.
    let mut watch = outside.subscribe(subject).await.expect("subscribe");
    panal_tests::synced(&outside).await;
    let real = c
        .get(a.at("/front/call?url=http://back/back/config/who"))
        .send()
        .await
        .expect("call");
    assert_eq!(real.status(), 200);
    let seen = watch.next().await.expect("the real call");
    let replayed = outside
        .request_with_headers(
            subject,
            seen.headers.clone().expect("sealed"),
            seen.payload.clone(),
        )
        .await
        .expect("answer");
    assert_eq!(status_of(&replayed), 403);

    // A desired version of the forger's own: no seal, routes without roles.
    let js = async_nats::jetstream::new(outside.clone());
    let desired = js
        .get_key_value("panal-trust-desired")
        .await
        .expect("bucket");
    let record = serde_json::json!({
        "sha256": "00".repeat(32), "by": "mallory",
        "routes": [{ "prefix": "/open", "methods": null, "protected": false }],
    });
    desired
        .put("back", serde_json::to_vec(&record).expect("json").into())
        .await
        .expect("put");
    forge_roles(&a, &b, &js).await;
    let counted = panal_tests::eventually(std::time::Duration::from_secs(10), || async {
        let m = b.metrics().await;
        m.contains("panal_cluster_refused_total{reason=\"unsigned\"} 3")
            .then_some(m)
    })
    .await;
    let metrics = counted.unwrap_or_else(|| panic!("refusals not counted: {}", b.log()));
    assert!(
        metrics.contains("panal_cluster_refused_total{reason=\"bad_seal\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("panal_cluster_refused_total{reason=\"replayed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("panal_cluster_refused_total{reason=\"stale\"} 1"),
        "{metrics}"
    );
    let still = c.get(a.at("/back/config/who")).send().await.expect("get");
    assert_eq!(still.headers()["x-panal-version"], version);
    assert_eq!(
        c.get(a.at("/open")).send().await.expect("get").status(),
        404
    );
    drop((a, b));
}

/// The roles `host` holds, by its admin API.
async fn roles_on(host: &Panal) -> serde_json::Value {
    panal_tests::get_json(&client(), format!("{}/roles", host.admin)).await["grants"].clone()
}

/// A role granted on one host is held on the other, and so is its revocation; the
/// revoked table replayed into the bucket, and a table of the forger's own, are not.
async fn forge_roles(a: &Panal, b: &Panal, js: &async_nats::jetstream::Context) {
    let c = client();
    let wait = std::time::Duration::from_secs(10);
    let granted = c
        .put(format!("{}/roles/ana/admin", a.admin))
        .send()
        .await
        .expect("grant");
    assert_eq!(
        granted.status(),
        200,
        "{}",
        granted.text().await.unwrap_or_default()
    );
    let held = panal_tests::eventually(wait, || async {
        (roles_on(b).await == serde_json::json!({"ana": ["admin"]})).then_some(())
    });
    assert!(
        held.await.is_some(),
        "the grant did not reach b: {}",
        b.log()
    );
    let bucket = js.get_key_value("panal-trust-roles").await.expect("bucket");
    let sealed = bucket.get("table").await.expect("get").expect("a table");
    let revoked = c
        .delete(format!("{}/roles/ana/admin", b.admin))
        .send()
        .await
        .expect("revoke");
    assert_eq!(
        revoked.status(),
        200,
        "{}",
        revoked.text().await.unwrap_or_default()
    );
    let gone = panal_tests::eventually(wait, || async {
        (roles_on(a).await == serde_json::json!({})).then_some(())
    });
    assert!(
        gone.await.is_some(),
        "the revocation did not reach a: {}",
        a.log()
    );
    // One at a time: the bucket keeps only the newest record, so a record overwritten
    // before a host's watch delivered it is never seen there.
    bucket.put("table", sealed).await.expect("replay");
    let stale = panal_tests::eventually(wait, || async {
        let m = b.metrics().await;
        m.contains("panal_cluster_refused_total{reason=\"stale\"} 1")
            .then_some(())
    });
    assert!(stale.await.is_some(), "{}", b.log());
    let own = serde_json::json!({"grants": {"mallory": ["admin"]}});
    let own = serde_json::to_vec(&own).expect("json");
    bucket.put("table", own.into()).await.expect("forge");
    // Refused on arrival (the caller counts it among the unsigned); nothing held.
    let unsigned = panal_tests::eventually(wait, || async {
        let m = b.metrics().await;
        m.contains("panal_cluster_refused_total{reason=\"unsigned\"} 3")
            .then_some(())
    });
    assert!(unsigned.await.is_some(), "{}", b.log());
    assert_eq!(roles_on(b).await, serde_json::json!({}));
}

#[test]
fn a_cluster_needs_a_key_of_32_bytes() {
    let err = refused(
        &manifest("nats://127.0.0.1:1"),
        &[("PANAL_CLUSTER_KEY", "")],
        &[],
    );
    assert!(err.contains("no cluster key"), "{err}");
    let err = refused(
        &manifest("nats://127.0.0.1:1"),
        &[("PANAL_CLUSTER_KEY", "short")],
        &[],
    );
    assert!(err.contains("it needs at least 32"), "{err}");
}
