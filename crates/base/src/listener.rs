//! The accept loop both listeners (ingress and ops API) share, with the
//! limits that keep a base serving under connection floods: a cap on open
//! connections (the excess gets a `503` with a reason and is closed) and a
//! header read timeout (a client that trickles its headers, slowloris, is
//! cut off). Graceful shutdown lets in-flight requests finish (up to 10 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
}

/// Serves connections on `listener` with `service(peer)` until `shutdown`
/// changes. `what` names the listener in logs and refusals.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    limits: Limits,
    what: &'static str,
    service: impl Fn(SocketAddr) -> S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, listener = what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(listener = what, %peer, max = limits.max_connections, "connection refused: too many open");
                    let max = limits.max_connections;
                    tokio::spawn(async move {
                        let body = format!(
                            "berth base: the {what} has {max} connections open, its limit; retry later \
                             (the limit is the base's --max-connections)\n"
                        );
                        let reply = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
                             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            stream.write_all(reply.as_bytes()),
                        )
                        .await;
                    });
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(stream), service(peer)));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, listener = what, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = what,
            "connections still open after 10 s; closing them"
        );
    }
}
