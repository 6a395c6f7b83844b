//! Logging: the `tracing` subscriber (`RUST_LOG`, default `info`) and the streams that
//! carry a component's stdout/stderr into the log, one event per line, tagged with the
//! component's name and the request id and trace id of the request it serves.
//!
//! Access-log lines (target [`ACCESS`], one per request) are formatted without the
//! subscriber ([`access_log`], `access.rs`), buffered and written together every
//! [`FLUSH_EVERY`], or sooner when the buffer fills: a `write(2)` per request under the
//! stderr lock was the gateway's largest cost. Every other line is written at once,
//! after the buffered ones, so the log keeps its order; [`flush`] empties the buffer on
//! exit.

mod access;

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The target of the one line per request the gateway logs.
pub const ACCESS: &str = panal_gateway::access::TARGET;
/// How long an access-log line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Written at once when the buffer grows past this.
const BUFFER_MAX: usize = 64 << 10;

/// Access-log lines not yet written.
static BUFFERED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Whether [`init`] installed this module's subscriber (so its buffer gets flushed).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Install the global subscriber. Logs go to stderr so stdout stays free for tools.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Logs)
        .with_ansi(false)
        .try_init();
    if installed.is_ok() {
        INSTALLED.store(true, Ordering::Release);
        let _ = std::thread::Builder::new()
            .name("panal-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            });
    }
}

/// What the gateway hands its access records to: lines into the buffer when [`init`]
/// installed the subscriber, else `None` (they stay `tracing` events).
pub fn access_log() -> Option<Arc<dyn panal_gateway::access::AccessLog>> {
    INSTALLED
        .load(Ordering::Acquire)
        .then(|| Arc::new(access::AccessLines) as Arc<_>)
}

/// Write the buffered access-log lines now.
pub fn flush() {
    let mut buffered = BUFFERED.lock();
    write_out(&mut buffered);
}

fn write_out(buffered: &mut Vec<u8>) {
    if !buffered.is_empty() {
        let _ = std::io::stderr().lock().write_all(buffered);
        buffered.clear();
    }
}

/// Lines were added to the buffer: write it out when it is full.
fn written(buffered: &mut Vec<u8>) {
    if buffered.len() > BUFFER_MAX {
        write_out(buffered);
    }
}

/// Picks each line's way out: access-log lines to the buffer, the rest straight out.
struct Logs;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { buffered: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            buffered: meta.target() == ACCESS,
        }
    }
}

/// One log line on its way out.
struct Line {
    buffered: bool,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut buffered = BUFFERED.lock();
        if self.buffered {
            buffered.extend_from_slice(buf);
            written(&mut buffered);
        } else {
            // The lines before it first, while holding the buffer: the order holds.
            write_out(&mut buffered);
            std::io::stderr().lock().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which of a component's output streams.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// What an instance's output lines say of the request it serves now (a kept or
/// concurrent instance changes it as it takes on another request).
#[derive(Clone, Debug, Default)]
pub struct Tag {
    /// The request id (`x-request-id`).
    pub request_id: Option<Arc<str>>,
    /// The W3C trace id of its `traceparent`, when it has one.
    pub trace_id: Option<Arc<str>>,
}

/// The [`Tag`] an instance's output lines carry.
pub type RequestTag = Arc<Mutex<Tag>>;

/// A guest output stream that becomes log lines.
#[derive(Clone)]
pub struct ComponentLog {
    component: Arc<str>,
    output: Output,
    request: RequestTag,
}

impl ComponentLog {
    /// The `output` stream of `component`, its lines tagged with `request`.
    pub fn new(component: Arc<str>, output: Output, request: RequestTag) -> Self {
        Self {
            component,
            output,
            request,
        }
    }
}

impl IsTerminal for ComponentLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for ComponentLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Longest partial line kept before it is logged anyway, so a guest that never writes a
/// newline cannot grow host memory without bound.
const MAX_LINE: usize = 16 * 1024;

struct LineWriter {
    log: ComponentLog,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        let component = &*self.log.component;
        let tag = self.log.request.lock().clone();
        let request_id = tag.request_id.as_deref().unwrap_or("-");
        let trace_id = tag.trace_id.as_deref().unwrap_or("-");
        match self.log.output {
            Output::Stdout => {
                tracing::info!(target: "panal::guest", component, %request_id, %trace_id, stream = "stdout", "{line}")
            }
            Output::Stderr => {
                tracing::warn!(target: "panal::guest", component, %request_id, %trace_id, stream = "stderr", "{line}")
            }
        }
    }

    fn drain_lines(&mut self) {
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.pending.len() > MAX_LINE {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }

    fn flush_partial(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.drain_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}
