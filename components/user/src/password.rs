//! Password hashing with Argon2id (PHC string format), at the OWASP minimum parameters:
//! 19 MiB of memory, 2 passes, 1 lane. The PHC string carries its own parameters, so
//! raising them later still verifies old hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB.
const M_COST: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// A hash of a throwaway password ("panal-dummy-password", zero salt) at the same
/// parameters. Login verifies against it when
/// the email is unknown, so that an unknown email costs as much time as a wrong password
/// and response times do not reveal which emails are registered.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
    AAAAAAAAAAAAAAAAAAAAAA$MyukUDSMyjbno/uKY3o5kunbtoPeRgLsqaXTqLPfxW0";

fn hasher() -> Result<Argon2<'static>, String> {
    let params = Params::new(M_COST, T_COST, P_COST, None).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with `salt` (16 random bytes from the caller) → PHC string.
pub fn hash(password: &str, salt: &[u8]) -> Result<String, String> {
    let salt = SaltString::encode_b64(salt).map_err(|e| e.to_string())?;
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`; a malformed `phc` never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(argon) = hasher() else { return false };
    argon.verify_password(password.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash("correct horse", &[7u8; 16]).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct hors", &phc));
        assert!(!verify("correct horse", "not a phc string"));
    }

    #[test]
    fn dummy_hash_is_well_formed_and_same_cost() {
        let parsed = PasswordHash::new(DUMMY_HASH).expect("parse");
        let want = hash("x", &[0u8; 16]).expect("hash");
        let want = PasswordHash::new(&want).expect("parse");
        assert_eq!(parsed.params, want.params);
        assert_eq!(parsed.algorithm, want.algorithm);
        assert!(!verify("", DUMMY_HASH));
        assert!(verify("panal-dummy-password", DUMMY_HASH));
    }

    /// Prints the native cost of one hash (`cargo test -p user --release -- --nocapture`).
    #[test]
    fn cost() {
        let start = std::time::Instant::now();
        let phc = hash("password123", &[1u8; 16]).expect("hash");
        eprintln!("argon2id hash took {:?}", start.elapsed());
        assert!(verify("password123", &phc));
    }
}
