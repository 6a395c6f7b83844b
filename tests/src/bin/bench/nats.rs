//! Raw async-nats baselines on the bench's own `nats-server`: the publish rate of one
//! client, and request-reply round trips to a raw responder and to a component.

use std::time::Instant;

use futures::StreamExt as _;

const MESSAGES: usize = 200_000;
const ROUND_TRIPS: usize = 2000;

/// Messages per second one client publishes (64 B each), flush included.
pub async fn raw_publish_rate(url: &str) -> f64 {
    let c = async_nats::connect(url).await.expect("connect to nats");
    let payload = bytes::Bytes::from(vec![b'x'; 64]);
    let started = Instant::now();
    for _ in 0..MESSAGES {
        c.publish("bench.raw-events", payload.clone())
            .await
            .expect("publish");
    }
    c.flush().await.expect("flush");
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

/// p50 and p99 in µs of each responder.
pub struct RoundTrips {
    pub raw: (f64, f64),
    pub component: (f64, f64),
}

async fn time(c: &async_nats::Client, subject: &str) -> (f64, f64) {
    let payload = bytes::Bytes::from_static(b"ping");
    for _ in 0..200 {
        c.request(subject.to_string(), payload.clone())
            .await
            .unwrap_or_else(|e| panic!("request to {subject}: {e}"));
    }
    let mut us = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        let reply = c
            .request(subject.to_string(), payload.clone())
            .await
            .unwrap_or_else(|e| panic!("request to {subject}: {e}"));
        us.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(reply.payload, payload, "{subject} answered something else");
    }
    us.sort_by(f64::total_cmp);
    (us[us.len() / 2], us[us.len() * 99 / 100])
}

/// One at a time, the same client: first to a raw async-nats responder on its own
/// connection, then to the component subscribed on `bench.echo`.
pub async fn round_trips(url: &str) -> RoundTrips {
    let responder = async_nats::connect(url).await.expect("connect to nats");
    let mut sub = responder
        .subscribe("bench.raw")
        .await
        .expect("subscribe bench.raw");
    let echo = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let c = async_nats::connect(url).await.expect("connect to nats");
    let raw = time(&c, "bench.raw").await;
    let component = time(&c, "bench.echo").await;
    echo.abort();
    RoundTrips { raw, component }
}
