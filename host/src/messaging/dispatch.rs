//! Delivery: each component's subscriptions on the broker, every message handled by the
//! component's `wasi:messaging/incoming-handler` in a fresh instance, with the same
//! limits as an HTTP request. The current version is looked up per message, so a
//! redeployed component takes over its subscriptions at once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::host::Message;
use super::{Broker, Msg};
use crate::invoke::{trace_of, CallContext};
use crate::registry::Registry;

/// Subscribe every component's `messaging.subscribe` entries; the returned tasks run
/// until aborted (at shutdown).
pub async fn start(
    registry: &Arc<Registry>,
    broker: &Arc<dyn Broker>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for deployed in registry.all() {
        for sub in &deployed.subscriptions {
            let mut stream = broker
                .subscribe(&sub.subject, sub.queue.as_deref())
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "component `{}` cannot subscribe to `{}`: {e}",
                        deployed.name,
                        sub.subject
                    )
                })?;
            tracing::info!(component = %deployed.name, subject = %sub.subject, queue = ?sub.queue, "subscribed");
            let registry = registry.clone();
            let name = deployed.name.to_string();
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = stream.next().await {
                    let Some(current) = registry.current(&name) else {
                        break;
                    };
                    // Back-pressure instead of 503: a message waits for a free slot.
                    let Ok(permit) = current.running.clone().acquire_owned().await else {
                        break;
                    };
                    let registry = registry.clone();
                    let name = name.clone();
                    let span =
                        tracing::info_span!("message", component = %name, subject = %msg.subject);
                    tokio::spawn(
                        async move {
                            let _permit = permit;
                            handle(&registry, &name, msg).await;
                        }
                        .instrument(span),
                    );
                }
            }));
        }
    }
    Ok(tasks)
}

/// Run one delivery; failures are logged (a broker with redelivery acts on them).
async fn handle(registry: &Arc<Registry>, name: &str, msg: Msg) -> bool {
    let Some(deployed) = registry.current(name) else {
        return false;
    };
    let Some(pre) = deployed.handler.clone() else {
        return false;
    };
    let timeout = Duration::from_millis(deployed.limits.timeout_ms);
    let header = |name: &str| {
        msg.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let ctx = CallContext {
        trace: trace_of(header),
        ..CallContext::default()
    };
    let mut store = registry.new_store(&deployed, ctx);
    let message = match store.data_mut().table.push(Message::from_msg(msg)) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(%e, "cannot hand the message to the component");
            return false;
        }
    };
    let run = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance
            .wasi_messaging_incoming_handler()
            .call_handle(&mut store, message)
            .await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = ?e, "message handler returned an error");
            false
        }
        Ok(Err(trap)) => {
            tracing::error!(error = %format!("{trap:?}"), "message handler trapped");
            false
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = deployed.limits.timeout_ms,
                "message handler timed out"
            );
            false
        }
    }
}
