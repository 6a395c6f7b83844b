//! How a host proves itself to NATS and how it checks the server: credentials in the
//! URL (`nats://user:pass@host`, or `nats://token@host`), a `.creds` file (JWT and
//! nkey seed), an nkey seed file, and TLS (`tls://`, a CA file, a client certificate
//! and key). Every NATS connection Panal makes goes through [`Auth::options`].

use std::path::{Path, PathBuf};

use async_nats::{ConnectOptions, ServerAddr};

use crate::MsgError;

/// What a connection presents besides the URL's own credentials; every file is read
/// and checked before connecting, so a wrong path is an error naming it, not a retry
/// loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// A NATS `.creds` file (user JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey: Option<PathBuf>,
    /// CA certificates (PEM) the server's certificate must chain to; implies TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with `key`; implies TLS.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

/// The servers of a comma-separated URL list, without their credentials, and the
/// credentials the first one carried (every server of one list gets the same).
pub(crate) struct Servers {
    pub addrs: Vec<ServerAddr>,
    user: Option<(String, Option<String>)>,
}

impl Servers {
    /// Parse `url` (`nats://[user[:pass]@]host:port,...`, or `tls://`).
    pub fn parse(url: &str) -> Result<Self, MsgError> {
        let mut user = None;
        let mut addrs = Vec::new();
        for part in url.split(',').map(str::trim) {
            let addr: ServerAddr = part
                .parse()
                .map_err(|e| MsgError::Connection(format!("{}: {e}", redact(part))))?;
            let mut plain = addr.clone().into_inner();
            if let Some(name) = addr.username() {
                let pass = addr.password().map(decode);
                let got = (decode(name), pass);
                if user.as_ref().is_some_and(|u| *u != got) {
                    let why = "the NATS URLs carry different credentials: give every server of \
                               one list the same user";
                    return Err(MsgError::Connection(why.into()));
                }
                user = Some(got);
                // Neither half can fail on a URL that already has a host.
                let _ = plain.set_username("");
                let _ = plain.set_password(None);
            }
            let addr = plain
                .as_str()
                .parse()
                .map_err(|e| MsgError::Connection(format!("{}: {e}", redact(part))))?;
            addrs.push(addr);
        }
        Ok(Self { addrs, user })
    }

    /// Whether the URL carried a user or token.
    pub fn has_user(&self) -> bool {
        self.user.is_some()
    }
}

impl Auth {
    /// Whether anything here authenticates the client (a TLS client certificate does;
    /// a CA alone only checks the server).
    pub fn authenticates(&self) -> bool {
        self.creds.is_some() || self.nkey.is_some() || self.cert.is_some()
    }

    /// `options` with the URL's credentials and these files applied.
    pub(crate) async fn options(
        &self,
        servers: &Servers,
        mut options: ConnectOptions,
    ) -> Result<ConnectOptions, MsgError> {
        let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            MsgError::Connection(format!("the NATS {what} {}: {e}", path.display()))
        };
        match &servers.user {
            Some((user, Some(pass))) => {
                options = options.user_and_password(user.clone(), pass.clone())
            }
            Some((token, None)) => options = options.token(token.clone()),
            None => {}
        }
        if let Some(path) = &self.creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| bad("credentials file", path, &e))?;
        }
        if let Some(path) = &self.nkey {
            let text = std::fs::read_to_string(path).map_err(|e| bad("nkey file", path, &e))?;
            options = options.nkey(seed_in(&text).map_err(|e| bad("nkey file", path, &e))?);
        }
        if let Some(path) = &self.ca {
            readable(path).map_err(|e| bad("CA file", path, &e))?;
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                readable(cert).map_err(|e| bad("client certificate", cert, &e))?;
                readable(key).map_err(|e| bad("client key", key, &e))?;
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                let why = "a NATS client certificate needs both the certificate and its key \
                           (--nats-cert and --nats-key)";
                return Err(MsgError::Connection(why.into()));
            }
        }
        Ok(options)
    }
}

/// The nkey seed in `text`: the one line that starts with `SU` (a user seed), checked.
fn seed_in(text: &str) -> Result<String, String> {
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .ok_or("holds no user nkey seed (a line starting with SU)")?;
    nkeys::KeyPair::from_seed(seed).map_err(|e| format!("holds no valid nkey seed: {e}"))?;
    Ok(seed.to_string())
}

fn readable(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path).map(drop)
}

/// `%XX` escapes of a URL's user or password, decoded (a `@` or `:` in a password is
/// written `%40`, `%3A`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with any password or token replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &part[scheme + 3..at];
                let shown = match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => "***".to_string(),
                };
                format!("{}{shown}{}", &part[..scheme + 3], &part[at..])
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_are_decoded() {
        let s = Servers::parse("nats://app:p%40ss@127.0.0.1:4222, nats://app:p%40ss@h2:4223")
            .expect("parse");
        assert_eq!(s.user, Some(("app".into(), Some("p@ss".into()))));
        assert!(s.addrs.iter().all(|a| a.username().is_none()));
        let t = Servers::parse("tls://s3cret@h:4222").expect("parse");
        assert_eq!(t.user, Some(("s3cret".into(), None)));
        assert!(Servers::parse("nats://a:b@h1,nats://c:d@h2").is_err());
    }

    #[test]
    fn redact_hides_passwords_and_tokens() {
        assert_eq!(
            redact("nats://app:secret@h:1,tls://tok@h2:2,nats://h3"),
            "nats://app:***@h:1,tls://***@h2:2,nats://h3"
        );
    }

    #[test]
    fn a_seed_file_must_hold_a_user_seed() {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().expect("seed");
        assert_eq!(seed_in(&format!("# mine\n{seed}\n")), Ok(seed));
        assert!(seed_in("UABC\n").is_err());
        assert!(seed_in("SUNOTASEED\n").is_err());
    }
}
