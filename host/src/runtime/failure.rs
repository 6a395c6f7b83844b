//! How a run of a component can fail, named once for every trigger: the HTTP trigger
//! turns a [`Failure`] into a status and a JSON error body ([`Failure::response`]), the
//! messaging trigger into the reason a delivery is retried or dead-lettered
//! ([`Failure::why`]). Each failure is logged once, here, with the limit it hit.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::combinators::UnsyncBoxBody;
use wasmtime::{PoolConcurrencyLimitError, Trap};

/// Why a component did not answer (or handle a message) cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No component of that name is deployed.
    NoComponent,
    /// Every `max_concurrency` slot stayed taken through `queue_ms`.
    Busy {
        /// The component's `max_concurrency`.
        max_concurrency: u32,
    },
    /// The host's guest memory budget had no room for a new instance within the wait.
    NoMemory {
        /// The budget, MiB.
        budget_mb: u32,
    },
    /// The request body is over `max_body_kb`.
    TooLarge {
        /// The component's `max_body_kb`.
        max_body_kb: u64,
    },
    /// The request could not be handed to the guest.
    BadRequest(String),
    /// No response head within `timeout_ms` (the instance is stopped).
    NoAnswer {
        /// The component's `timeout_ms`.
        timeout_ms: u64,
    },
    /// The instance ran into its deadline and was interrupted.
    Stopped {
        /// The component's `timeout_ms`.
        timeout_ms: u64,
    },
    /// Memory growth past `memory_mb` was refused and the guest failed on it.
    OutOfMemory {
        /// The component's `memory_mb`.
        memory_mb: u64,
    },
    /// The host's instance pool is full.
    PoolExhausted,
    /// The guest trapped; the trap's message.
    Trap(String),
    /// The guest returned without answering.
    NoResponse,
    /// The guest answered with a wasi:http error code instead of a response.
    ErrorCode(String),
    /// A message handler returned its `error`.
    Handler(String),
    /// The task running the instance panicked or was cancelled (a host bug).
    TaskFailed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// Classify what a run returned: the deadline, the pool, the host's memory budget or
    /// the component's memory limit (when `refused` says growth was refused) or a plain
    /// trap.
    pub fn of(
        err: &wasmtime::Error,
        refused: &super::limits::Refused,
        limits: &crate::manifest::Limits,
    ) -> Self {
        if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return Self::Stopped {
                timeout_ms: limits.timeout_ms,
            };
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Self::PoolExhausted;
        }
        // Named before the instance existed (the memory budget): as it was.
        if let Some(failure) = err.downcast_ref::<Self>() {
            return failure.clone();
        }
        if let Some(budget_mb) = refused.by_budget() {
            return Self::NoMemory { budget_mb };
        }
        if refused.by_memory_mb() {
            return Self::OutOfMemory {
                memory_mb: limits.memory_mb,
            };
        }
        tracing::error!(error = %format!("{err:?}"), "component trapped");
        Self::Trap(
            err.downcast_ref::<Trap>()
                .map_or_else(|| format!("{err:#}"), ToString::to_string),
        )
    }

    /// The HTTP status a client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoComponent => StatusCode::BAD_GATEWAY,
            Self::Busy { .. } | Self::NoMemory { .. } | Self::PoolExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoAnswer { .. } | Self::Stopped { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What a client reads in the `error` field.
    pub fn message(&self) -> String {
        match self {
            Self::NoComponent => "no such component".into(),
            Self::Busy { max_concurrency } => {
                format!("component is at its max_concurrency limit ({max_concurrency})")
            }
            Self::NoMemory { budget_mb } => {
                format!("the host's guest memory budget ({budget_mb} MiB) is taken")
            }
            Self::TooLarge { max_body_kb } => {
                format!("request body is larger than the component's limit of {max_body_kb} KiB")
            }
            Self::BadRequest(why) => format!("bad request: {why}"),
            Self::NoAnswer { timeout_ms } => {
                format!("component did not answer within {timeout_ms} ms")
            }
            Self::Stopped { timeout_ms } => {
                format!("component ran past its {timeout_ms} ms limit and was stopped")
            }
            Self::OutOfMemory { memory_mb } => {
                format!("component ran out of memory (limit {memory_mb} MiB)")
            }
            Self::PoolExhausted => "the host is at its instance limit".into(),
            Self::Trap(reason) => format!("component failed: {reason}"),
            Self::NoResponse => "component returned without setting a response".into(),
            Self::ErrorCode(code) | Self::Handler(code) => code.clone(),
            Self::TaskFailed => "component task failed".into(),
        }
    }

    /// Why a message delivery failed, as the retry log and the dead-letter header say it.
    pub fn why(&self) -> String {
        match self {
            Self::Stopped { timeout_ms } | Self::NoAnswer { timeout_ms } => {
                format!("timed out after {timeout_ms} ms")
            }
            Self::Trap(reason) => format!("trap: {reason}"),
            Self::Handler(e) => format!("handler error: {e}"),
            other => other.message(),
        }
    }

    /// The one log line of a failure, naming the limit it hit.
    pub fn log(&self, component: &str) {
        match self {
            Self::Busy { max_concurrency } => tracing::warn!(
                component,
                max_concurrency,
                "limit hit: max_concurrency; answering 503"
            ),
            Self::TooLarge { max_body_kb } => tracing::warn!(
                component,
                max_body_kb,
                "limit hit: max_body_kb; answering 413"
            ),
            Self::NoAnswer { timeout_ms } => tracing::warn!(
                component,
                timeout_ms,
                "limit hit: timeout_ms; answering 504"
            ),
            Self::Stopped { timeout_ms } => tracing::warn!(
                component,
                timeout_ms,
                "limit hit: timeout_ms; the instance was stopped"
            ),
            Self::OutOfMemory { memory_mb } => tracing::warn!(
                component,
                memory_mb,
                "limit hit: memory_mb; the instance failed"
            ),
            Self::PoolExhausted => {
                tracing::warn!(component, "instance pool exhausted; answering 503");
            }
            Self::NoMemory { budget_mb } => tracing::warn!(
                component,
                budget_mb,
                "limit hit: the host's guest memory budget; answering 503"
            ),
            Self::ErrorCode(code) => {
                tracing::warn!(component, code, "component answered with an error code");
            }
            Self::Handler(e) => {
                tracing::warn!(component, error = e, "message handler returned an error");
            }
            Self::TaskFailed => tracing::error!(component, "component task failed"),
            // Logged where they are found (a trap with its backtrace), or not worth a line.
            Self::NoComponent | Self::BadRequest(_) | Self::Trap(_) | Self::NoResponse => {}
        }
    }

    /// The JSON error answer on behalf of `component` (`Retry-After` when busy or out of
    /// memory or instances).
    pub fn response<E>(&self, component: &str) -> http::Response<UnsyncBoxBody<Bytes, E>> {
        let resp = error(self.status(), component, &self.message());
        if matches!(
            self,
            Self::Busy { .. } | Self::NoMemory { .. } | Self::PoolExhausted
        ) {
            return retry_soon(resp);
        }
        resp
    }
}

/// `resp` with `Retry-After: 1`: the same request may well be answered in a second (a
/// slot or memory freed, another host reached, a host back).
pub fn retry_soon<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let again = http::HeaderValue::from_static("1");
    resp.headers_mut().insert(http::header::RETRY_AFTER, again);
    resp
}

/// Marks an answer given because the host that took a call died or was cut off
/// mid-call: a host failed, not the callee, and the cluster already routes new calls
/// around it, so circuit breakers leave it out of their count (it is still retried).
#[derive(Clone, Copy, Debug)]
pub struct HostLost;

/// A JSON error answer from the host on behalf of `component`.
pub fn error<E>(
    status: StatusCode,
    component: &str,
    message: &str,
) -> http::Response<UnsyncBoxBody<Bytes, E>> {
    panal_gateway::json_error(
        status,
        message,
        serde_json::json!({ "component": component }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_are_told_apart_from_limits() {
        use crate::runtime::limits::{Limiter, Refused};
        use wasmtime::ResourceLimiter;
        let limits = crate::manifest::Limits::default();
        let none = Refused::default();
        let mut limiter = Limiter::new(10, None);
        assert!(!limiter.memory_growing(0, 11, None).expect("asked"));
        let over = limiter.hit.clone();
        let interrupt = wasmtime::Error::from(Trap::Interrupt);
        assert_eq!(
            Failure::of(&interrupt, &none, &limits),
            Failure::Stopped {
                timeout_ms: limits.timeout_ms
            }
        );
        let unreachable = wasmtime::Error::from(Trap::UnreachableCodeReached);
        assert_eq!(
            Failure::of(&unreachable, &over, &limits),
            Failure::OutOfMemory {
                memory_mb: limits.memory_mb
            }
        );
        let trap = Failure::of(&unreachable, &none, &limits);
        assert!(matches!(&trap, Failure::Trap(_)));
        assert_eq!(trap.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(trap.why().starts_with("trap: "), "{}", trap.why());
    }

    #[test]
    fn a_busy_answer_says_when_to_come_back() {
        for busy in [
            Failure::Busy { max_concurrency: 2 },
            Failure::NoMemory { budget_mb: 64 },
        ] {
            let resp = busy.response::<std::convert::Infallible>("x");
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        }
    }
}
