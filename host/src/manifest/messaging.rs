//! Validation of messaging: the `[messaging]` backend and each component's
//! `messaging = { publish = [...], subscribe = [...] }` grants.

use super::raw::{RawMessaging, RawMessagingBackend};
use super::validate::{substitute_env, Checker};
use super::{MessagingBackend, Subscription};
use crate::messaging::valid_subject;

pub(super) fn backend(
    c: &mut Checker,
    raw: Option<RawMessagingBackend>,
    env: &dyn Fn(&str) -> Option<String>,
) -> MessagingBackend {
    let Some(raw) = raw else {
        return MessagingBackend::InProcess;
    };
    match raw.backend.get_ref().as_str() {
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
                            format!("`{url}` is not a NATS url (nats://HOST:PORT)"),
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
                Some(raw.backend.span()),
                "messaging.backend".into(),
                format!("unknown backend `{other}`; expected `inprocess` or `nats`"),
            );
            MessagingBackend::InProcess
        }
    }
}

pub(super) fn grants(
    c: &mut Checker,
    name: &str,
    raw: &RawMessaging,
) -> (Vec<String>, Vec<Subscription>) {
    let mut publish = Vec::new();
    for (i, p) in raw.publish.iter().enumerate() {
        if valid_subject(p.get_ref(), true) {
            publish.push(p.get_ref().clone());
        } else {
            c.problem(
                Some(p.span()),
                format!("components.{name}.messaging.publish[{i}]"),
                format!("`{}` is not a valid subject pattern", p.get_ref()),
            );
        }
    }
    let mut subscribe = Vec::new();
    for (i, s) in raw.subscribe.iter().enumerate() {
        let sub = s.get_ref();
        let field = format!("components.{name}.messaging.subscribe[{i}]");
        if !valid_subject(&sub.subject, true) {
            c.problem(
                Some(s.span()),
                field,
                format!("`{}` is not a valid subject pattern", sub.subject),
            );
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
        } else {
            subscribe.push(Subscription {
                subject: sub.subject.clone(),
                queue: sub.queue.clone(),
            });
        }
    }
    (publish, subscribe)
}
