//! The accept loop every listener runs: connection caps, header and idle timeouts,
//! HTTP/1.1 and HTTP/2 (by ALPN over TLS, by preface in the clear), graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::conn::{Activity, ConnLimits, Counted, Watched};
use crate::server::{ClientAddr, LocalAddr};
use crate::tls::Acceptor;
use crate::Body;

/// How long in-flight requests may take to finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(30);

/// Serve `listener` with `handler` until `shutdown` resolves, then let in-flight
/// requests finish (the host's admin API uses this too). Connections are guarded by
/// `limits` (see [`crate::conn`]); with `tls`, each is HTTPS, its handshake bounded by
/// the header timeout.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: ConnLimits,
    tls: Option<Acceptor>,
    shutdown: impl Future<Output = ()>,
    handler: F,
) -> std::io::Result<()>
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let tracker = crate::conn::Tracker::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Running out of file descriptors must not end the server.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let open = match tracker.admit(peer.ip()) {
            Ok(open) => open,
            Err(refusal) => {
                tracing::warn!(%peer, ?refusal, "limit hit: connections; refusing with 503");
                tokio::spawn(refuse(stream, refusal));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let activity = Arc::new(Activity::default());
        let watched = Watched::new(stream, activity.clone(), limits);
        let handler = handler.clone();
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            if let Some(local) = local {
                req.extensions_mut().insert(LocalAddr(local));
            }
            let running = activity.begin();
            let handler = handler.clone();
            async move {
                let resp = handler(req).await;
                Ok::<_, Infallible>(resp.map(|body| Counted::new(body, running)))
            }
        });
        // Subscribed now: a shutdown waits for this connection, handshake and all.
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                None => serve(&builder, watcher, watched, service).await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, tls.accept(watched));
                    match handshake.await {
                        Ok(Ok(stream)) => serve(&builder, watcher, stream, service).await,
                        Ok(Err(err)) => Err(format!("TLS handshake: {err}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(err) = served {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => {
            tracing::warn!("in-flight requests still running after the grace period; closing");
        }
    }
    Ok(())
}

/// One connection, HTTP/1.1 or HTTP/2, watched for a graceful shutdown.
async fn serve<IO, S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: IO,
    service: S,
) -> Result<(), crate::BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Counted>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    watcher.watch(conn.into_owned()).await
}

/// Answer a connection over the caps with 503 and close it, without holding up the
/// accept loop (a client that does not read gets a second at most).
async fn refuse(mut stream: tokio::net::TcpStream, refusal: crate::conn::Refusal) {
    use tokio::io::AsyncWriteExt;
    let answer = refusal.response();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}
