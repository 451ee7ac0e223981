//! The ingress: the HTTP server module traffic arrives on.
//!
//! HTTP/1.1 with keep-alive (hyper). Each request is routed by the current
//! [`RouteTable`](crate::router::RouteTable) snapshot and handed to the
//! target module's runtime; the module's response streams straight back.
//! Every response carries `x-request-id` (the client's, if it sent a sane
//! one) and, when a module served it, `x-berth-module: name@version`.
//! Failures are answered by the base, never by a dropped connection: 404
//! when no module owns the path (the body names nothing installed), and
//! 500/503/504 with the request id when a module traps, has no free instance
//! slot, or runs out of time. The full error and wasm backtrace go to the
//! base's log under the same request id.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;
use std::time::{Instant, SystemTime};

use std::sync::Arc;

use berth_api::{MODULE_HEADER, REQUEST_ID_HEADER, TRAFFIC_UNIT_HEADER};
use berth_runtime::{
    BoxResponse, CallContext, HandleError, ModuleCaller, ResponseBody, TRACEPARENT, TraceParent,
    WasiBody, full_body,
};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::base::Base;
use crate::otlp::Hop;
use crate::router::Target;
use crate::rules::RequestView;

/// Accepts connections on `listener` until `shutdown` changes, then lets
/// in-flight requests finish (up to 10 s).
pub(crate) async fn serve(listener: TcpListener, base: Base, mut shutdown: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "ingress accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let base = base.clone();
                let service = hyper::service::service_fn(move |request| {
                    let base = base.clone();
                    async move { Ok::<_, Infallible>(handle(&base, request, Some(remote.ip())).await) }
                });
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "ingress connection ended with an error");
                    }
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
        tracing::warn!("ingress connections still open after 10 s; closing them");
    }
}

/// Routes and serves one request from `client`.
pub async fn handle(
    base: &Base,
    mut request: Request<Incoming>,
    client: Option<IpAddr>,
) -> Response<ResponseBody> {
    // Honour the caller's trace; this hop is a new span in it.
    let incoming = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let trace = incoming.map_or_else(TraceParent::new_root, |parent| parent.child());
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&trace.trace_id_hex()).expect("hex is a valid header")
        });
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .map(str::to_owned);
    let routes = base.routes();
    let exporting = base.otlp().is_some();
    let target = routes
        .lookup(host.as_deref(), request.uri().path())
        .map(|entry| {
            let target = entry.select(&view(&request, client)).clone();
            (target, exporting.then(|| entry.prefix().to_owned()))
        });
    drop(routes);
    let Some((target, route)) = target else {
        return plain(
            StatusCode::NOT_FOUND,
            "404 Not Found: no module is installed at this path.\n".to_string(),
            request_id,
        );
    };
    let headers = request.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        headers.insert(TRACEPARENT, value);
    }
    let context = CallContext {
        label: target.label.clone(),
        request_id: Some(request_id),
        traffic_unit: request.headers().get(TRAFFIC_UNIT_HEADER).cloned(),
        hops: 0,
        trace: Some(trace),
        parent_span_id: incoming.map(|parent| parent.span_id),
        caller: Some(Arc::new(base.clone())),
    };
    run_in(base, target, request, context, route).await
}

/// What the traffic rules read of `request`.
fn view<B>(request: &Request<B>, client: Option<IpAddr>) -> RequestView<'_> {
    RequestView {
        headers: request.headers(),
        path: request.uri().path(),
        query: request.uri().query(),
        client_ip: client,
    }
}

/// Calls from one module to another (`http://NAME.berth/…`): routed by
/// name, through the same traffic rules and failure handling as ingress
/// requests, without a socket.
impl ModuleCaller for Base {
    fn call(
        &self,
        name: &str,
        request: Request<WasiBody>,
        mut context: CallContext,
    ) -> BoxResponse {
        let base = self.clone();
        let name = name.to_string();
        Box::pin(async move {
            let routes = base.routes();
            let target = routes
                .by_name(&name)
                .map(|entry| entry.select(&view(&request, None)).clone());
            drop(routes);
            let request_id = context.request_id.clone().unwrap_or_else(new_request_id);
            let Some(target) = target else {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "502 Bad Gateway: no module named `{name}` is installed on this base \
                         (a call to http://{name}.berth/ needs an installed module `{name}`)\n"
                    ),
                    request_id,
                );
            };
            context.label = target.label.clone();
            run_in(&base, target, request, context, None).await
        })
    }
}

/// Runs `request` in `target`; a module failure becomes a response from the
/// base with a fitting status, the request id, and a log line. With OTLP
/// export on, the hop becomes a span (`route` names ingress hops).
async fn run_in<B>(
    base: &Base,
    target: Target,
    request: Request<B>,
    context: CallContext,
    route: Option<String>,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let request_id = context.request_id.clone().unwrap_or_else(new_request_id);
    let trace = context.trace;
    let span = base.otlp().map(|_| SpanStart {
        start: SystemTime::now(),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        parent_span_id: context.parent_span_id,
        ingress: context.hops == 0,
    });
    let mut failure = None;
    let stats = &target.stats;
    let started = Instant::now();
    if stats.observed {
        stats.metrics.in_flight.inc();
    }
    let result = target.module.handle(request, context).await;
    if stats.observed {
        stats.metrics.in_flight.dec();
    }
    let took = started.elapsed();
    let mut response = match result {
        Ok(mut response) => {
            stats.record(response.status().as_u16(), false, took);
            if base.config().version_header
                && let Ok(label) = HeaderValue::from_str(&target.label)
            {
                response.headers_mut().insert(MODULE_HEADER, label);
            }
            response
        }
        Err(error) => {
            let id = request_id.to_str().unwrap_or_default().to_owned();
            tracing::error!(module = %target.label, request_id = %id, error = %error.detail(), "request failed in module");
            let kind = failure_kind(&error);
            stats.metrics.failure(kind);
            if matches!(kind, "trap" | "memory" | "deadline" | "no_response") {
                stats.record_trap(&id, error.to_string(), error.detail());
            }
            if span.is_some() {
                failure = Some(error.to_string());
            }
            let status =
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            stats.record(status.as_u16(), true, took);
            let mut response = plain(
                status,
                format!(
                    "{status}: module `{}` failed to handle this request: {error}.\nrequest id: {id}\n",
                    target.label
                ),
                request_id.clone(),
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
    };
    if let (Some(exporter), Some(span), Some(trace)) = (base.otlp(), span, trace) {
        exporter.record(Hop {
            trace,
            parent_span_id: span.parent_span_id,
            remote_parent: span.ingress,
            label: target.label.clone(),
            route,
            method: span.method,
            path: span.path,
            status: response.status().as_u16(),
            failure,
            request_id: request_id.clone(),
            start: span.start,
            duration: took,
        });
    }
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id);
    if let Some(trace) = trace
        && let Ok(value) = HeaderValue::from_str(&trace.to_string())
    {
        headers.insert(TRACEPARENT, value);
    }
    response
}

/// What a hop's span needs from the request, taken before the module consumes it.
struct SpanStart {
    start: SystemTime,
    method: http::Method,
    path: String,
    parent_span_id: Option<[u8; 8]>,
    /// Came through the ingress (its parent, if any, is the client's span).
    ingress: bool,
}

/// The `kind` label of a failure (see [`crate::metrics::FAILURE_KINDS`]).
fn failure_kind(error: &HandleError) -> &'static str {
    match error {
        HandleError::Trap { .. } => "trap",
        HandleError::MemoryLimit(_) => "memory",
        HandleError::Deadline(_) => "deadline",
        HandleError::Overloaded(_) => "concurrency",
        HandleError::RequestTooLarge(_) => "request_body",
        HandleError::Instantiate(_) => "instantiate",
        HandleError::NoResponse | HandleError::GuestError(_) | HandleError::BadRequest(_) => {
            "no_response"
        }
    }
}

/// A `text/plain` response from the base itself.
fn plain(status: StatusCode, body: String, request_id: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(REQUEST_ID_HEADER, request_id);
    response
}

fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
        .expect("hex is a valid header")
}
