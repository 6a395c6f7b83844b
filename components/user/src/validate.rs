//! Validation of the user service's request bodies (pure, unit-tested natively).

use panal_sdk::{ApiError, Validator};

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Argon2 accepts any length, but a megabyte "password" is a request to burn memory.
pub const MAX_PASSWORD_CHARS: usize = 1024;
pub const MAX_NAME_CHARS: usize = 200;
/// RFC 5321's limit on a forward path.
const MAX_EMAIL_LEN: usize = 254;

/// A registration that passed validation.
#[derive(Debug, PartialEq)]
pub struct Registration {
    /// Trimmed, as the user typed it (shown back to them).
    pub email: String,
    pub name: String,
    pub password: String,
}

/// Checks `{email, name, password}` and lists every bad field.
pub fn registration(body: &[u8]) -> Result<Registration, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &["email", "name", "password"])?;
    let email = v.string(&obj, "email").map(|e| e.trim().to_string());
    let name = v.string(&obj, "name").map(|n| n.trim().to_string());
    let password = v.string(&obj, "password");
    if let Some(email) = &email {
        if !is_valid_email(email) {
            v.add("email", "must be a valid email address");
        }
    }
    if let Some(name) = &name {
        if name.is_empty() {
            v.add("name", "must not be empty");
        } else if name.chars().count() > MAX_NAME_CHARS {
            v.add(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
        }
    }
    if let Some(password) = &password {
        let n = password.chars().count();
        if n < MIN_PASSWORD_CHARS {
            v.add(
                "password",
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            );
        } else if n > MAX_PASSWORD_CHARS {
            v.add(
                "password",
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            );
        }
    }
    v.finish()?;
    match (email, name, password) {
        (Some(email), Some(name), Some(password)) => Ok(Registration {
            email,
            name,
            password,
        }),
        // finish() passed, so all three were present.
        _ => Err(ApiError::internal("validation state")),
    }
}

/// Checks `{email, password}` (types only: a wrong value is a 401, not a 400).
pub fn login(body: &[u8]) -> Result<(String, String), ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &["email", "password"])?;
    let email = v.string(&obj, "email");
    let password = v.string(&obj, "password");
    v.finish()?;
    match (email, password) {
        (Some(email), Some(password)) => Ok((email.trim().to_string(), password)),
        _ => Err(ApiError::internal("validation state")),
    }
}

/// The key under which an email is unique: lowercased, so `A@x.io` and `a@X.IO` collide.
pub fn email_key(email: &str) -> String {
    format!("email:{}", email.trim().to_lowercase())
}

/// A pragmatic check, not RFC 5322: one `@`, a non-empty local part without spaces or
/// control characters, and a domain of dot-separated labels (letters, digits, hyphens,
/// not starting or ending with a hyphen) with at least two labels.
pub fn is_valid_email(email: &str) -> bool {
    if email.len() > MAX_EMAIL_LEN {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"@,;:<>()[]\\\"".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "X_Y@EXAMPLE.COM",
        ] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a@@b.co",
            "a b@c.co",
            "a@b..co",
            "a@-b.co",
            "a@b.co.",
            ".a@b.co",
            "a..b@c.co",
            "a@b_c.co",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
        assert_eq!(email_key(" Ann@Example.COM "), "email:ann@example.com");
    }

    #[test]
    fn registration_lists_all_fields() {
        let err = registration(br#"{"email":"nope","name":"  ","password":"short"}"#)
            .expect_err("invalid");
        assert_eq!(
            err.to_value(),
            json!({"error":"validation failed","fields":{
                "email":"must be a valid email address",
                "name":"must not be empty",
                "password":"must be at least 8 characters"}})
        );
        let err =
            registration(br#"{"email":"a@b.co","password":12,"admin":true}"#).expect_err("invalid");
        assert_eq!(
            err.body["fields"],
            json!({"name":"is required","password":"must be a string","admin":"unknown field"})
        );
    }

    #[test]
    fn registration_ok() {
        let r = registration(br#"{"email":" A@b.co ","name":" Ann ","password":"12345678"}"#)
            .expect("valid");
        assert_eq!(
            r,
            Registration {
                email: "A@b.co".into(),
                name: "Ann".into(),
                password: "12345678".into()
            }
        );
        // Length counts characters, not bytes.
        assert!(
            registration(r#"{"email":"a@b.co","name":"n","password":"ééééééé"}"#.as_bytes())
                .is_err()
        );
    }

    #[test]
    fn login_body() {
        assert_eq!(
            login(br#"{"email":"a@b.co","password":"x"}"#).expect("ok"),
            ("a@b.co".to_string(), "x".to_string())
        );
        let err = login(br#"{"email":"a@b.co"}"#).expect_err("missing");
        assert_eq!(err.body["fields"], json!({"password":"is required"}));
    }
}
