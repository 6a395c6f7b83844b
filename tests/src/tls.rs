//! Certificates of the test's own, made with the `openssl` command: a CA, a server
//! certificate for 127.0.0.1 and localhost, and a client certificate, all signed by
//! that CA and valid for a day.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A new P-256 key, unencrypted.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A folder of PEM files: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Make them (panics when `openssl` is missing or fails).
    pub fn make() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ca = [
            "req",
            "-x509",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=panal-test-ca",
        ];
        openssl(d, &[&ca[..], &NEW_KEY, &["-days", "1"]].concat());
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "subjectAltName=DNS:panal-host\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).expect("write ext");
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN={name}");
            let request = ["req", "-keyout", &key, "-out", &csr, "-subj", &subject];
            openssl(d, &[&request[..], &NEW_KEY].concat());
            let ext = format!("{name}.ext");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "1",
                    "-extfile",
                    &ext,
                ],
            );
        }
        Self { dir }
    }

    /// The path of one of the files (`ca.pem`, `server.key`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The path of one of the files, as text.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET `path` from `addr` over HTTPS, trusting only the CA in `ca` and offering only
/// `alpn` (`h2` or `http/1.1`): the status, the protocol agreed and the body; or why
/// the connection failed.
pub async fn https_get(
    addr: &str,
    ca: &Path,
    alpn: &[u8],
    path: &str,
) -> Result<(u16, Option<Vec<u8>>, Vec<u8>), String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let ip: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let tls = connector
        .connect(ServerName::IpAddress(ip.ip().into()), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let agreed = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let fail = |e: hyper::Error| e.to_string();
    let resp = if agreed.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(fail)?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{addr}{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        send.send_request(req).await.map_err(fail)?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(fail)?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        send.send_request(req).await.map_err(fail)?
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(fail)?.to_bytes();
    Ok((status, agreed, body.to_vec()))
}
