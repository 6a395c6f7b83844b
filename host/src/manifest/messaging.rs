//! Validation of messaging: the `[messaging]` backend and its streams, and each
//! component's `messaging = { publish = [...], subscribe = [...] }` grants, durable
//! subscriptions resolved to the stream that captures them.

use std::collections::BTreeMap;

use toml::Spanned;

use super::raw::{RawMessaging, RawMessagingBackend, RawStream, RawSubscription};
use super::subject::{pattern_covers, patterns_overlap, subject_matches, unusable, valid_subject};
use super::validate::{substitute_env, Checker};
use super::{Durable, MessagingBackend, StreamSpec, Subscription};

/// Default deliveries of a durable subscription before its message is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

pub(super) fn backend(
    c: &mut Checker,
    raw: Option<RawMessagingBackend>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (MessagingBackend, Vec<StreamSpec>) {
    let Some(raw) = raw else {
        return (MessagingBackend::InProcess, Vec::new());
    };
    let streams = streams(c, raw.streams);
    let name = raw
        .backend
        .as_ref()
        .map_or("inprocess", |b| b.get_ref().as_str());
    let backend = match name {
        "inprocess" => {
            if let Some(url) = raw.url {
                c.problem(
                    Some(url.span()),
                    "messaging.url".into(),
                    "only the `nats` backend takes a url".into(),
                );
            }
            MessagingBackend::InProcess
        }
        "nats" => {
            let url = match raw.url {
                None => "nats://127.0.0.1:4222".to_string(),
                Some(u) => match substitute_env(u.get_ref(), env) {
                    Ok(url) if url.starts_with("nats://") || url.starts_with("tls://") => url,
                    Ok(url) => {
                        c.problem(
                            Some(u.span()),
                            "messaging.url".into(),
                            format!(
                                "`{}` is not a NATS url (nats://HOST:PORT)",
                                panal_nats::redact(&url)
                            ),
                        );
                        url
                    }
                    Err(why) => {
                        c.problem(Some(u.span()), "messaging.url".into(), why);
                        String::new()
                    }
                },
            };
            MessagingBackend::Nats(url)
        }
        other => {
            c.problem(
                raw.backend.as_ref().map(|b| b.span()),
                "messaging.backend".into(),
                format!("unknown backend `{other}`; expected `inprocess` or `nats`"),
            );
            MessagingBackend::InProcess
        }
    };
    (backend, streams)
}

fn streams(c: &mut Checker, raw: BTreeMap<String, Spanned<RawStream>>) -> Vec<StreamSpec> {
    let mut out: Vec<StreamSpec> = Vec::new();
    for (name, stream) in raw {
        let span = stream.span();
        let field = format!("messaging.streams.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.problem(
                Some(span.clone()),
                field.clone(),
                "stream names are letters, digits, `-` and `_`".into(),
            );
        }
        let stream = stream.into_inner();
        if stream.subjects.is_empty() {
            c.problem(Some(span), field.clone(), "a stream needs subjects".into());
        }
        let mut subjects = Vec::new();
        for (i, s) in stream.subjects.iter().enumerate() {
            let subject = s.get_ref();
            let at = format!("{field}.subjects[{i}]");
            if let Some(why) = unusable(subject, true) {
                c.problem(Some(s.span()), at, why);
            } else if let Some(other) = out
                .iter()
                .find(|o| o.subjects.iter().any(|p| patterns_overlap(p, subject)))
            {
                // NATS refuses streams whose subjects overlap; say so before it does.
                c.problem(
                    Some(s.span()),
                    at,
                    format!(
                        "`{subject}` overlaps the subjects of stream `{}`",
                        other.name
                    ),
                );
            } else {
                subjects.push(subject.clone());
            }
        }
        let replicas = stream.replicas.as_ref().map_or(0, |r| {
            super::storage::replicas(c, r, &format!("{field}.replicas"))
        });
        out.push(StreamSpec {
            name,
            subjects,
            replicas,
        });
    }
    out
}

pub(super) fn grants(
    c: &mut Checker,
    name: &str,
    raw: &RawMessaging,
    streams: &[StreamSpec],
) -> (Vec<String>, Vec<Subscription>) {
    let mut publish = Vec::new();
    for (i, p) in raw.publish.iter().enumerate() {
        match unusable(p.get_ref(), true) {
            None => publish.push(p.get_ref().clone()),
            Some(why) => c.problem(
                Some(p.span()),
                format!("components.{name}.messaging.publish[{i}]"),
                why,
            ),
        }
    }
    let mut subscribe = Vec::new();
    for (i, s) in raw.subscribe.iter().enumerate() {
        let sub = s.get_ref();
        let field = format!("components.{name}.messaging.subscribe[{i}]");
        if let Some(why) = unusable(&sub.subject, true) {
            c.problem(Some(s.span()), field, why);
        } else if sub
            .queue
            .as_deref()
            .is_some_and(|q| q.is_empty() || !valid_subject(q, false) || q.contains('.'))
        {
            c.problem(
                Some(s.span()),
                field,
                "queue group names are one token of letters, digits, `-` or `_`".into(),
            );
        } else if let Some(durable) = durable(c, name, &field, s, streams) {
            if subscribe
                .iter()
                .any(|o: &Subscription| o.subject == sub.subject)
            {
                c.problem(
                    Some(s.span()),
                    field,
                    format!("`{}` is subscribed twice", sub.subject),
                );
                continue;
            }
            subscribe.push(Subscription {
                subject: sub.subject.clone(),
                queue: sub.queue.clone(),
                durable,
            });
        }
    }
    (publish, subscribe)
}

/// The durable settings of one subscription: `Some(None)` for a plain one, `None` when
/// something was wrong (reported).
fn durable(
    c: &mut Checker,
    name: &str,
    field: &str,
    s: &Spanned<RawSubscription>,
    streams: &[StreamSpec],
) -> Option<Option<Durable>> {
    let sub = s.get_ref();
    let bad = |c: &mut Checker, what: &str, why: String| {
        c.problem(Some(s.span()), format!("{field}.{what}"), why);
        None
    };
    if !sub.durable {
        if sub.max_attempts.is_some() {
            return bad(
                c,
                "max_attempts",
                "only a durable subscription retries".into(),
            );
        }
        if sub.dead_letter.is_some() {
            return bad(
                c,
                "dead_letter",
                "only a durable subscription dead-letters".into(),
            );
        }
        return Some(None);
    }
    if sub.queue.is_some() {
        return bad(
            c,
            "queue",
            "a durable subscription is already shared by every host that runs the \
             component; drop `queue`"
                .into(),
        );
    }
    let Some(stream) = streams
        .iter()
        .find(|st| st.subjects.iter().any(|p| pattern_covers(p, &sub.subject)))
    else {
        return bad(
            c,
            "durable",
            format!(
                "no stream in [messaging.streams] captures `{}`; add one whose subjects \
                 cover it",
                sub.subject
            ),
        );
    };
    let max_attempts = match sub.max_attempts {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(n @ 1..=100) => n as u32,
        Some(n) => return bad(c, "max_attempts", format!("{n} is not within 1..=100")),
    };
    let dead_letter = sub
        .dead_letter
        .clone()
        .unwrap_or_else(|| format!("deadletter.{name}"));
    if let Some(why) = unusable(&dead_letter, false) {
        return bad(c, "dead_letter", why);
    }
    if subject_matches(&sub.subject, &dead_letter) {
        return bad(
            c,
            "dead_letter",
            format!(
                "`{dead_letter}` is matched by `{}` itself: dead letters would come back",
                sub.subject
            ),
        );
    }
    Some(Some(Durable {
        stream: stream.name.clone(),
        consumer: consumer_name(name, &sub.subject),
        max_attempts,
        dead_letter,
    }))
}

/// A stable JetStream consumer name for `component` on `subject` (no `.`, `*`, `>`).
fn consumer_name(component: &str, subject: &str) -> String {
    let tokens: Vec<&str> = subject
        .split('.')
        .map(|t| match t {
            "*" => "any",
            ">" => "all",
            t => t,
        })
        .collect();
    format!("{component}-{}", tokens.join("_"))
}
