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
//! often and why) with one error line in the log. A run that failed on an outage
//! (storage or a called component out of reach) is held and run again until the outage
//! passes, without spending an attempt.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::executor::{Executor, Prepared, Wait};
use crate::capabilities::context::Unavailable;
use crate::capabilities::messaging::host::Message;
use crate::capabilities::messaging::{
    Ack, Broker, DurableSub, Incoming, Msg, MsgError, Settle, StreamSpec,
};
use crate::capabilities::trace_of;
use crate::metrics::MsgOp;
use crate::registry::Handler;
use crate::runtime::instance::Deadline;
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

/// A message's run on the component's current version: its slot, and the context its
/// instance gets (the child of the publisher's trace, with the handler's span).
struct Delivery {
    prepared: Prepared,
    span: Option<traces::Span>,
}

/// The loop of every subscription: each message of `stream` (read by `msg_of`) waits
/// for a slot of the current version (back-pressure on the broker, not a refusal), then
/// `settle` handles it in a task of its own. Ends when the component is undeployed.
async fn consume<T, F, Fut>(
    executor: Arc<Executor>,
    name: String,
    mut stream: BoxStream<'static, T>,
    msg_of: fn(&T) -> &Msg,
    settle: F,
) where
    T: Send + 'static,
    F: Fn(Arc<Executor>, Delivery, T) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some(item) = stream.next().await {
        let msg = msg_of(&item);
        let Some(delivery) = admit(&executor, &name, msg).await else {
            break;
        };
        let span = tracing::info_span!("message", component = %name, subject = %msg.subject,
            attempt = tracing::field::Empty);
        tokio::spawn(settle(executor.clone(), delivery, item).instrument(span));
    }
}

/// Step one of a message's run: the current version of `name` and a slot on it.
async fn admit(executor: &Executor, name: &str, msg: &Msg) -> Option<Delivery> {
    let deployed = executor.registry().current(name)?;
    let trace = trace_of(&msg.headers[..]);
    // The handler's span, the child of the span that published the message.
    let span = traces::start(traces::Kind::Consumer, &trace, || {
        let attrs = vec![
            traces::Attr::new("panal.component", name.to_string()),
            traces::Attr::new("messaging.destination.name", msg.subject.clone()),
            traces::Attr::new("messaging.operation.name", "process"),
        ];
        (format!("process {} {name}", msg.subject), attrs)
    });
    let mut ctx = executor.context(0, None, traces::under(&trace, span.as_ref()));
    ctx.unavailable = Unavailable::watched();
    let prepared = executor.prepare(deployed, ctx, Wait::Message).await.ok()?;
    Some(Delivery { prepared, span })
}

/// At most once: each message handled once, failures logged (in `handle`).
async fn plain(executor: Arc<Executor>, name: String, stream: BoxStream<'static, Msg>) {
    let settle = |executor: Arc<Executor>, delivery, msg| async move {
        let _ = handle(&executor, delivery, msg).await;
    };
    consume(executor, name, stream, |msg| msg, settle).await;
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
    stream: BoxStream<'static, Incoming>,
    settings: Arc<DurableSettings>,
) {
    let settle = move |executor: Arc<Executor>, delivery: Delivery, incoming: Incoming| {
        let settings = settings.clone();
        async move {
            let Incoming {
                msg,
                attempt,
                mut ack,
            } = incoming;
            tracing::Span::current().record("attempt", attempt);
            let stats = delivery.prepared.deployed.stats.clone();
            let how = match wait_out(&executor, delivery, &msg, &mut *ack).await {
                Ok(()) => Settle::Done,
                Err(_) if attempt < settings.max_attempts => Settle::Retry(backoff(attempt)),
                Err(why) => dead_letter(&settings, msg, attempt, &why).await,
            };
            if matches!(how, Settle::GiveUp) {
                stats.msg(MsgOp::DeadLettered);
            }
            if let Err(e) = ack.settle(how).await {
                tracing::warn!(%e, ?how, "cannot settle a delivery; the broker will redeliver it");
            }
        }
    };
    consume(executor, name, stream, |incoming| &incoming.msg, settle).await;
}

/// Handle a durable delivery. A run that failed on an outage (it noted
/// [`Unavailable`]: storage out of reach, a called component answering 503) is run
/// again on the current version until the outage passes, the broker told the delivery
/// is in hand meanwhile: an outage of any length spends none of its attempts, which are
/// for the handler's own failures.
async fn wait_out(
    executor: &Executor,
    mut delivery: Delivery,
    msg: &Msg,
    ack: &mut dyn Ack,
) -> Result<(), String> {
    let name = delivery.prepared.deployed.name.clone();
    let mut pause = OUTAGE_PAUSE;
    let mut waited = Duration::ZERO;
    let mut warn_at = Duration::ZERO;
    loop {
        let unavailable = delivery.prepared.ctx.unavailable.clone();
        let why = match handle(executor, delivery, msg.clone()).await {
            Err(why) if unavailable.take() => why,
            done => return done,
        };
        if waited >= warn_at {
            tracing::warn!(error = %why, waited_s = waited.as_secs(),
                "a durable message waits out an outage (not counted as an attempt)");
            warn_at = waited + Duration::from_secs(60);
        }
        tokio::time::sleep(pause).await;
        waited += pause;
        pause = (pause * 2).min(MAX_OUTAGE_PAUSE);
        if let Err(e) = ack.working().await {
            tracing::debug!(%e, "cannot tell the broker a waiting delivery is in hand");
        }
        delivery = admit(executor, &name, msg)
            .await
            .ok_or_else(|| format!("{why}; the component is no longer deployed"))?;
    }
}

/// First pause before running a delivery again after an outage; it doubles up to
/// [`MAX_OUTAGE_PAUSE`].
const OUTAGE_PAUSE: Duration = Duration::from_millis(200);
const MAX_OUTAGE_PAUSE: Duration = Duration::from_secs(5);

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

/// Run one delivery on the version whose slot it holds; a failure is logged and
/// returned as why.
async fn handle(executor: &Executor, delivery: Delivery, msg: Msg) -> Result<(), String> {
    let Delivery { prepared, mut span } = delivery;
    let deployed = &prepared.deployed;
    let outcome = run(executor, &prepared, msg).await;
    let op = if outcome.is_ok() {
        MsgOp::Delivered
    } else {
        MsgOp::Failed
    };
    deployed.stats.msg(op);
    outcome.map_err(|failure| {
        failure.log(&deployed.name);
        if let Some(span) = span.as_mut() {
            span.fail(failure.why());
        }
        failure.why()
    })
}

/// Hand `msg` to a kept instance of the handler or a fresh one, under the deadline;
/// keep the instance for the next message when it ran cleanly.
async fn run(executor: &Executor, prepared: &Prepared, msg: Msg) -> Result<(), Failure> {
    let deployed = &prepared.deployed;
    let Some(pre) = deployed.handler.as_ref() else {
        return Err(Failure::Handler(
            "the component has no message handler".into(),
        ));
    };
    let (mut handler, deadline) = match deployed.kept_handler(&prepared.ctx) {
        Some(kept) => {
            let deadline = Deadline::of(&kept.store, deployed.limits);
            (kept, deadline)
        }
        None => {
            let (mut store, deadline) = prepared.store(executor.registry().engine()).await?;
            let bindings = deadline.run(pre.instantiate_async(&mut store)).await?;
            (Handler::new(store, bindings), deadline)
        }
    };
    let Handler {
        store, bindings, ..
    } = &mut handler;
    let message = store
        .data_mut()
        .table
        .push(Message::from_msg(msg))
        .map_err(|e| Failure::Handler(format!("cannot hand the message over: {e}")))?;
    deadline
        .run(
            bindings
                .wasi_messaging_incoming_handler()
                .call_handle(&mut *store, message),
        )
        .await?
        .map_err(|e| Failure::Handler(format!("{e:?}")))?;
    deployed.keep_handler(handler);
    Ok(())
}
