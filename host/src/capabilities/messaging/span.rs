//! The trace span of a guest's publish or request: a producer span whose context the
//! message carries on, so the handler it reaches is the span's child.

use super::Msg;
use crate::traces;

/// The span of sending `msg` (when traces are on), the child of `trace`'s context;
/// `msg` then carries the span's, so the handler it reaches is the span's child.
pub(super) fn producer_span(
    trace: &[(String, String)],
    msg: &mut Msg,
    op: &'static str,
) -> Option<traces::Span> {
    let span = traces::start(traces::Kind::Producer, trace, || {
        let attrs = vec![
            traces::Attr::new("messaging.destination.name", msg.subject.clone()),
            traces::Attr::new("messaging.operation.name", op),
        ];
        (format!("{op} {}", msg.subject), attrs)
    })?;
    msg.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case(traces::TRACEPARENT));
    msg.headers
        .push((traces::TRACEPARENT.into(), span.traceparent()));
    Some(span)
}
