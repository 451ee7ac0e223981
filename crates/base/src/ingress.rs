//! The ingress: the HTTP server module traffic arrives on.
//!
//! HTTP/1.1 with keep-alive (hyper). This file owns the listener and the
//! connections; each request goes to the dispatcher, which routes it by the
//! current [`RouteTable`](crate::router::RouteTable) snapshot and hands it
//! to the target module's runtime; the module's response streams straight back.
//! Every response carries `x-request-id` (the client's, if it sent a sane
//! one) and, when a module served it or failed it, `x-berth-module: name@version`.
//! Failures are answered by the base, never by a dropped connection: 404
//! when no module owns the path (the body names nothing installed), and
//! 500/503/504 with the request id when a module traps, has no free instance
//! slot, or runs out of time. The full error and wasm backtrace go to the
//! base's log under the same request id.

use std::convert::Infallible;
use std::net::IpAddr;

use berth_api::threads::Acceptor;
use berth_runtime::ResponseBody;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::base::Base;

/// Accepts connections on `listener` until `shutdown` changes, then lets
/// in-flight requests finish (up to 10 s); the connection cap and header
/// read timeout are the base's ([`crate::listener`]).
pub(crate) async fn serve(
    listener: Acceptor,
    base: Base,
    limits: crate::listener::Limits,
    shutdown: watch::Receiver<bool>,
) {
    crate::listener::serve(
        listener,
        limits,
        "ingress",
        move |peer| {
            let base = base.clone();
            hyper::service::service_fn(move |request| {
                let base = base.clone();
                async move { Ok::<_, Infallible>(handle(&base, request, Some(peer.ip())).await) }
            })
        },
        shutdown,
    )
    .await
}

/// Routes and serves one request from `client` (see [`crate::dispatcher`]).
pub async fn handle(
    base: &Base,
    request: Request<Incoming>,
    client: Option<IpAddr>,
) -> Response<ResponseBody> {
    base.dispatcher().handle(request, client).await
}
