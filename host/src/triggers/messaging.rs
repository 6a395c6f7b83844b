//! The messaging trigger: each component's subscriptions on the broker, every message
//! handled by the component's `wasi:messaging/incoming-handler` with the same limits,
//! deadline and failure naming as an HTTP request: in a fresh instance, or with
//! `limits.reuse` > 1 in one the version keeps (`registry/handlers.rs`). The current
//! version is looked up once per message, for its slot and its instance both, so a
//! redeployed component takes over its subscriptions at once.
//!
//! Plain subscriptions are at most once. Durable ones are at least once: settled after
//! the handler, retried with backoff after a trap, error or timeout, and after
//! `max_attempts` published to the dead-letter subject (headers say from where, how
//! often and why) with one error line in the log.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::executor::{deadline, slot, Executor};
use crate::capabilities::bindings::Host_Pre as HostPre;
use crate::capabilities::messaging::host::Message;
use crate::capabilities::messaging::{
    Broker, DurableSub, Incoming, Msg, MsgError, Settle, StreamSpec,
};
use crate::capabilities::{trace_of, CallContext, State};
use crate::metrics::MsgOp;
use crate::registry::{Deployed, Handler};
use crate::runtime::budget::Admission;
use crate::runtime::Failure;
use crate::traces;

/// Subscribe every component's `messaging.subscribe` entries; the returned tasks run
/// until aborted (at shutdown).
pub async fn start(
    executor: &Arc<Executor>,
    broker: &Arc<dyn Broker>,
    streams: &[StreamSpec],
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for deployed in executor.registry().all() {
        for sub in &deployed.subscriptions {
            let cannot = |e: MsgError| {
                anyhow::anyhow!(
                    "component `{}` cannot subscribe to `{}`: {e}",
                    deployed.name,
                    sub.subject
                )
            };
            let executor = executor.clone();
            let name = deployed.name.to_string();
            let task = match &sub.durable {
                None => {
                    let stream = broker
                        .subscribe(&sub.subject, sub.queue.as_deref())
                        .await
                        .map_err(cannot)?;
                    tokio::spawn(plain(executor, name, stream))
                }
                Some(durable) => {
                    let stream = streams
                        .iter()
                        .find(|s| s.name == durable.stream)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no stream `{}`", durable.stream))?;
                    let limits = deployed.limits;
                    let spec = DurableSub {
                        subject: sub.subject.clone(),
                        stream,
                        consumer: durable.consumer.clone(),
                        max_attempts: durable.max_attempts,
                        // Room for the handler's own deadline, plus the wait for a slot.
                        ack_wait: Duration::from_millis(limits.timeout_ms) + ACK_WAIT_SLACK,
                        batch: (limits.max_concurrency as usize).clamp(1, 64),
                    };
                    let incoming = broker.subscribe_durable(&spec).await.map_err(cannot)?;
                    let settings = Arc::new(DurableSettings {
                        max_attempts: durable.max_attempts,
                        dead_letter: durable.dead_letter.clone(),
                        broker: broker.clone(),
                    });
                    tokio::spawn(durably(executor, name, incoming, settings))
                }
            };
            tracing::info!(component = %deployed.name, subject = %sub.subject, queue = ?sub.queue,
                durable = sub.durable.is_some(), "subscribed");
            tasks.push(task);
        }
    }
    Ok(tasks)
}

/// Extra time a durable delivery may stay unacknowledged beyond the handler's deadline.
const ACK_WAIT_SLACK: Duration = Duration::from_secs(30);

/// At most once: each message handled once, failures logged.
async fn plain(executor: Arc<Executor>, name: String, mut stream: BoxStream<'static, Msg>) {
    while let Some(msg) = stream.next().await {
        let Some(current) = executor.registry().current(&name) else {
            break;
        };
        // Back-pressure instead of 503: a message waits for a free slot.
        let Ok(permit) = slot(&current, None).await else {
            break;
        };
        let executor = executor.clone();
        let span = tracing::info_span!("message", component = %name, subject = %msg.subject);
        tokio::spawn(
            async move {
                let _permit = permit;
                // Logged in `handle`; a plain delivery is at most once.
                let _ = handle(&executor, &current, msg).await;
            }
            .instrument(span),
        );
    }
}

struct DurableSettings {
    max_attempts: u32,
    dead_letter: String,
    broker: Arc<dyn Broker>,
}

/// At least once: acknowledged after success, retried after a failure, dead-lettered
/// after the last attempt.
async fn durably(
    executor: Arc<Executor>,
    name: String,
    mut stream: BoxStream<'static, Incoming>,
    settings: Arc<DurableSettings>,
) {
    while let Some(incoming) = stream.next().await {
        let Some(current) = executor.registry().current(&name) else {
            break;
        };
        let Ok(permit) = slot(&current, None).await else {
            break;
        };
        let executor = executor.clone();
        let settings = settings.clone();
        let span = tracing::info_span!("message", component = %name,
            subject = %incoming.msg.subject, attempt = incoming.attempt);
        tokio::spawn(
            async move {
                let _permit = permit;
                let Incoming { msg, attempt, ack } = incoming;
                let how = match handle(&executor, &current, msg.clone()).await {
                    Ok(()) => Settle::Done,
                    Err(_) if attempt < settings.max_attempts => Settle::Retry(backoff(attempt)),
                    Err(why) => dead_letter(&settings, msg, attempt, &why).await,
                };
                if matches!(how, Settle::GiveUp) {
                    current.stats.msg(MsgOp::DeadLettered);
                }
                if let Err(e) = ack.settle(how).await {
                    tracing::warn!(%e, ?how, "cannot settle a delivery; the broker will redeliver it");
                }
            }
            .instrument(span),
        );
    }
}

/// Wait before attempt `attempt + 1`: 100 ms, doubling, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)))
        .min(Duration::from_secs(5))
}

/// Publish the message to its dead-letter subject with why it failed; retry later if
/// even that fails.
async fn dead_letter(settings: &DurableSettings, msg: Msg, attempts: u32, why: &str) -> Settle {
    let subject = msg.subject.clone();
    let mut headers = msg.headers;
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("nats-msg-id"));
    headers.push(("panal-dead-letter-subject".into(), subject.clone()));
    headers.push(("panal-dead-letter-attempts".into(), attempts.to_string()));
    headers.push(("panal-dead-letter-error".into(), why.to_string()));
    let letter = Msg {
        subject: settings.dead_letter.clone(),
        reply: None,
        headers,
        payload: msg.payload,
    };
    match settings.broker.publish(letter).await {
        Ok(()) => {
            tracing::error!(%subject, attempts, dead_letter = %settings.dead_letter, error = %why,
                "message dead-lettered after its last attempt");
            Settle::GiveUp
        }
        Err(e) => {
            tracing::error!(%subject, %e, "cannot dead-letter a message; retrying it later");
            Settle::Retry(backoff(attempts))
        }
    }
}

/// Run one delivery on `deployed` (the version whose slot it holds); a failure is logged
/// and returned as why.
async fn handle(executor: &Executor, deployed: &Arc<Deployed>, msg: Msg) -> Result<(), String> {
    let name = &*deployed.name;
    let Some(pre) = deployed.handler.as_ref() else {
        return Err(format!("component `{name}` has no message handler"));
    };
    let header = |name: &str| {
        msg.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let trace = trace_of(header);
    // The handler's span, the child of the span that published the message.
    let mut span = traces::start(traces::Kind::Consumer, &trace, || {
        let attrs = vec![
            traces::Attr::new("panal.component", name.to_string()),
            traces::Attr::new("messaging.destination.name", msg.subject.clone()),
            traces::Attr::new("messaging.operation.name", "process"),
        ];
        (format!("process {} {name}", msg.subject), attrs)
    });
    let ctx = executor.context(0, None, traces::under(&trace, span.as_ref()));
    let outcome = run(executor, deployed, pre, &ctx, msg).await;
    let op = if outcome.is_ok() {
        MsgOp::Delivered
    } else {
        MsgOp::Failed
    };
    deployed.stats.msg(op);
    outcome.map_err(|failure| {
        failure.log(name);
        if let Some(span) = span.as_mut() {
            span.fail(failure.why());
        }
        failure.why()
    })
}

/// Hand `msg` to a kept instance of the handler or a fresh one, under the deadline;
/// keep the instance for the next message when it ran cleanly.
async fn run(
    executor: &Executor,
    deployed: &Arc<Deployed>,
    pre: &HostPre<State>,
    ctx: &CallContext,
    msg: Msg,
) -> Result<(), Failure> {
    let limits = &deployed.limits;
    let mut handler = match deployed.kept_handler(ctx) {
        Some(kept) => kept,
        None => {
            // A message waits for room in the memory budget as long as it takes
            // (back-pressure on the broker, not a failed delivery), and leaves a quarter
            // of it to requests.
            let engine = executor.registry().engine();
            let mut store = deployed
                .store(engine, ctx, Some(Admission::Background))
                .await?;
            let hit = store.data().limits.hit.clone();
            let bindings = deadline(limits, &hit, pre.instantiate_async(&mut store)).await?;
            Handler::new(store, bindings)
        }
    };
    let message = handler
        .store
        .data_mut()
        .table
        .push(Message::from_msg(msg))
        .map_err(|e| Failure::Handler(format!("cannot hand the message over: {e}")))?;
    let hit = handler.store.data().limits.hit.clone();
    let Handler {
        store, bindings, ..
    } = &mut handler;
    deadline(limits, &hit, async {
        bindings
            .wasi_messaging_incoming_handler()
            .call_handle(&mut *store, message)
            .await
    })
    .await?
    .map_err(|e| Failure::Handler(format!("{e:?}")))?;
    deployed.keep_handler(handler);
    Ok(())
}
