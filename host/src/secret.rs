//! The JWT secret of an embedded run: when the manifest sets none, one is generated on
//! first start and kept in the data dir (owner-only), so tokens outlive restarts.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context as _;

/// The secret in `path`, created with 32 random bytes (hex) only if the file does not
/// exist. Any other problem with it is an error: silently replacing a secret would sign
/// every user out.
pub fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => {
            let existing = existing.trim();
            anyhow::ensure!(
                existing.len() >= 16,
                "the JWT secret in {} is shorter than 16 characters; fix or delete it",
                path.display()
            );
            return Ok(existing.to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the JWT secret {}", path.display()))
        }
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read random bytes for the JWT secret")?;
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    // create_new: two hosts starting on one data dir never overwrite each other's secret.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write the JWT secret to {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a JWT secret (set [auth] jwt_secret to choose one)");
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("jwt-secret");
        let first = load_or_create(&path).expect("create");
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(&path).expect("load"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_secret_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("jwt-secret");
        std::fs::write(&path, "short").expect("write");
        assert!(load_or_create(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "short");
    }
}
