//! The dispatcher: the immutable route snapshot, dispatch of ingress
//! requests, and module-to-module calls.
//!
//! The lifecycle [`publish`](Dispatcher::publish)es a new [`RouteTable`]
//! after every committed change; requests read the current one without a
//! lock ([`ArcSwap`]) and keep the targets they picked, so a switch never
//! disturbs a request in flight. Running a target goes through
//! [`Instrumentation`] for metrics, spans, failures and headers.
//!
//! A fleet gateway may **pin** the version a request is served by
//! (`x-berth-version`): it chose it by the deployment's rules. The pin is
//! honoured only when the request also carries the base's gateway secret
//! (`berth base --gateway-secret`), compared in constant time; from anyone
//! else it is ignored and the base's own rules decide. Both headers are
//! removed before a module sees the request.

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use berth_api::header::{
    GATEWAY_SECRET, NOT_HERE, PIN_VERSION, REQUEST_ID, TRACEPARENT, TRAFFIC_UNIT, client_request_id,
};
use berth_runtime::{BoxResponse, CallContext, ModuleCaller, ResponseBody, TraceParent, WasiBody};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::instrument::{Instrumentation, new_request_id, plain};
use crate::router::{RouteTable, Target};
use crate::rules::RequestView;

/// Routes requests to module versions and runs them.
pub(crate) struct Dispatcher {
    routes: ArcSwap<RouteTable>,
    instrumentation: Arc<Instrumentation>,
    /// The secret of trusted gateways, whose version pins are honoured.
    gateway_secret: Option<String>,
    /// Itself, handed to modules as their [`ModuleCaller`]: made once,
    /// each request takes a reference.
    caller: Arc<dyn ModuleCaller>,
}

impl Dispatcher {
    /// A dispatcher with no routes yet.
    pub(crate) fn new(
        instrumentation: Arc<Instrumentation>,
        gateway_secret: Option<String>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            instrumentation,
            gateway_secret: gateway_secret.filter(|s| !s.is_empty()),
            caller: Arc::new(Calls(me.clone())),
        })
    }

    /// The current routing snapshot.
    pub(crate) fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// Swaps in `table`; requests already routed keep their targets.
    pub(crate) fn publish(&self, table: RouteTable) {
        self.routes.store(Arc::new(table));
    }

    /// The caller modules use for `http://NAME.berth/` calls.
    fn caller(&self) -> Option<Arc<dyn ModuleCaller>> {
        Some(self.caller.clone())
    }

    /// Routes and serves one ingress request from `client`.
    pub(crate) async fn handle(
        &self,
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
        let request_id = client_request_id(request.headers())
            .cloned()
            .unwrap_or_else(|| trace.trace_id_header());
        let pinned = self.pinned(request.headers_mut());
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host());
        let exporting = self.instrumentation.exporting();
        let target = {
            let routes = self.routes.load();
            routes.lookup(host, request.uri().path()).map(|entry| {
                let target = entry
                    .select_pinned(&view(&request, client), pinned.as_deref())
                    .clone();
                (target, exporting.then(|| entry.prefix().to_owned()))
            })
        };
        let Some((target, route)) = target else {
            let mut response = plain(
                StatusCode::NOT_FOUND,
                "404 Not Found: no module is installed at this path.\n".to_string(),
                request_id,
            );
            response
                .headers_mut()
                .insert(NOT_HERE, HeaderValue::from_static("1"));
            return response;
        };
        let headers = request.headers_mut();
        headers.insert(REQUEST_ID, request_id.clone());
        headers.insert(TRACEPARENT, trace.header_value());
        let context = CallContext {
            label: target.label.clone(),
            request_id: Some(request_id),
            traffic_unit: request.headers().get(TRAFFIC_UNIT).cloned(),
            hops: 0,
            trace: Some(trace),
            parent_span_id: incoming.map(|parent| parent.span_id),
            caller: self.caller(),
        };
        self.run_in(target, request, context, route).await
    }

    /// The version a trusted gateway pinned, if any; removes the pin and
    /// the secret from `headers` either way.
    fn pinned(&self, headers: &mut http::HeaderMap) -> Option<String> {
        let secret = headers.remove(GATEWAY_SECRET);
        let pin = headers.remove(PIN_VERSION)?;
        let trusted = match (&self.gateway_secret, secret) {
            (Some(want), Some(got)) => constant_time_eq(want.as_bytes(), got.as_bytes()),
            _ => false,
        };
        if !trusted {
            tracing::debug!("ignored a version pin from a client that is not a trusted gateway");
            return None;
        }
        pin.to_str().ok().map(str::to_owned)
    }

    /// Serves a module-to-module call to `name`: routed by name, through the
    /// same traffic rules and failure handling as ingress requests.
    async fn call(
        &self,
        name: &str,
        request: Request<WasiBody>,
        mut context: CallContext,
    ) -> Response<ResponseBody> {
        let target = self
            .routes
            .load()
            .by_name(name)
            .map(|entry| entry.select(&view(&request, None)).clone());
        let Some(target) = target else {
            let request_id = context.request_id.clone().unwrap_or_else(new_request_id);
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
        self.run_in(target, request, context, None).await
    }

    /// Runs `request` in `target`, observed by the instrumentation.
    async fn run_in<B>(
        &self,
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
        let module = target.module.clone();
        let hop = self.instrumentation.begin(
            target,
            &request,
            request_id,
            context.trace,
            context.parent_span_id,
            context.hops == 0,
            route,
        );
        let result = module.handle(request, context).await;
        hop.finish(result)
    }
}

/// Whether `a` equals `b`, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// The [`ModuleCaller`] modules get: calls go back into the dispatcher,
/// without a socket. It holds the dispatcher weakly (the dispatcher holds
/// it); a call made while the base is going away is answered 503.
struct Calls(Weak<Dispatcher>);

impl ModuleCaller for Calls {
    fn call(&self, name: &str, request: Request<WasiBody>, context: CallContext) -> BoxResponse {
        let dispatcher = self.0.upgrade();
        let name = name.to_string();
        Box::pin(async move {
            match dispatcher {
                Some(dispatcher) => dispatcher.call(&name, request, context).await,
                None => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "503 Service Unavailable: the base is shutting down; retry the call to `{name}`\n"
                    ),
                    context.request_id.unwrap_or_else(new_request_id),
                ),
            }
        })
    }
}
