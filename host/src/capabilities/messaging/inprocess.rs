//! The embedded broker: subjects routed inside the host, NATS semantics (wildcards,
//! queue groups with one delivery per group, request/reply through an inbox subject).
//! Durable subscriptions retry in memory. Nothing survives a restart; use NATS (with
//! JetStream) for that.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{subject_matches, Ack, Broker, DurableSub, Incoming, Msg, MsgError, Settle};

/// Buffer per subscription; a subscriber that falls this far behind loses messages,
/// like a slow NATS core subscriber.
const BUFFER: usize = 4096;

struct Sub {
    pattern: String,
    queue: Option<String>,
    tx: Tx,
}

/// Plain subscriptions drop what overflows their buffer, like NATS core; durable ones
/// keep everything.
enum Tx {
    Bounded(mpsc::Sender<Msg>),
    Unbounded(mpsc::UnboundedSender<Msg>),
}

impl Tx {
    fn try_send(&self, msg: Msg) -> bool {
        match self {
            Tx::Bounded(tx) => tx.try_send(msg).is_ok(),
            Tx::Unbounded(tx) => tx.send(msg).is_ok(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Tx::Bounded(tx) => tx.is_closed(),
            Tx::Unbounded(tx) => tx.is_closed(),
        }
    }
}

/// The in-process broker.
#[derive(Default)]
pub struct InProcessBroker {
    subs: Mutex<Vec<Sub>>,
    /// Round-robin position per queue group.
    turns: Mutex<HashMap<(String, String), usize>>,
    inbox: AtomicUsize,
}

impl InProcessBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn route(&self, msg: &Msg) {
        let mut subs = self.subs.lock();
        subs.retain(|s| !s.tx.is_closed());
        let mut groups: HashMap<(String, String), Vec<&Sub>> = HashMap::new();
        for sub in subs
            .iter()
            .filter(|s| subject_matches(&s.pattern, &msg.subject))
        {
            match &sub.queue {
                None => {
                    if !sub.tx.try_send(msg.clone()) {
                        tracing::warn!(subject = %msg.subject, "in-process subscriber is full; message dropped");
                    }
                }
                Some(q) => groups
                    .entry((sub.pattern.clone(), q.clone()))
                    .or_default()
                    .push(sub),
            }
        }
        let mut turns = self.turns.lock();
        for (key, members) in groups {
            let turn = turns.entry(key).or_insert(0);
            let member = members[*turn % members.len()];
            *turn = turn.wrapping_add(1);
            if !member.tx.try_send(msg.clone()) {
                tracing::warn!(subject = %msg.subject, "in-process queue member is full; message dropped");
            }
        }
    }

    fn add(&self, pattern: &str, queue: Option<&str>) -> mpsc::Receiver<Msg> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.push(pattern, queue, Tx::Bounded(tx));
        rx
    }

    fn push(&self, pattern: &str, queue: Option<&str>, tx: Tx) {
        self.subs.lock().push(Sub {
            pattern: pattern.to_string(),
            queue: queue.map(str::to_string),
            tx,
        });
    }
}

#[async_trait]
impl Broker for InProcessBroker {
    async fn publish(&self, msg: Msg) -> Result<(), MsgError> {
        self.route(&msg);
        Ok(())
    }

    async fn request(
        &self,
        mut msg: Msg,
        timeout: Duration,
        expected: usize,
    ) -> Result<Vec<Msg>, MsgError> {
        let inbox = format!("_INBOX.{}", self.inbox.fetch_add(1, Ordering::Relaxed));
        let mut rx = self.add(&inbox, None);
        msg.reply = Some(inbox);
        self.route(&msg);
        collect_replies(&mut rx, timeout, expected).await
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BoxStream<'static, Msg>, MsgError> {
        let rx = self.add(subject, queue);
        Ok(tokio_stream_from(rx))
    }

    /// Redelivery lives in memory: a failed message comes back after its delay, and a
    /// restart forgets it (NATS with JetStream keeps it instead).
    async fn subscribe_durable(
        &self,
        sub: &DurableSub,
    ) -> Result<BoxStream<'static, Incoming>, MsgError> {
        let (tx, fresh) = mpsc::unbounded_channel();
        self.push(&sub.subject, Some(&sub.consumer), Tx::Unbounded(tx));
        let (again_tx, again) = mpsc::unbounded_channel::<(Msg, u32)>();
        let first = futures::stream::unfold(fresh, |mut rx| async move {
            rx.recv().await.map(|m| ((m, 1), rx))
        });
        let retried =
            futures::stream::unfold(
                again,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let incoming = futures::stream::select(first, retried).map(move |(msg, attempt)| {
            let ack = MemoryAck {
                msg: msg.clone(),
                attempt,
                again: again_tx.clone(),
            };
            Incoming {
                msg,
                attempt,
                ack: Box::new(ack),
            }
        });
        Ok(incoming.boxed())
    }
}

struct MemoryAck {
    msg: Msg,
    attempt: u32,
    again: mpsc::UnboundedSender<(Msg, u32)>,
}

#[async_trait]
impl Ack for MemoryAck {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), MsgError> {
        if let Settle::Retry(delay) = how {
            let MemoryAck {
                msg,
                attempt,
                again,
            } = *self;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // The subscription may be gone (shutdown): nothing to redeliver to.
                let _ = again.send((msg, attempt + 1));
            });
        }
        Ok(())
    }
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Msg>) -> BoxStream<'static, Msg> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Up to `expected` replies before `timeout`; none at all is a timeout.
pub(super) async fn collect_replies(
    rx: &mut mpsc::Receiver<Msg>,
    timeout: Duration,
    expected: usize,
) -> Result<Vec<Msg>, MsgError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut replies = Vec::new();
    while replies.len() < expected.max(1) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => replies.push(m),
            Ok(None) | Err(_) => break,
        }
    }
    if replies.is_empty() {
        Err(MsgError::Timeout)
    } else {
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::messaging::StreamSpec;
    use std::sync::Arc;

    fn msg(subject: &str, body: &str) -> Msg {
        Msg {
            subject: subject.into(),
            payload: body.to_string().into(),
            ..Msg::default()
        }
    }

    #[tokio::test]
    async fn fan_out_and_one_delivery_per_queue_group() {
        let b = InProcessBroker::new();
        let mut all = b.subscribe("jobs.>", None).await.expect("sub");
        let mut q1 = b.subscribe("jobs.*", Some("g")).await.expect("sub");
        let mut q2 = b.subscribe("jobs.*", Some("g")).await.expect("sub");
        for i in 0..10 {
            b.publish(msg("jobs.done", &i.to_string()))
                .await
                .expect("pub");
        }
        for _ in 0..10 {
            assert!(all.next().await.is_some());
        }
        let mut got = 0;
        for q in [&mut q1, &mut q2] {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), q.next()).await
            {
                got += 1;
            }
        }
        assert_eq!(got, 10);
    }

    #[tokio::test]
    async fn request_reply_and_timeout() {
        let b = Arc::new(InProcessBroker::new());
        let mut svc = b.subscribe("echo", None).await.expect("sub");
        let responder = b.clone();
        tokio::spawn(async move {
            while let Some(m) = svc.next().await {
                let reply = Msg {
                    subject: m.reply.clone().unwrap_or_default(),
                    payload: m.payload.clone(),
                    ..Msg::default()
                };
                responder.publish(reply).await.expect("reply");
            }
        });
        let replies = b
            .request(msg("echo", "hi"), Duration::from_secs(2), 1)
            .await
            .expect("reply");
        assert_eq!(replies[0].payload, "hi");
        let err = b
            .request(msg("nobody", "x"), Duration::from_millis(50), 1)
            .await;
        assert_eq!(err, Err(MsgError::Timeout));
    }

    #[tokio::test]
    async fn durable_deliveries_come_back_until_settled() {
        let b = InProcessBroker::new();
        let sub = DurableSub {
            subject: "work.*".into(),
            stream: StreamSpec {
                name: "WORK".into(),
                subjects: vec!["work.>".into()],
                replicas: 0,
            },
            consumer: "d-work_any".into(),
            max_attempts: 3,
            ack_wait: Duration::from_secs(30),
            batch: 8,
        };
        let mut incoming = b.subscribe_durable(&sub).await.expect("sub");
        b.publish(msg("work.x", "1")).await.expect("pub");
        let first = incoming.next().await.expect("delivery");
        assert_eq!(first.attempt, 1);
        first
            .ack
            .settle(Settle::Retry(Duration::from_millis(10)))
            .await
            .expect("retry");
        let second = incoming.next().await.expect("redelivery");
        assert_eq!(
            (second.attempt, second.msg.payload.as_ref()),
            (2, &b"1"[..])
        );
        second.ack.settle(Settle::Done).await.expect("ack");
        let none = tokio::time::timeout(Duration::from_millis(100), incoming.next()).await;
        assert!(none.is_err(), "a settled message came back");
    }
}
