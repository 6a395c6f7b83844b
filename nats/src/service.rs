//! The NATS service protocol ("micro", ADR-32) for Panal's hosts: each host is one
//! instance of a service named after its cluster, each component it runs one endpoint
//! on a subject of its own, answered by the queue group of every host that runs it.
//! `nats micro ls`, `info` and `stats` (or any NATS client asking `$SRV.*`) see the
//! hosts, their components and their counters.
//!
//! Written here rather than taken from async-nats's `service` module for one reason: a
//! stopping host must *drain* its endpoints (unsubscribe, then take every call the
//! server sent before it saw that), or calls in flight at that moment are lost.
//!
//! An answer may come in parts ([`Call::part`], then [`Call::reply`]), which
//! [`Nats::request_parts`] reads in order: NATS keeps the order of one publisher's
//! messages to one subscriber.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::{from_message, Msg, MsgError, Nats};

/// The queue group every endpoint joins.
const QUEUE: &str = "q";

/// This host's instance of a service.
pub struct Service {
    nats: Nats,
    info: Arc<Instance>,
    /// Tells the endpoints to drain.
    stop: watch::Sender<bool>,
    verbs: tokio::task::JoinHandle<()>,
}

/// What `$SRV` requests are answered from.
struct Instance {
    name: String,
    id: String,
    version: String,
    description: String,
    metadata: HashMap<String, String>,
    started: String,
    endpoints: Mutex<Vec<Endpoint>>,
}

#[derive(Default, Clone)]
struct Endpoint {
    /// Tells this endpoint alone to drain (see [`Service::remove`]).
    stop: Option<Arc<watch::Sender<bool>>>,
    name: String,
    subject: String,
    metadata: HashMap<String, String>,
    requests: u64,
    errors: u64,
    last_error: String,
    processing: Duration,
}

/// One request to an endpoint, answered once with [`Call::reply`] (after any parts).
pub struct Call {
    /// The request (its reply subject is where the answer goes).
    pub msg: Msg,
    nats: Nats,
    info: Arc<Instance>,
    endpoint: String,
    issued: Instant,
}

impl Nats {
    /// Announce this host as an instance of service `name` (`A-Z a-z 0-9 _ -`) at
    /// `version` (semver), with `metadata` every `info` and `ping` shows.
    pub async fn service(
        &self,
        name: &str,
        version: &str,
        description: &str,
        metadata: HashMap<String, String>,
    ) -> Result<Service, MsgError> {
        let info = Arc::new(Instance {
            name: name.to_string(),
            id: self
                .inbox()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string(),
            version: version.to_string(),
            description: description.to_string(),
            metadata,
            started: rfc3339(SystemTime::now()),
            endpoints: Mutex::new(Vec::new()),
        });
        let mut verbs = Vec::new();
        for verb in ["PING", "INFO", "STATS"] {
            for subject in [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{name}"),
                format!("$SRV.{verb}.{name}.{}", info.id),
            ] {
                verbs.push(self.subscribe(&subject, None).await?);
            }
        }
        let (stop, _) = watch::channel(false);
        let verbs = tokio::spawn(answer_verbs(
            self.clone(),
            info.clone(),
            futures::stream::select_all(verbs),
        ));
        Ok(Service {
            nats: self.clone(),
            info,
            stop,
            verbs,
        })
    }

    /// A fresh inbox subject, only this client subscribes to.
    pub fn inbox(&self) -> String {
        self.client.new_inbox()
    }

    /// Send `msg` as a request and read its answer as it comes: every reply until
    /// `wait` passes without one. An item is an error when nobody answers the subject
    /// (no responders) or nothing comes within `wait`; the stream ends after it.
    pub async fn request_parts(
        &self,
        mut msg: Msg,
        wait: Duration,
    ) -> Result<BoxStream<'static, Result<Msg, MsgError>>, MsgError> {
        if !self.connected() {
            return Err(MsgError::Connection("not connected to NATS".into()));
        }
        let (inbox, replies) = self.replies.open(&self.client).await?;
        msg.reply = Some(inbox);
        let subject = msg.subject.clone();
        self.publish(msg).await?;
        let parts = futures::stream::unfold(Some(replies), move |replies| {
            let subject = subject.clone();
            async move {
                let mut replies = replies?;
                match tokio::time::timeout(wait, replies.next()).await {
                    Ok(Some(m)) if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) => {
                        let why = format!("no responders on subject `{subject}`");
                        Some((Err(MsgError::Other(why)), None))
                    }
                    Ok(Some(m)) => Some((Ok(from_message(m)), Some(replies))),
                    Ok(None) => None,
                    Err(_) => Some((Err(MsgError::Timeout), None)),
                }
            }
        });
        Ok(parts.boxed())
    }
}

impl Service {
    /// Answer `subject` as a member of its queue group, listed as endpoint `name` with
    /// `metadata`. The stream ends once the service stopped and every call the server
    /// sent before it saw the stop was taken.
    pub async fn endpoint(
        &self,
        name: &str,
        subject: &str,
        metadata: HashMap<String, String>,
    ) -> Result<BoxStream<'static, Call>, MsgError> {
        let sub = self
            .nats
            .client
            .queue_subscribe(subject.to_string(), QUEUE.to_string())
            .await
            .map_err(|e| MsgError::Connection(format!("endpoint `{name}`: {e}")))?;
        let (stop_this, this_stopped) = watch::channel(false);
        {
            let mut endpoints = self.info.endpoints.lock();
            endpoints.push(Endpoint {
                stop: Some(Arc::new(stop_this)),
                name: name.to_string(),
                subject: subject.to_string(),
                metadata,
                ..Endpoint::default()
            });
        }
        let (nats, info, name) = (self.nats.clone(), self.info.clone(), name.to_string());
        Ok(draining(sub, self.stop.subscribe(), this_stopped)
            .map(move |m| Call {
                msg: from_message(m),
                nats: nats.clone(),
                info: info.clone(),
                endpoint: name.clone(),
                issued: Instant::now(),
            })
            .boxed())
    }

    /// Take endpoint `name` out of the service: it drains as on [`Service::stop`] (its
    /// stream yields what was already on its way, then ends) and is no longer listed.
    pub async fn remove(&self, name: &str) {
        {
            let mut endpoints = self.info.endpoints.lock();
            endpoints.retain(|e| {
                if e.name != name {
                    return true;
                }
                if let Some(stop) = &e.stop {
                    let _ = stop.send(true);
                }
                false
            });
        }
        tokio::task::yield_now().await;
        let _ = self.nats.flush().await;
    }

    /// Set `key` in the metadata of endpoint `name` (what `nats micro info` shows).
    pub fn set_metadata(&self, name: &str, key: &str, value: &str) {
        {
            let mut endpoints = self.info.endpoints.lock();
            for e in endpoints.iter_mut().filter(|e| e.name == name) {
                e.metadata.insert(key.to_string(), value.to_string());
            }
        }
    }

    /// Leave the service and drain every endpoint: no new calls come here once this
    /// returns, and the endpoints' streams yield what was already on its way, then end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.verbs.abort();
        // The drains are queued by the endpoint streams; the flush pushes them out.
        tokio::task::yield_now().await;
        let _ = self.nats.flush().await;
    }
}

impl Call {
    /// Send one part of the answer ahead of the last.
    pub async fn part(&self, headers: &[(String, String)], payload: Bytes) -> Result<(), MsgError> {
        let Some(reply) = self.msg.reply.clone() else {
            return Ok(());
        };
        self.nats
            .publish(Msg {
                subject: reply,
                reply: None,
                headers: headers.to_vec(),
                payload,
            })
            .await
    }

    /// Send the (last part of the) answer, and count the call in the endpoint's
    /// stats (`error`: why it failed, when it did).
    pub async fn reply(
        self,
        headers: &[(String, String)],
        payload: Bytes,
        error: Option<String>,
    ) -> Result<(), MsgError> {
        let sent = self.part(headers, payload).await;
        {
            let mut endpoints = self.info.endpoints.lock();
            if let Some(e) = endpoints.iter_mut().find(|e| e.name == self.endpoint) {
                e.requests += 1;
                e.processing += self.issued.elapsed();
                if let Some(why) = error {
                    e.errors += 1;
                    e.last_error = why;
                }
            }
        }
        sent
    }
}

/// `sub`'s messages until `all` or `this` says stop; then a drain (unsubscribe, and a
/// round trip so the server's messages already on their way still arrive), then the
/// rest, then the end.
fn draining(
    sub: async_nats::Subscriber,
    all: watch::Receiver<bool>,
    this: watch::Receiver<bool>,
) -> BoxStream<'static, async_nats::Message> {
    futures::stream::unfold(
        (sub, (all, this), false),
        |(mut sub, mut stops, mut drained)| async move {
            loop {
                if drained {
                    let m = sub.next().await?;
                    return Some((m, (sub, stops, true)));
                }
                let (all, this) = &mut stops;
                tokio::select! {
                    m = sub.next() => return m.map(|m| (m, (sub, stops, false))),
                    _ = stopped(all) => {}
                    _ = stopped(this) => {}
                }
                let _ = sub.drain().await;
                drained = true;
            }
        },
    )
    .boxed()
}

/// Resolves once `stop` says stop, or its sender is gone (the service was dropped).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn answer_verbs(
    nats: Nats,
    info: Arc<Instance>,
    mut requests: futures::stream::SelectAll<BoxStream<'static, Msg>>,
) {
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let verb = request.subject.split('.').nth(1).unwrap_or_default();
        let Ok(body) = info.answer(verb) else {
            continue;
        };
        let msg = Msg {
            subject: reply,
            reply: None,
            headers: Vec::new(),
            payload: Bytes::from(body.to_string()),
        };
        let _ = nats.publish(msg).await;
    }
}

impl Instance {
    /// The answer to `$SRV.<verb>`, in the shapes ADR-32 gives.
    fn answer(&self, verb: &str) -> Result<Value, MsgError> {
        let endpoints = self.endpoints.lock().clone();
        let mut out = json!({
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "metadata": self.metadata,
        });
        match verb {
            "PING" => out["type"] = json!("io.nats.micro.v1.ping_response"),
            "INFO" => {
                out["type"] = json!("io.nats.micro.v1.info_response");
                out["description"] = json!(self.description);
                out["endpoints"] = endpoints
                    .iter()
                    .map(|e| {
                        json!({ "name": e.name, "subject": e.subject,
                                "queue_group": QUEUE, "metadata": e.metadata })
                    })
                    .collect();
            }
            _ => {
                out["type"] = json!("io.nats.micro.v1.stats_response");
                out["started"] = json!(self.started);
                out["endpoints"] = endpoints.iter().map(Endpoint::stats).collect();
            }
        }
        Ok(out)
    }
}

impl Endpoint {
    fn stats(&self) -> Value {
        let total = u64::try_from(self.processing.as_nanos()).unwrap_or(u64::MAX);
        json!({
            "name": self.name,
            "subject": self.subject,
            "queue_group": QUEUE,
            "num_requests": self.requests,
            "num_errors": self.errors,
            "last_error": self.last_error,
            "processing_time": total,
            "average_processing_time": total.checked_div(self.requests).unwrap_or(0),
        })
    }
}

/// `at` as RFC 3339 in UTC (`2026-12-01T14:05:09Z`).
fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The Gregorian `(year, month, day)` `days` after 1970-01-01 (Howard Hinnant's
/// algorithm); the host's log timestamps use it too.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let at = UNIX_EPOCH + Duration::from_secs(1_796_137_509);
        assert_eq!(rfc3339(at), "2026-12-01T15:05:09Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
