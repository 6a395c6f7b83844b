//! `panal run --watch`: redeploy a component when the `.wasm` file its manifest names
//! changes, through the same deploy as the admin API (compile, link, trial, one swap).
//!
//! The files are polled rather than watched with inotify/FSEvents: it works the same on
//! every platform and file system, and a build writes a component rarely enough that a
//! poll every 200 ms costs nothing. A change is acted on only once the file's size and
//! modification time have stayed the same for [`SETTLE`], so a file still being written
//! is not read. Should a writer pause longer than that, the bytes read are a truncated
//! component, which never validates: that deploy is refused and logged, the old version
//! keeps serving, and the rest of the write is a new change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use super::deploy::DeployRequest;
use super::Registry;

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(200);
/// How long a changed file must stay unchanged before it is deployed.
pub const SETTLE: Duration = Duration::from_millis(400);

/// Size and modification time: what tells a file changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok()?,
    })
}

struct Watched {
    name: String,
    path: PathBuf,
    /// The file as last acted on (or as found at start).
    handled: Option<Stamp>,
    /// A change seen, and since when it has looked like this.
    settling: Option<(Option<Stamp>, Instant)>,
}

/// Watch each `(component, file)` until the task is aborted.
pub fn start(registry: Arc<Registry>, files: Vec<(String, PathBuf)>) -> JoinHandle<()> {
    let mut watched: Vec<Watched> = files
        .into_iter()
        .map(|(name, path)| Watched {
            handled: stamp(&path),
            name,
            path,
            settling: None,
        })
        .collect();
    for w in &watched {
        tracing::info!(component = %w.name, file = %w.path.display(), "watching for a new build");
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for w in &mut watched {
                poll(&registry, w).await;
            }
        }
    })
}

async fn poll(registry: &Arc<Registry>, w: &mut Watched) {
    let now = stamp(&w.path);
    if now == w.handled {
        w.settling = None;
        return;
    }
    match w.settling {
        Some((seen, since)) if seen == now => {
            if since.elapsed() < SETTLE {
                return;
            }
        }
        _ => {
            w.settling = Some((now, Instant::now()));
            return;
        }
    }
    w.settling = None;
    w.handled = now;
    // Gone (a clean build, say): keep serving; its return is a change again.
    if now.is_none() {
        tracing::warn!(component = %w.name, file = %w.path.display(),
            "watched file is gone; the current version keeps serving");
        return;
    }
    let bytes = match std::fs::read(&w.path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(component = %w.name, file = %w.path.display(), %e, "watch: cannot read");
            return;
        }
    };
    // A file rewritten with the same bytes (a `touch`, a no-op build) is no new version.
    let sha = crate::runtime::engine::sha256(&bytes);
    if registry.current(&w.name).is_some_and(|d| d.sha256 == sha) {
        return;
    }
    match registry
        .deploy(&w.name, &bytes, DeployRequest::default())
        .await
    {
        Ok(outcome) => tracing::info!(
            component = %w.name,
            version = outcome.version.as_deref().unwrap_or("-"),
            previous = outcome.previous.as_deref().unwrap_or("-"),
            took_ms = outcome.took.as_secs_f64() * 1000.0,
            "watch: redeployed"
        ),
        Err(why) => tracing::warn!(
            component = %w.name,
            file = %w.path.display(),
            reason = %why,
            "watch: refused; the current version keeps serving"
        ),
    }
}
