//! NATS subject rules, shared by the manifest's checks and the brokers: matching with
//! `*` and `>`, whether one pattern covers or overlaps another, what a valid subject is
//! (and how long), and which subjects the hosts keep for themselves.

/// The longest subject a component may use, in bytes (NATS' own limit is the whole
/// protocol line; a subject near it makes the server drop the host's connection).
pub const MAX_SUBJECT_LEN: usize = 256;

/// The most tokens a subject may have.
pub const MAX_SUBJECT_TOKENS: usize = 16;

/// First tokens the hosts keep for themselves: NATS' own (`$JS.API`, `$KV`, `$O`,
/// `$SYS`: any token starting with `$`), reply inboxes, and the hosts' cluster calls
/// and deploys (`panal.CLUSTER.…`).
const RESERVED: [&str; 2] = ["_INBOX", "panal"];

/// Why `pattern` (a subject or a pattern with wildcards) can match a subject the hosts
/// keep for themselves, if it can: grants, streams and dead-letter subjects may not.
pub fn reserved(pattern: &str) -> Option<String> {
    let first = pattern.split('.').next().unwrap_or_default();
    let why = match first {
        "*" | ">" => "its first token is a wildcard, so it also matches",
        t if t.starts_with('$') => "it is one of",
        t if RESERVED.contains(&t) => "it is one of",
        _ => return None,
    };
    Some(format!(
        "`{pattern}` is reserved: {why} the subjects the hosts keep for themselves \
         (`$...` for JetStream and storage, `_INBOX.>` for replies, `panal.>` for the \
         cluster's calls and deploys)"
    ))
}

/// Why a component may not use `pattern` (with `wildcards` or not): not a valid
/// subject, or reserved; `None` when it may.
pub fn unusable(pattern: &str, wildcards: bool) -> Option<String> {
    if !valid_subject(pattern, wildcards) {
        let what = if wildcards {
            "a valid subject pattern"
        } else {
            "a subject (no wildcards)"
        };
        return Some(format!(
            "`{pattern}` is not {what}: tokens of printable characters without spaces, \
             at most {MAX_SUBJECT_LEN} bytes and {MAX_SUBJECT_TOKENS} tokens"
        ));
    }
    reserved(pattern)
}

/// Whether `subject` has the shape of a reply inbox (`_INBOX.` and a valid subject),
/// the only place a component's reply may go.
pub fn inbox_shaped(subject: &str) -> bool {
    subject.starts_with("_INBOX.") && valid_subject(subject, false)
}

/// Whether `subject` matches `pattern` (`*` one token, `>` one or more trailing tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `inner` matches is also matched by `outer`.
pub fn pattern_covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject is matched by both `a` and `b`.
pub fn patterns_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `subject` is a valid subject to publish to (no wildcards, no empty tokens,
/// at most [`MAX_SUBJECT_LEN`] bytes and [`MAX_SUBJECT_TOKENS`] tokens).
pub fn valid_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_LEN
        && tokens.len() <= MAX_SUBJECT_TOKENS
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                && match *t {
                    "*" => wildcards,
                    ">" => wildcards && i == tokens.len() - 1,
                    t => !t.contains('*') && !t.contains('>'),
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("jobs.*", "jobs.done"));
        assert!(!subject_matches("jobs.*", "jobs.done.late"));
        assert!(subject_matches("jobs.>", "jobs.done.late"));
        assert!(!subject_matches("jobs.>", "jobs"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("*.b.>", "x.b.c.d"));
    }

    #[test]
    fn patterns_cover_and_overlap() {
        assert!(pattern_covers("jobs.>", "jobs.*"));
        assert!(pattern_covers("jobs.>", "jobs.done.late"));
        assert!(pattern_covers("jobs.*", "jobs.done"));
        assert!(!pattern_covers("jobs.*", "jobs.>"));
        assert!(!pattern_covers("jobs.done", "jobs.*"));
        assert!(!pattern_covers("jobs.>", "jobs"));
        assert!(patterns_overlap("jobs.*", "jobs.done"));
        assert!(patterns_overlap("*.done", "jobs.>"));
        assert!(!patterns_overlap("jobs.*", "mail.*"));
        assert!(!patterns_overlap("jobs.*", "jobs.a.b"));
    }

    #[test]
    fn subjects_are_checked() {
        assert!(valid_subject("jobs.created", false));
        assert!(!valid_subject("jobs.*", false));
        assert!(valid_subject("jobs.*", true));
        assert!(valid_subject("jobs.>", true));
        assert!(!valid_subject("jobs.>.x", true));
        assert!(!valid_subject("jobs..x", true));
        assert!(!valid_subject("", true));
        assert!(!valid_subject("a b", true));
        assert!(!valid_subject(&"a".repeat(MAX_SUBJECT_LEN + 1), false));
        assert!(!valid_subject(
            &["t"; MAX_SUBJECT_TOKENS + 1].join("."),
            false
        ));
    }

    #[test]
    fn the_hosts_subjects_are_reserved() {
        for p in [
            ">",
            "*.>",
            "*.call.x",
            "$KV.>",
            "$JS.API.>",
            "_INBOX.>",
            "panal.>",
            "panal.t.call.x",
        ] {
            assert!(reserved(p).is_some(), "{p}");
        }
        for p in ["orders.>", "jobs.*", "panaly.x", "x.panal.>"] {
            assert!(reserved(p).is_none(), "{p}");
        }
        assert!(inbox_shaped("_INBOX.abc.1"));
        assert!(!inbox_shaped("panal.t.call.x"));
        assert!(!inbox_shaped("_INBOX.*"));
    }
}
