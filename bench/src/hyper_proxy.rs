//! `hyper-proxy ADDR BASE...`: the least a reverse proxy built like
//! berth's gateway does per request, the floor in `bench/gateway.py`.
//!
//! It has the gateway's layout and libraries and none of its work: one
//! listener thread per core, each with its own single-threaded runtime,
//! client connections balanced between them (`berth_api::threads`, as the
//! gateway), hyper's HTTP/1.1 server towards clients, and one HTTP/2
//! connection per thread and base through hyper's client, opened at start.
//! Requests go round-robin to the bases with their headers as received. No
//! routing table, traffic rules, request ids, trace context, metrics,
//! retries or ejection. So the gateway's cost above this floor is berth's
//! own per-request work, and the floor's cost above HAProxy is hyper's and
//! tokio's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use berth_api::threads::{Acceptor, Listeners};

// The allocator berth's binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hyper-proxy LISTEN_ADDR BASE_ADDR...";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let bases = args
        .map(|a| a.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    if bases.is_empty() {
        return Err(usage.into());
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (listeners, local) =
        setup.block_on(async { berth_api::threads::bind(addr, threads, 4096) })?;
    let Listeners::PerThread(sockets) = listeners else {
        unreachable!("one or more listener threads");
    };
    eprintln!("hyper-proxy serving on http://{local}");
    let bases = Arc::new(bases);
    let threads: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            let bases = bases.clone();
            std::thread::spawn(move || {
                berth_api::threads::serve_on_own_runtime("hyper-proxy", socket, |acceptor| {
                    serve(acceptor, bases)
                });
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// One listener thread: its connections to the bases, then its clients.
async fn serve(mut acceptor: Acceptor, bases: Arc<Vec<SocketAddr>>) {
    let mut senders = Vec::new();
    for base in bases.iter() {
        match connect(*base).await {
            Ok(sender) => senders.push(sender),
            Err(e) => {
                eprintln!("hyper-proxy: no HTTP/2 connection to base {base}: {e}");
                std::process::exit(1);
            }
        }
    }
    let senders: Arc<[SendRequest<Full<Bytes>>]> = senders.into();
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _, open)) = acceptor.accept().await else {
            // Out of file descriptors or the like: wait rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (senders, next) = (senders.clone(), next.clone());
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let mut sender = senders[n % senders.len()].clone();
            async move { forward(&mut sender, request).await }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(open);
        });
    }
}

/// An HTTP/2 connection to `base`, its I/O in a task on this thread.
async fn connect(base: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(base).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends `request` on `sender` with its body buffered (as the gateway does).
async fn forward(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        body.collect().await?.to_bytes()
    };
    sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
}
