//! One subscription for every reply the client waits for. A request's reply subject is
//! `<prefix>.<n>` under one wildcard subscription `<prefix>.*`, and a task hands each
//! reply to the request waiting on its token. A subscription per request would cost a
//! SUB and an UNSUB on the wire and a new subscription in the server for every call.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Poll};

use async_nats::{Client, Message};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::MsgError;

type Waiting = Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>;

/// The replies of one client.
pub(crate) struct Replies {
    prefix: String,
    next: AtomicU64,
    waiting: Arc<Waiting>,
    /// Set once the wildcard subscription is made (on the first request).
    subscribed: tokio::sync::OnceCell<()>,
}

impl Replies {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            prefix: client.new_inbox(),
            next: AtomicU64::new(0),
            waiting: Arc::default(),
            subscribed: tokio::sync::OnceCell::new(),
        }
    }

    /// A fresh reply subject and the stream of what comes to it (until dropped).
    pub(crate) async fn open(&self, client: &Client) -> Result<(String, Inbox), MsgError> {
        self.subscribed
            .get_or_try_init(|| async {
                let mut sub = client
                    .subscribe(format!("{}.*", self.prefix))
                    .await
                    .map_err(|e| MsgError::Connection(e.to_string()))?;
                let waiting = Arc::downgrade(&self.waiting);
                tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        let Some(waiting) = waiting.upgrade() else {
                            break;
                        };
                        let token = m.subject.rsplit('.').next().and_then(|t| t.parse().ok());
                        let map = waiting.lock();
                        if let Some(to) = token.and_then(|t| map.get(&t)) {
                            let _ = to.send(m);
                        }
                    }
                });
                Ok::<_, MsgError>(())
            })
            .await?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiting.lock().insert(token, tx);
        let inbox = Inbox {
            rx,
            token,
            waiting: self.waiting.clone(),
        };
        Ok((format!("{}.{token}", self.prefix), inbox))
    }
}

/// The replies to one request; dropping it stops taking them.
pub(crate) struct Inbox {
    rx: mpsc::UnboundedReceiver<Message>,
    token: u64,
    waiting: Arc<Waiting>,
}

impl Stream for Inbox {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.token);
    }
}
