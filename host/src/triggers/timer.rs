//! The timer trigger: each `schedule` entry of a component is a task that, every
//! `every`, calls `POST path` on the component's current version in-process, through
//! the same request path as the gateway's requests (the component's limits, deadline,
//! stats), but never through the gateway: no route is needed and no client can reach
//! it. A run still going when the next tick comes makes that tick skip, so there is at
//! most one run of an entry at a time in the host.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};

use super::executor::Executor;
use crate::manifest::{ComponentSpec, Schedule};

/// The header every timer call carries (`schedule`), so a component can tell.
pub const TRIGGER_HEADER: &str = "x-panal-trigger";

/// Start one task per schedule entry of `components`; they end when aborted.
pub fn start(
    executor: &Arc<Executor>,
    components: &[ComponentSpec],
) -> Vec<tokio::task::JoinHandle<()>> {
    components
        .iter()
        .flat_map(|c| c.schedule.iter().map(move |s| (c.name.clone(), s.clone())))
        .map(|(name, entry)| tokio::spawn(run(Arc::downgrade(executor), name, entry)))
        .collect()
}

async fn run(executor: std::sync::Weak<Executor>, name: String, entry: Schedule) {
    let running = Arc::new(AtomicBool::new(false));
    let mut ticks = tokio::time::interval(entry.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick of an interval is immediate: wait one period first.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(executor) = executor.upgrade() else {
            return;
        };
        if running.swap(true, Ordering::AcqRel) {
            tracing::info!(component = %name, path = %entry.path, "schedule: the last run is still going; skipping this one");
            continue;
        }
        let running = running.clone();
        let (name, path) = (name.clone(), entry.path.clone());
        tokio::spawn(async move {
            fire(&executor, &name, &path).await;
            running.store(false, Ordering::Release);
        });
    }
}

async fn fire(executor: &Executor, name: &str, path: &str) {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{name}{path}"))
        .header(TRIGGER_HEADER, "schedule")
        .header("x-request-id", uuid::Uuid::new_v4().simple().to_string())
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync());
    let Ok(request) = request else {
        tracing::error!(component = name, path, "schedule: cannot build the request");
        return;
    };
    let started = std::time::Instant::now();
    let resp = executor.call_http(name, request, 0).await;
    let status = resp.status();
    // Read the answer to its end, so the instance finishes its work.
    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
    let took_ms = started.elapsed().as_millis();
    if status.is_success() {
        tracing::info!(
            component = name,
            path,
            status = status.as_u16(),
            took_ms,
            "schedule: ran"
        );
    } else {
        let detail = body.map_or_else(
            |e| e.to_string(),
            |b| String::from_utf8_lossy(&b).into_owned(),
        );
        tracing::warn!(component = name, path, status = status.as_u16(), took_ms, %detail, "schedule: the run failed");
    }
}
