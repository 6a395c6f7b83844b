//! Calls from one component to another, in-process: a deadline, retries of idempotent
//! calls, and a circuit breaker per target component.
//!
//! - **Deadline**: the caller's `first-byte-timeout` request option, when it sets one,
//!   bounds each attempt (504 past it); the callee's own `timeout_ms` always applies.
//! - **Retries**: `GET`, `HEAD`, `OPTIONS`, `PUT` and `DELETE` answered 502, 503 or 504
//!   are sent again, twice at most, after 50 ms and 150 ms. Their body (bounded by the
//!   callee's `max_body_kb`) is kept for that. `POST` and `PATCH` are sent once: only
//!   the caller knows whether repeating them is safe (the order service does, with an
//!   idempotency key).
//! - **Breaker**: after [`TRIP_AFTER`] answers in a row of 500, 502, 503 or 504 from a
//!   component, calls to it fail at once for [`OPEN_FOR`] with 503, `Retry-After` and
//!   `"circuit": "open"` in the JSON error (so a caller knows the call never reached
//!   it). Then one call goes through (half-open): a good answer closes the circuit, a
//!   bad one opens it again. The trial is a [`Pass`] guard: a trial that never records
//!   its answer (the caller timed out or was dropped, the body was refused) counts as
//!   bad when the guard drops, so the circuit can never stay half-open for good. A 503
//!   marked [`HostLost`] (another host died holding the call) is not counted: one dead
//!   host must not shut a component off on the hosts that still run it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{RequestOptions, WasiBody};

use super::Calls;
use crate::runtime::failure::{error, HostLost};

/// Bad answers in a row that open a circuit.
pub const TRIP_AFTER: u32 = 5;
/// How long an open circuit fails calls before it lets one through.
pub const OPEN_FOR: Duration = Duration::from_secs(5);
/// Waits before the second and third attempt of an idempotent call.
const BACKOFF: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(150)];

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open trial call is running.
    trial: bool,
}

/// What the breaker says about one call.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Go ahead; `trial` when this call is the half-open circuit's one trial.
    Go { trial: bool },
    /// Fail fast; the circuit may let a call through after this long.
    Refuse(Duration),
}

/// One admitted call: record its answer with [`Pass::record`]. Dropped unrecorded, a
/// trial counts as a failure (the circuit opens again and will try again later).
#[must_use]
pub(crate) struct Pass<'a> {
    breakers: &'a Breakers,
    target: &'a str,
    trial: bool,
    recorded: bool,
}

impl Pass<'_> {
    fn record(mut self, ok: bool) {
        self.recorded = true;
        self.breakers.record(self.target, ok, Instant::now());
    }

    /// Records `resp`: a failure or a good answer, or nothing when a host was lost
    /// under it (a trial then just ends, and the next call may be the trial).
    fn answered<B>(mut self, resp: &http::Response<B>) {
        if resp.extensions().get::<HostLost>().is_some() {
            self.recorded = true;
            if self.trial {
                self.breakers.end_trial(self.target);
            }
            return;
        }
        self.record(!is_failure(resp.status()));
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            tracing::warn!(
                component = self.target,
                "the half-open trial call ended without an answer; counting it as failed"
            );
            self.breakers.record(self.target, false, Instant::now());
        }
    }
}

/// One breaker per target component.
#[derive(Debug, Default)]
pub struct Breakers {
    map: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Breaker>> {
        self.map.lock()
    }

    fn admit(&self, target: &str, now: Instant) -> Admit {
        let mut map = self.lock();
        let b = map.entry(target.to_string()).or_default();
        match b.open_until {
            None => Admit::Go { trial: false },
            Some(until) if now < until => Admit::Refuse(until - now),
            // Half-open: one trial at a time.
            Some(_) if b.trial => Admit::Refuse(Duration::from_secs(1)),
            Some(_) => {
                b.trial = true;
                Admit::Go { trial: true }
            }
        }
    }

    /// A pass for one call to `target`, or how long to wait when its circuit is open.
    fn pass<'a>(&'a self, target: &'a str) -> Result<Pass<'a>, Duration> {
        match self.admit(target, Instant::now()) {
            Admit::Go { trial } => Ok(Pass {
                breakers: self,
                target,
                trial,
                recorded: false,
            }),
            Admit::Refuse(wait) => Err(wait),
        }
    }

    fn end_trial(&self, target: &str) {
        if let Some(b) = self.lock().get_mut(target) {
            b.trial = false;
        }
    }

    fn record(&self, target: &str, ok: bool, now: Instant) {
        let mut map = self.lock();
        let b = map.entry(target.to_string()).or_default();
        if ok {
            if b.open_until.is_some() {
                tracing::info!(component = target, "circuit closed: calls go through again");
            }
            *b = Breaker::default();
            return;
        }
        b.failures = b.failures.saturating_add(1);
        if b.trial || (b.open_until.is_none() && b.failures >= TRIP_AFTER) {
            tracing::warn!(
                component = target,
                failures = b.failures,
                open_for_s = OPEN_FOR.as_secs(),
                "circuit opened: calls to this component fail fast"
            );
            b.open_until = Some(now + OPEN_FOR);
            b.trial = false;
        }
    }
}

/// Answers that count against a component's breaker.
fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Whether `method` may be sent again without changing the outcome.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// Call component `target` in-process with `req`, with the deadline, retries and
/// breaker described above.
pub async fn call(
    calls: &dyn Calls,
    target: &str,
    req: http::Request<WasiBody>,
    depth: u32,
    options: Option<&RequestOptions>,
) -> http::Response<WasiBody> {
    let deadline = options.and_then(|o| o.first_byte_timeout);
    let pass = match calls.breakers().pass(target) {
        Ok(pass) => pass,
        Err(wait) => return circuit_open(target, wait),
    };
    let (parts, body) = req.into_parts();
    if !is_idempotent(&parts.method) {
        let req = http::Request::from_parts(parts, body);
        let resp = attempt(calls, target, req, depth, deadline).await;
        pass.answered(&resp);
        return resp;
    }
    let max = calls.max_body(target).unwrap_or(1 << 20);
    let bytes = match Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                target,
                &format!("cannot send the request body: {e}"),
            )
        }
    };
    let mut pass = pass;
    let mut tries = 0;
    loop {
        let req = http::Request::from_parts(parts.clone(), replay(&bytes));
        let resp = attempt(calls, target, req, depth, deadline).await;
        let failed = is_failure(resp.status());
        pass.answered(&resp);
        let Some(wait) = BACKOFF
            .get(tries)
            .filter(|_| failed && resp.status() != StatusCode::INTERNAL_SERVER_ERROR)
        else {
            return resp;
        };
        tries += 1;
        tracing::info!(
            component = target,
            status = resp.status().as_u16(),
            attempt = tries + 1,
            "retrying an idempotent in-process call"
        );
        tokio::time::sleep(*wait).await;
        pass = match calls.breakers().pass(target) {
            Ok(pass) => pass,
            Err(wait) => return circuit_open(target, wait),
        };
    }
}

fn replay(bytes: &Bytes) -> WasiBody {
    Full::new(bytes.clone())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn attempt(
    calls: &dyn Calls,
    target: &str,
    req: http::Request<WasiBody>,
    depth: u32,
    deadline: Option<Duration>,
) -> http::Response<WasiBody> {
    let call = calls.call(target, req, depth);
    let Some(deadline) = deadline else {
        return call.await;
    };
    match tokio::time::timeout(deadline, call).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(
                component = target,
                deadline_ms = deadline.as_millis(),
                "in-process call passed the caller's first-byte timeout"
            );
            error(
                StatusCode::GATEWAY_TIMEOUT,
                target,
                &format!(
                    "no answer within the caller's {} ms first-byte timeout",
                    deadline.as_millis()
                ),
            )
        }
    }
}

fn circuit_open(target: &str, wait: Duration) -> http::Response<WasiBody> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let message = format!(
        "circuit open: `{target}` failed {TRIP_AFTER} calls in a row; failing fast \
         (the call was not sent)"
    );
    let mut resp = panal_gateway::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &message,
        serde_json::json!({ "component": target, "circuit": "open" }),
    );
    let headers = resp.headers_mut();
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(secs.max(1)),
    );
    headers.insert("x-panal-circuit", http::HeaderValue::from_static("open"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_fails_fast_half_opens_and_closes() {
        let b = Breakers::default();
        let t0 = Instant::now();
        let go = Admit::Go { trial: false };
        for _ in 0..TRIP_AFTER - 1 {
            assert_eq!(b.admit("pay", t0), go);
            b.record("pay", false, t0);
        }
        // A good answer resets the count.
        b.record("pay", true, t0);
        for _ in 0..TRIP_AFTER {
            assert_eq!(b.admit("pay", t0), go);
            b.record("pay", false, t0);
        }
        assert!(matches!(b.admit("pay", t0), Admit::Refuse(w) if w == OPEN_FOR));
        assert_eq!(b.admit("other", t0), go, "breakers are per target");
        // Half-open: one trial; a failure opens it again.
        let later = t0 + OPEN_FOR;
        assert_eq!(b.admit("pay", later), Admit::Go { trial: true });
        assert!(
            matches!(b.admit("pay", later), Admit::Refuse(_)),
            "one trial at a time"
        );
        b.record("pay", false, later);
        assert!(matches!(b.admit("pay", later), Admit::Refuse(w) if w == OPEN_FOR));
        // The next trial succeeds: closed.
        let again = later + OPEN_FOR;
        assert_eq!(b.admit("pay", again), Admit::Go { trial: true });
        b.record("pay", true, again);
        assert_eq!(b.admit("pay", again), go);
        assert_eq!(b.admit("pay", again), go);
    }

    #[test]
    fn a_trial_dropped_without_an_answer_reopens_the_circuit() {
        let b = Breakers::default();
        let t0 = Instant::now();
        for _ in 0..TRIP_AFTER {
            b.record("pay", false, t0);
        }
        // Wait out the open period by pretending it began long ago.
        b.lock().get_mut("pay").expect("breaker").open_until = Some(Instant::now());
        let trial = b.pass("pay").expect("the trial");
        assert!(b.pass("pay").is_err(), "one trial at a time");
        drop(trial);
        let breaker = &b.lock()["pay"];
        assert!(!breaker.trial, "the trial mark was cleared");
        assert!(breaker.open_until.is_some_and(|u| u > Instant::now()));
    }

    #[test]
    fn answers_for_a_lost_host_are_not_counted() {
        let b = Breakers::default();
        let lost = || {
            let mut r =
                error::<std::convert::Infallible>(StatusCode::SERVICE_UNAVAILABLE, "pay", "x");
            r.extensions_mut().insert(HostLost);
            r
        };
        for _ in 0..TRIP_AFTER * 3 {
            b.pass("pay").expect("closed").answered(&lost());
        }
        assert!(b.pass("pay").is_ok(), "a dead host opened the circuit");
        // Half-open: a lost host ends the trial without judging, and another may go.
        for _ in 0..TRIP_AFTER {
            b.record("pay", false, Instant::now());
        }
        b.lock().get_mut("pay").expect("breaker").open_until = Some(Instant::now());
        b.pass("pay").expect("the trial").answered(&lost());
        let again = b.pass("pay").expect("a new trial");
        again.answered(&error::<std::convert::Infallible>(
            StatusCode::OK,
            "pay",
            "ok",
        ));
        assert_eq!(b.admit("pay", Instant::now()), Admit::Go { trial: false });
    }

    #[test]
    fn what_counts_and_what_is_retried() {
        assert!(is_failure(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(is_failure(StatusCode::GATEWAY_TIMEOUT));
        assert!(!is_failure(StatusCode::NOT_FOUND));
        assert!(!is_failure(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_idempotent(&Method::GET) && is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
    }
}
