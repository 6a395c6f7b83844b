//! HTTPS on the gateway, through the real binary with certificates the test makes: a
//! key that does not belong to the certificate is refused at start; HTTP/2 and
//! HTTP/1.1 are both served, as ALPN agrees; a certificate renewed on disk is served
//! without a restart.

use std::time::Duration;

use panal_tests::tls::{https_get, Certs};
use panal_tests::{component, eventually, refused, Panal};

fn manifest() -> String {
    format!(
        "version = 1\n[components.p]\nsource = \"{}\"\nroutes = [\"/p\"]\nkeyvalue = [\"b\"]\n",
        component("probe")
    )
}

#[tokio::test]
async fn the_gateway_serves_https_and_takes_a_renewed_certificate() {
    let certs = Certs::make();
    let (cert, key) = (certs.file("server.pem"), certs.file("server.key"));
    let wrong = certs.file("client.key");
    let err = refused(
        &manifest(),
        &[],
        &["--tls-cert", &cert, "--tls-key", &wrong],
    );
    assert!(err.contains("does not belong to the certificate"), "{err}");

    // The host reads the pair from files of the test's own, renewed below.
    let live = tempfile::tempdir().expect("dir");
    let (live_cert, live_key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(&cert, &live_cert).expect("copy");
    std::fs::copy(&key, &live_key).expect("copy");
    let data = tempfile::tempdir().expect("dir");
    let (c, k) = (
        live_cert.display().to_string(),
        live_key.display().to_string(),
    );
    let panal = Panal::with(&manifest(), data.path())
        .args(&["--tls-cert", &c, "--tls-key", &k])
        .start();
    let addr = panal
        .url
        .strip_prefix("https://")
        .expect("an https url")
        .to_string();
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let (status, agreed, body) = https_get(&addr, &certs.path("ca.pem"), alpn, "/p/config")
            .await
            .expect("https");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(agreed.as_deref(), Some(alpn));
    }
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://{addr}/p/config")).await;
    assert!(plain.is_err(), "{plain:?}");

    // Renewed on disk (by another CA, so the test can tell them apart): served next.
    let renewed = Certs::make();
    std::fs::copy(renewed.path("server.key"), &live_key).expect("copy");
    std::fs::copy(renewed.path("server.pem"), &live_cert).expect("copy");
    let taken = eventually(Duration::from_secs(10), || async {
        https_get(&addr, &renewed.path("ca.pem"), b"h2", "/p/config")
            .await
            .ok()
            .filter(|(status, ..)| *status == 200)
    })
    .await;
    assert!(
        taken.is_some(),
        "the renewed certificate was not served: {}",
        panal.log()
    );
    let old = https_get(&addr, &certs.path("ca.pem"), b"h2", "/p/config").await;
    assert!(old.is_err(), "the old certificate still served");
    assert!(panal.log().contains("TLS certificate reloaded"));
}
