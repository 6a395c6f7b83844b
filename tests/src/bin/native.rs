//! The native baselines of `just bench`: plain hyper servers doing what the `minimal`
//! and `bench` components do, with no WebAssembly in between.
//!
//! - `native hello`: 200 `hello`, the ceiling for any host;
//! - `native kv DIR`: `GET .../kv/{key}` does one get and one set through Panal's own
//!   SQLite backend (the same WAL file setup a component gets), answered with the value;
//! - `native chain DIR [NEXT_URL]`: `GET .../chain/{key}` does one get through the same
//!   SQLite backend, then, given `NEXT_URL`, `GET NEXT_URL/chain/{key}` over loopback
//!   HTTP (one pooled client); answered with the value (`-` when absent), a space and
//!   the next one's answer: a service of the classic deployment the `chain` scenario
//!   compares Panal with;
//! - `native publish NATS_URL`: `POST .../publish/{subject}` publishes the body with one
//!   shared async-nats client, 204.
//!
//! Each binds 127.0.0.1:0 and prints `listening on http://ADDR` once it accepts.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use panal::capabilities::keyvalue::{sqlite::SqliteBackend, KvBackend, KvStore};

enum Handler {
    Hello,
    Kv(Arc<dyn KvStore>),
    Chain(Arc<dyn KvStore>, Option<(reqwest::Client, String)>),
    Publish(async_nats::Client),
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

impl Handler {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let last = path.rsplit('/').next().unwrap_or("").to_string();
        match self {
            Self::Hello => text(StatusCode::OK, "hello"),
            Self::Kv(store) => {
                let bumped = async {
                    let old = store.get("default", &last).await?;
                    let n = old
                        .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    let new = (n + 1).to_string();
                    store.set("default", &last, new.as_bytes()).await?;
                    Ok::<_, panal::capabilities::keyvalue::KvError>(new)
                };
                match bumped.await {
                    Ok(v) => text(StatusCode::OK, v),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            Self::Chain(store, next) => match chain(&**store, next.as_ref(), &last).await {
                Ok(body) => text(StatusCode::OK, body),
                Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
            },
            Self::Publish(nats) => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
                };
                match nats.publish(last, body).await {
                    Ok(()) => text(StatusCode::NO_CONTENT, Bytes::new()),
                    Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                }
            }
        }
    }
}

async fn chain(
    store: &dyn KvStore,
    next: Option<&(reqwest::Client, String)>,
    key: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut body = store
        .get("default", key)
        .await?
        .unwrap_or_else(|| b"-".to_vec());
    if let Some((client, url)) = next {
        let resp = client.get(format!("{url}/chain/{key}")).send().await?;
        anyhow::ensure!(resp.status() == 200, "{url} answered {}", resp.status());
        body.push(b' ');
        body.extend(resp.bytes().await?);
    }
    Ok(body)
}

/// A component's storage in `dir`, as the host opens it (quota included).
async fn storage(dir: String) -> anyhow::Result<Arc<dyn KvStore>> {
    let backend = SqliteBackend::new(PathBuf::from(dir))?;
    let limits =
        panal::capabilities::keyvalue::quota::KvLimits::of(&panal::manifest::Limits::default());
    backend.namespace("native", limits).await
}

async fn handler(args: &[String]) -> anyhow::Result<Handler> {
    let arg = |i: usize, what: &str| {
        args.get(i)
            .cloned()
            .with_context(|| format!("missing {what}"))
    };
    Ok(match args.first().map(String::as_str) {
        Some("hello") => Handler::Hello,
        Some("kv") => Handler::Kv(storage(arg(1, "DIR")?).await?),
        Some("chain") => {
            let next = match args.get(2) {
                Some(url) => Some((reqwest::Client::builder().no_proxy().build()?, url.clone())),
                None => None,
            };
            Handler::Chain(storage(arg(1, "DIR")?).await?, next)
        }
        Some("publish") => Handler::Publish(async_nats::connect(arg(1, "NATS_URL")?).await?),
        _ => {
            anyhow::bail!("usage: native hello | kv DIR | chain DIR [NEXT_URL] | publish NATS_URL")
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let handler = Arc::new(handler(&args).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.answer(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
