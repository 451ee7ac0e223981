//! The accept loop both listeners (ingress and ops API) share, with the
//! limits that keep a base serving under connection floods: a cap on open
//! connections (the excess gets a `503` with a reason and is closed) and a
//! header read timeout (a client that trickles its headers, slowloris, is
//! cut off). Graceful shutdown lets in-flight requests finish (up to 10 s).
//! At start the process's open-files limit is raised to what the caps need
//! ([`fit_fd_limit`]), as far as the hard limit allows. With TLS
//! (`--tls-cert`/`--tls-key`), a connection under the cap does its
//! handshake in its own task, within the header read timeout.
//!
//! A connection speaks HTTP/1.1 or HTTP/2, told apart by its first bytes
//! (HTTP/2 with prior knowledge: the client opens with its preface; TLS
//! offers no ALPN choice). The fleet gateway sends its requests to a base
//! as HTTP/2 streams on one connection per gateway thread (see
//! `berth_gateway::BaseProtocol` for why); clients that come straight to a
//! base mostly speak HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_api::threads::Acceptor;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, watch};

/// How often an HTTP/2 connection is pinged, so one whose peer vanished
/// without closing it is closed (and its permit given back).
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of one listener.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// TLS every connection is served over, if any.
    pub tls: Option<berth_api::tls::ServerTls>,
    /// The open-connection permits (`max_connections` of them), shared by
    /// every accept loop of the listener (one per ingress thread).
    pub connections: Arc<Semaphore>,
}

/// Serves connections on `listener` with `service(peer)` until `shutdown`
/// changes. `what` names the listener in logs and refusals.
pub(crate) async fn serve<S, B>(
    mut listener: Acceptor,
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
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let permits = limits.connections.clone();
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer, open) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, listener = what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    drop(open);
                    tracing::warn!(listener = what, %peer, max = limits.max_connections, "connection refused: too many open");
                    let linger = lingering.clone().try_acquire_owned().ok();
                    tokio::spawn(refuse(stream, what, limits.max_connections, linger));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                if let Some(tls) = limits.tls.clone() {
                    let (watcher, http, service) = (graceful.watcher(), http.clone(), service(peer));
                    let handshake_timeout = limits.header_read_timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                            Ok(Ok(conn)) => {
                                let connection = http
                                    .serve_connection(TokioIo::new(conn), service)
                                    .into_owned();
                                if let Err(e) = watcher.watch(connection).await {
                                    tracing::debug!(error = %e, listener = what, "connection ended with an error");
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, listener = what, %peer, "TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::debug!(listener = what, %peer, "TLS handshake timed out")
                            }
                        }
                        drop((permit, open));
                    });
                    continue;
                }
                let connection = http
                    .serve_connection(TokioIo::new(stream), service(peer))
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, listener = what, "connection ended with an error");
                    }
                    drop((permit, open));
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

/// Most refused connections drained at once before they are closed; past
/// it, a refusal is written and closed at once.
const MAX_LINGERING: usize = 1024;

/// Answers a connection over the cap with a `503` naming the limit, and
/// closes it. With `linger`, the close is graceful: the write side is shut
/// first and what the client sent is read and dropped (up to 500 ms) so
/// the kernel sends a FIN, not a reset that would discard the `503` before
/// an HTTP client that already sent its request reads it.
async fn refuse(
    mut stream: tokio::net::TcpStream,
    what: &'static str,
    max: usize,
    linger: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    use tokio::io::AsyncReadExt as _;
    let body = format!(
        "berth base: the {what} has {max} connections open, its limit; retry later \
         (the limit is the base's --max-connections)\n"
    );
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let written = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply.as_bytes()))
        .await
        .is_ok_and(|w| w.is_ok());
    if !written || linger.is_none() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = 64 << 10;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// Descriptors a base needs besides its connections: stores, cache files,
/// outgoing requests, log files.
const FD_MARGIN: u64 = 512;

/// Raises this process's soft open-files limit (`RLIMIT_NOFILE`) to its
/// hard limit, as Go's runtime does at start, so that `max_connections` per
/// listener can really be reached: with the usual soft limit of 1024, the
/// default cap of 4096 would fail accepts with "too many open files" long
/// before it. Warns, naming the figures and the flag, when even the hard
/// limit is too low for both listeners at their cap.
#[allow(unsafe_code)]
pub(crate) fn fit_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            // SAFETY: setrlimit only reads the struct it is given.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
                limit.rlim_cur = before;
            }
        }
        let needed = 2 * (max_connections + MAX_LINGERING) as u64 + FD_MARGIN;
        if limit.rlim_cur < needed {
            tracing::warn!(
                open_files = limit.rlim_cur,
                needed,
                "the process may open {} files, fewer than two listeners at --max-connections {} need \
                 ({needed}); raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections",
                limit.rlim_cur,
                max_connections
            );
        } else if before < limit.rlim_cur {
            tracing::debug!(
                from = before,
                to = limit.rlim_cur,
                "raised the open-files limit"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}
