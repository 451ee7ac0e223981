//! Outgoing HTTP from a module: module-to-module calls and the host allow-list.
//!
//! A guest's outgoing `wasi:http` request goes one of three ways:
//!
//! - to `http://NAME.berth/…`: served in-process by module NAME through the
//!   base's [`ModuleCaller`] (the same routing and rules as the ingress, no
//!   socket), with the caller's request id and traffic unit propagated and
//!   the hop count raised; past [`MAX_HOPS`] it is answered 508, which cuts
//!   call cycles; an unknown NAME is answered 502 by the base;
//! - to a host the module's settings grant (`allowed_hosts`): sent over the
//!   network by wasmtime-wasi-http's default client;
//! - anywhere else: refused with `HTTP-request-denied` before any
//!   connection is attempted, and the base logs which host was refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::HeaderValue;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::body::{ResponseBody, full_body};
use crate::settings::{MAX_HOPS, ModuleSettings};
use crate::trace::{TRACEPARENT, TraceParent};

/// Header carrying the request id, propagated into module calls.
const REQUEST_ID: &str = "x-request-id";
/// Header carrying the traffic unit, propagated into module calls.
const TRAFFIC_UNIT: &str = "x-berth-traffic-unit";

/// Where a request stands: who serves it and how it got there.
#[derive(Clone, Default)]
pub struct CallContext {
    /// `name@version` of the module serving the request (for logs).
    pub label: Arc<str>,
    /// The request id.
    pub request_id: Option<HeaderValue>,
    /// The traffic unit (`x-berth-traffic-unit`) of the original request.
    pub traffic_unit: Option<HeaderValue>,
    /// Module-to-module calls so far in this chain (0 for ingress requests).
    pub hops: u32,
    /// The span of this hop; module calls continue its trace.
    pub trace: Option<TraceParent>,
    /// The span that sent this hop (the client's `traceparent`, or the
    /// calling module's hop), if any: the parent of this hop's span.
    pub parent_span_id: Option<[u8; 8]>,
    /// Serves calls to `http://NAME.berth/`; `None` refuses them.
    pub caller: Option<Arc<dyn ModuleCaller>>,
}

/// A future boxed for the trait object.
pub type BoxResponse = Pin<Box<dyn Future<Output = http::Response<ResponseBody>> + Send>>;

/// Serves a call from one module to another, in-process. The base
/// implements it with its router, so calls see the same versions and
/// traffic rules as ingress requests.
pub trait ModuleCaller: Send + Sync + 'static {
    /// Serves `request` with module `name`; `context` is the callee's
    /// context (hops already raised). Always answers: failures become 5xx.
    fn call(
        &self,
        name: &str,
        request: http::Request<WasiBody>,
        context: CallContext,
    ) -> BoxResponse;
}

/// The `wasi:http` hooks of one instance.
pub(crate) struct OutgoingPolicy {
    settings: Arc<ModuleSettings>,
    context: CallContext,
}

impl OutgoingPolicy {
    pub(crate) fn new(settings: Arc<ModuleSettings>, context: CallContext) -> Self {
        Self { settings, context }
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

fn answered(response: http::Response<ResponseBody>) -> Sent {
    Ok((response, Box::new(async { Ok(()) })))
}

/// A response made by the base for a module call that could not be served.
pub(crate) fn base_response(status: u16, message: String) -> http::Response<ResponseBody> {
    let mut response = http::Response::new(full_body(message + "\n"));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl WasiHttpHooks for OutgoingPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let port = request.uri().port_u16();
        if let Some(name) = host.strip_suffix(".berth") {
            let name = name.to_string();
            let from = self.context.label.clone();
            if self.context.hops >= MAX_HOPS {
                tracing::warn!(module = %from, callee = %name, hops = self.context.hops, "module call chain too deep; cut");
                return Box::new(async move {
                    answered(base_response(
                        508,
                        format!(
                            "508 Loop Detected: the call from `{from}` to `{name}` would be hop {} of a \
                             module-to-module chain; berth cuts chains at {MAX_HOPS} hops to break cycles",
                            MAX_HOPS + 1
                        ),
                    ))
                });
            }
            let Some(caller) = self.context.caller.clone() else {
                return Box::new(async move {
                    answered(base_response(
                        502,
                        format!(
                            "502 Bad Gateway: module calls are not available here (to `{name}`)"
                        ),
                    ))
                });
            };
            let trace = self.context.trace.map(|t| t.child());
            let headers = request.headers_mut();
            if let Some(trace) = trace
                && !headers.contains_key(TRACEPARENT)
                && let Ok(value) = HeaderValue::from_str(&trace.to_string())
            {
                headers.insert(TRACEPARENT, value);
            }
            for (header, value) in [
                (REQUEST_ID, &self.context.request_id),
                (TRAFFIC_UNIT, &self.context.traffic_unit),
            ] {
                if let Some(value) = value
                    && !headers.contains_key(header)
                {
                    headers.insert(header, value.clone());
                }
            }
            let context = CallContext {
                label: Arc::from(name.as_str()),
                request_id: self.context.request_id.clone(),
                traffic_unit: request.headers().get(TRAFFIC_UNIT).cloned(),
                hops: self.context.hops + 1,
                parent_span_id: self.context.trace.map(|t| t.span_id),
                trace,
                caller: Some(caller.clone()),
            };
            return Box::new(async move { answered(caller.call(&name, request, context).await) });
        }
        if !self.settings.allows_host(&host, port) {
            tracing::warn!(
                module = %self.context.label,
                host = %host,
                "outgoing HTTP refused: host not in the module's allowedHosts"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}
