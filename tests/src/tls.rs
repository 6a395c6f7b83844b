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
