//! Connections to one base's ingress, per address: one shared HTTP/2
//! connection per listener thread (the default), or pooled keep-alive
//! HTTP/1 connections ([`BaseProtocol`] says why HTTP/2).
//!
//! With HTTP/2, the first request a listener thread sends to a base opens
//! the connection (the others wait for it rather than open their own) and
//! every later one is a stream on it; a connection the base closed is
//! replaced on the next request, and a request it could not even start on
//! a closed one is sent on the new one.
//!
//! With HTTP/1, each base address has its own small pool (a mutex held
//! only to push or pop), so requests to different bases never wait on one
//! another and a request costs no extra task: a connection goes back to
//! its pool when its response body has been read to the end, from the body
//! itself. A pooled connection is checked ready before it is used; one the
//! base closed meanwhile is dropped, and a request it could not even start
//! is sent on another connection (that is not a failure of the replica).
//! Connections idle for longer than [`IDLE_TIMEOUT`] are closed.
//!
//! With listener threads (`GatewayConfig::threads`), each thread keeps its
//! own connections ([`thread_slot`]): a connection's task runs on the
//! runtime of the thread that opened it, so lending it to a request on
//! another thread would cost a wake-up across threads per request.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::BaseProtocol;

/// How long a connection may wait in the pool before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per base address.
pub const MAX_IDLE: usize = 512;
/// How long a new connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle HTTP/2 connection is pinged, so a base that vanished
/// without closing it (a host gone, a partition) is noticed.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before its connection is closed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle lists per base address: one per listener thread (more threads
/// share lists modulo this).
const SLOTS: usize = 16;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as listener thread `n` (1-based), whose
/// requests use their own idle connections; 0 (the default) is every
/// other thread.
pub fn set_thread_slot(n: usize) {
    SLOT.with(|slot| slot.set(n % SLOTS));
}

/// The idle list of the current thread (see [`set_thread_slot`]).
pub fn thread_slot() -> usize {
    SLOT.with(Cell::get)
}

/// The request body sent to a base (buffered, so it can be sent again).
pub type UpstreamBody = Full<Bytes>;

/// Why a request got no response from a base.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The base address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Connecting took longer than [`CONNECT_TIMEOUT`].
    #[error("cannot connect to {address}: timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout {
        /// The base address.
        address: String,
    },
    /// The HTTP exchange failed (handshake, reset, closed before a response).
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// The connections to one base address.
#[derive(Debug)]
pub struct Upstream {
    address: String,
    resolved: Option<SocketAddr>,
    protocol: BaseProtocol,
    /// HTTP/1: idle connections, one list per listener thread ([`thread_slot`]).
    idle: [Mutex<VecDeque<Idle>>; SLOTS],
    /// HTTP/2: the shared connection of each listener thread. An async
    /// lock, held across a connect, so one thread opens one connection.
    shared: [tokio::sync::Mutex<Option<http2::SendRequest<UpstreamBody>>>; SLOTS],
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// An HTTP/1 connection lent to one request; it goes back to the pool
/// through [`Lease::release`] once the response was read whole, and is
/// closed if the lease is dropped without that. (An HTTP/2 request's lease
/// holds no connection: its stream ends with its response body.)
#[derive(Debug)]
pub struct Lease(Option<Pooled>);

/// The HTTP/1 connection a [`Lease`] lends, and where it goes back.
#[derive(Debug)]
struct Pooled {
    sender: SendRequest<UpstreamBody>,
    upstream: Arc<Upstream>,
    slot: usize,
}

impl Lease {
    /// The response was read to its end: the connection may serve another.
    pub fn release(self) {
        if let Some(Pooled {
            sender,
            upstream,
            slot,
        }) = self.0
        {
            upstream.put(slot, sender);
        }
    }
}

impl Upstream {
    /// The connections to `address` (`host:port`) in `protocol`, none open yet.
    pub fn new(address: &str, protocol: BaseProtocol) -> Self {
        Self {
            address: address.to_string(),
            resolved: address.parse().ok(),
            protocol,
            idle: std::array::from_fn(|_| Mutex::new(VecDeque::new())),
            shared: std::array::from_fn(|_| tokio::sync::Mutex::new(None)),
        }
    }

    /// Shared HTTP/2 connections open now (one per listener thread that
    /// has sent this base a request).
    pub fn shared(&self) -> usize {
        self.shared
            .iter()
            .filter(|slot| {
                slot.try_lock()
                    .is_ok_and(|s| s.as_ref().is_some_and(|s| !s.is_closed()))
            })
            .count()
    }

    /// Connections idle in the pool now and not closed by the base.
    pub fn idle(&self) -> usize {
        self.idle
            .iter()
            .map(|list| {
                let idle = list.lock().expect("upstream pool");
                idle.iter().filter(|i| !i.sender.is_closed()).count()
            })
            .sum()
    }

    /// Sends `request` (origin-form URI, Host set) on this thread's HTTP/2
    /// connection or a pooled HTTP/1 one (or a new one), and returns the
    /// response head with its lease. A connection that turns out closed
    /// before the request started is dropped and the request sent on the
    /// next.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        match self.protocol {
            BaseProtocol::Http2 => self.send_shared(request).await,
            BaseProtocol::Http1 => self.send_pooled(request).await,
        }
    }

    async fn send_shared(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let slot = thread_slot();
        let mut fresh = false;
        loop {
            let (mut sender, reused) = self.shared_connection(slot, fresh).await?;
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease(None))),
                Err(mut e) => match e.take_message() {
                    // Not started on a connection the base had closed: not
                    // the replica's failure, try a new connection.
                    Some(unsent) if reused => {
                        request = unsent;
                        fresh = true;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// This thread's HTTP/2 connection, and whether it was open already;
    /// a new one if there is none, it was closed, or `fresh` asks for one.
    async fn shared_connection(
        &self,
        slot: usize,
        fresh: bool,
    ) -> Result<(http2::SendRequest<UpstreamBody>, bool), UpstreamError> {
        let mut shared = self.shared[slot].lock().await;
        if let Some(sender) = shared.as_ref().filter(|s| !fresh && !s.is_closed()) {
            return Ok((sender.clone(), true));
        }
        *shared = None;
        let stream = self.connect_tcp().await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT);
        let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
        drive(connection);
        *shared = Some(sender.clone());
        Ok((sender, false))
    }

    async fn send_pooled(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let slot = thread_slot();
        loop {
            let (mut sender, reused) = match self.take(slot).await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease(Some(Pooled {
                        sender,
                        upstream: self.clone(),
                        slot,
                    }));
                    return Ok((response, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Not started on a connection the base had closed: not
                    // the replica's failure, try the next connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// A pooled connection ready for a request, newest first; closed and
    /// expired ones are dropped on the way.
    async fn take(&self, slot: usize) -> Option<SendRequest<UpstreamBody>> {
        let list = &self.idle[slot];
        loop {
            let idle = list.lock().expect("upstream pool").pop_back()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                // Everything under it is older still.
                list.lock().expect("upstream pool").clear();
                return None;
            }
            let mut sender = idle.sender;
            if sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put(&self, slot: usize, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle[slot].lock().expect("upstream pool");
        if idle.len() >= MAX_IDLE {
            return;
        }
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let stream = self.connect_tcp().await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        drive(connection);
        Ok(sender)
    }

    /// A TCP connection to the base, within [`CONNECT_TIMEOUT`].
    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let connecting = async {
            match self.resolved {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect(self.address.as_str()).await,
            }
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                address: self.address.clone(),
            })?
            .map_err(|source| UpstreamError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Runs a connection to a base in its own task (on this thread's runtime)
/// until it closes.
fn drive(connection: impl Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection to a base ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A base stand-in: answers `ok` to each request; `keep_alive: false`
    /// closes each connection after its first answer, without saying so
    /// (as a base dropping an idle connection would). Counts connections.
    async fn base(keep_alive: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() || !keep_alive {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    /// An HTTP/2 base stand-in: answers every stream with its request body,
    /// or `ok` if it had none; counts connections. Aborting the handles
    /// closes the connections.
    async fn h2_base() -> (
        String,
        Arc<AtomicUsize>,
        Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (count, open) = (accepted.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|request: Request<Incoming>| async {
                    let body = request.into_body().collect().await?.to_bytes();
                    let answer = if body.is_empty() {
                        Bytes::from("ok")
                    } else {
                        body
                    };
                    Ok::<_, hyper::Error>(Response::new(Full::new(answer)))
                });
                let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                let handle = tokio::spawn(async move {
                    let _ = serving.await;
                });
                open.lock().unwrap().push(handle);
            }
        });
        (address, accepted, connections)
    }

    async fn ok(upstream: &Arc<Upstream>, address: &str) {
        let (response, lease) = upstream.send(request(address)).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        lease.release();
    }

    #[tokio::test]
    async fn http2_requests_in_flight_together_share_one_connection() {
        let (address, accepted, _connections) = h2_base().await;
        let upstream = Arc::new(Upstream::new(&address, BaseProtocol::Http2));
        let all = (0..32).map(|_| ok(&upstream, &address));
        futures::future::join_all(all).await;
        ok(&upstream, &address).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "33 requests, 32 of them at once, on one connection"
        );
        assert_eq!(upstream.shared(), 1);
    }

    #[tokio::test]
    async fn an_http2_connection_the_base_closed_is_replaced_without_an_error() {
        let (address, accepted, connections) = h2_base().await;
        let upstream = Arc::new(Upstream::new(&address, BaseProtocol::Http2));
        for n in 1..=3 {
            ok(&upstream, &address).await;
            ok(&upstream, &address).await;
            assert_eq!(accepted.load(Ordering::SeqCst), n);
            for connection in connections.lock().unwrap().drain(..) {
                connection.abort();
            }
            eventually("the base's close to be seen", || upstream.shared() == 0).await;
        }
    }

    #[tokio::test]
    async fn http2_bodies_larger_than_the_flow_control_windows_go_and_come_back_whole() {
        let (address, accepted, _connections) = h2_base().await;
        let upstream = Arc::new(Upstream::new(&address, BaseProtocol::Http2));
        // Two at once, 3 MiB each: each over a stream's window, and
        // together over the connection's, in both directions (the
        // gateway's windows are 2 and 5 MiB, hyper's client defaults; the
        // stand-in's are hyper's server defaults, 1 MiB each).
        let echo = |seed: u8| {
            let upstream = upstream.clone();
            let address = address.clone();
            async move {
                let sent: Bytes = (0..3u32 << 20)
                    .map(|i| (i % 251) as u8 ^ seed)
                    .collect::<Vec<u8>>()
                    .into();
                let request = Request::builder()
                    .method(http::Method::POST)
                    .uri("/echo")
                    .header(http::header::HOST, &address)
                    .body(Full::new(sent.clone()))
                    .unwrap();
                let (response, _lease) = upstream.send(request).await.unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(
                    hyper::body::Body::size_hint(response.body()).exact(),
                    Some(3 << 20)
                );
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(
                    body == sent,
                    "the echo of {} bytes came back changed",
                    sent.len()
                );
            }
        };
        futures::future::join(echo(1), echo(2)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    fn request(address: &str) -> Request<UpstreamBody> {
        Request::builder()
            .uri("/hello")
            .header(http::header::HOST, address)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_read_whole_serves_the_next_request_and_one_cut_short_does_not() {
        let (address, accepted) = base(true).await;
        let upstream = Arc::new(Upstream::new(&address, BaseProtocol::Http1));
        for _ in 0..3 {
            let (response, lease) = upstream.send(request(&address)).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
            lease.release();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection reused");
        assert_eq!(upstream.idle(), 1);
        // A response not read whole: its connection is not reused.
        let (_response, lease) = upstream.send(request(&address)).await.unwrap();
        drop(lease);
        let (response, lease) = upstream.send(request(&address)).await.unwrap();
        assert_eq!(response.status(), 200);
        drop(lease);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_base_closed_is_replaced_without_an_error() {
        let (address, accepted) = base(false).await;
        let upstream = Arc::new(Upstream::new(&address, BaseProtocol::Http1));
        for n in 1..=3 {
            let (response, lease) = upstream.send(request(&address)).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
            lease.release();
            eventually("the base's close to be seen", || upstream.idle() == 0).await;
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }

    #[tokio::test]
    async fn a_base_that_refuses_connections_is_an_error_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let upstream = Arc::new(Upstream::new(&address, BaseProtocol::Http1));
        let e = upstream.send(request(&address)).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains(&address), "{e}");
    }
}
