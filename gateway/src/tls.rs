//! HTTPS for a listener: rustls with HTTP/2 and HTTP/1.1 offered by ALPN, and a
//! certificate that follows its files. The pair is read and checked (the key must match
//! the certificate) when the listener starts, which refuses a bad pair; afterwards a
//! handshake at most once a [`RECHECK`] looks at the files' modification times, and a
//! renewed pair that loads and matches replaces the old one without a restart (one that
//! does not is logged, and the old one keeps serving).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often a handshake may look for a renewed certificate.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why a certificate and key cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The acceptor of a listener that serves HTTPS.
pub type Acceptor = tokio_rustls::TlsAcceptor;

/// An acceptor for the PEM certificate chain at `cert` and private key at `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Acceptor, TlsError> {
    let resolver = Reloading::new(cert, key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Acceptor::from(Arc::new(config)))
}

/// The current pair, and when the files were last looked at.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    checked: Instant,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

impl Reloading {
    fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pair = load(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(pair),
            seen: Mutex::new(Seen {
                checked: Instant::now(),
                modified: modified(cert, key),
            }),
        })
    }

    /// Take a renewed pair when the files changed since the last look.
    fn recheck(&self) {
        let mut seen = self.seen.lock();
        if seen.checked.elapsed() < RECHECK {
            return;
        }
        seen.checked = Instant::now();
        let now = modified(&self.cert, &self.key);
        if now == seen.modified {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(pair) => {
                seen.modified = now;
                self.current.store(Arc::new(pair));
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            // A renewal half-written (the key before the certificate) is tried again.
            Err(e) => {
                tracing::warn!(error = %e, "renewed TLS certificate not taken; the old one serves")
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.recheck();
        Some(self.current.load_full())
    }
}

fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(cert), at(key))
}

/// The certificate chain and key in the PEM files, checked to belong together.
fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        TlsError(format!("{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read the certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cannot read the certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("no certificate in", cert, &"no CERTIFICATE block"));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read the key", key, &e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| bad("unsupported key", key, &e))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|e| {
        TlsError(format!(
            "the key {} does not belong to the certificate {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(pair)
}
