//! NATS subject rules, shared by the manifest's checks and the brokers: matching with
//! `*` and `>`, whether one pattern covers or overlaps another, and what a valid
//! subject is.

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

/// Whether `subject` is a valid subject to publish to (no wildcards, no empty tokens).
pub fn valid_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    !subject.is_empty()
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
    }
}
