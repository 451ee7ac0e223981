//! Forwarding one request: route, rules, replica, retry.
//!
//! The request body is read whole first (up to the configured limit), so a
//! request that failed on one replica before any response byte can be sent
//! again, once, to another; the response streams back as it comes. A
//! base's "no module here" 404 (`x-berth-not-here`: the replica was
//! removed before this gateway's table caught up) is no failure: the
//! request goes on to each replica not tried yet. The
//! gateway answers by itself only when no replica can: 404 (no route; the
//! body names nothing internal), 503 (no replica can take it: the module
//! and the reason), 502 (the replicas tried failed), 413 (body too large).
//! Those answers are JSON `{"error": {"code", "message"}}` and carry the
//! request id.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use berth_api::header::{
    GATEWAY_SECRET, NOT_HERE, PIN_VERSION, REQUEST_ID, TRACEPARENT, client_request_id,
};
use berth_api::{ErrorBody, ErrorDetail};
use berth_rules::RequestView;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

use crate::balance::{self, NoReplica, Outstanding};
use crate::metrics::{Metrics, ModuleSeries, RequestLabels};
use crate::server::Shared;
use crate::table::{Deployment, Replica};
use crate::upstream::{Lease, UpstreamBody};

/// What the gateway answers with.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

// Header names as `HeaderName` constants, not `&str` (see
// `berth_api::header`): this file does about twenty map operations per
// request.
/// The client addresses a request came through.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// [`crate::hold::COLD_START_HEADER`].
const COLD_START: HeaderName = HeaderName::from_static(crate::hold::COLD_START_HEADER);

/// Serves one request from `client`.
pub async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    client: Option<IpAddr>,
) -> Response<Body> {
    let started = Instant::now();
    if request.uri().path() == "/metrics" {
        return metrics_response(&shared.metrics);
    }
    let (request_id, traceparent) = ids(request.headers());
    let table = shared.table.load_full();
    if !table.loaded {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_endpoints",
            "the gateway has not reached its controller yet; try again shortly".into(),
            &request_id,
        );
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host());
    let Some(deployment) = table.routes.lookup(host, request.uri().path()).cloned() else {
        count(&shared.metrics, "none", StatusCode::NOT_FOUND);
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no route matches this request".into(),
            &request_id,
        );
    };
    deployment
        .stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (version, cell) = match &deployment.rules {
        Some(rules) => {
            let decision = rules.decide(&RequestView {
                headers: request.headers(),
                path: request.uri().path(),
                query: request.uri().query(),
                client_ip: client,
            });
            (
                decision.version.map(|i| rules.versions()[i].clone()),
                decision.cell.cloned(),
            )
        }
        None => (None, None),
    };
    let (parts, body) = request.into_parts();
    let body = if body.is_end_stream() {
        Ok(Bytes::new())
    } else {
        Limited::new(body, shared.config.max_body_bytes)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
    };
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let (status, code, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body is over the gateway's limit of {} bytes",
                        shared.config.max_body_bytes
                    ),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the request body could not be read: {e}"),
                )
            };
            count(&shared.metrics, &deployment.module, status);
            return error(status, code, message, &request_id);
        }
    };
    let mut deployment = deployment;
    let mut cold_start = None;
    if !deployment.serving() {
        match crate::hold::hold(shared, deployment.clone()).await {
            Ok((ready, waited)) => {
                deployment = ready;
                cold_start = Some(waited);
            }
            Err(why) => {
                count(
                    &shared.metrics,
                    &deployment.module,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_replica",
                    format!("module `{}` has no ready replica: {why}", deployment.module),
                    &request_id,
                );
            }
        }
    }
    let series = deployment
        .series
        .get_or_init(|| shared.metrics.series(&deployment.module));
    // Replicas tried and failed or gone (never picked again for this
    // request; empty, so no allocation, until one is), the last failure,
    // and how many replicas failed (a failure is retried once).
    let mut tried: Vec<&str> = Vec::new();
    let mut failed: Option<String> = None;
    let mut failures = 0;
    loop {
        let replica = match balance::pick(&deployment, version.as_deref(), cell.as_ref(), &tried) {
            Ok(replica) => replica,
            Err(why) => {
                let (status, code, message) = match (&failed, why) {
                    (Some(last), NoReplica::NoOtherReplica) => (
                        StatusCode::BAD_GATEWAY,
                        "replica_failed",
                        format!(
                            "module `{}`: the replica that took the request failed ({last}) and no other can take it",
                            deployment.module
                        ),
                    ),
                    (_, why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_replica",
                        format!(
                            "module `{}` has no replica to take the request: {why}",
                            deployment.module
                        ),
                    ),
                };
                series.count(&shared.metrics, status.as_u16());
                return error(status, code, message, &request_id);
            }
        };
        if !tried.is_empty() {
            series.retries.inc();
        }
        let forwarded = forward(
            &parts,
            body.clone(),
            replica,
            version.as_deref(),
            shared.config.secret.as_deref(),
            (&request_id, &traceparent),
            client,
        );
        let Some(forwarded) = forwarded else {
            series.count(&shared.metrics, StatusCode::BAD_GATEWAY.as_u16());
            return error(
                StatusCode::BAD_GATEWAY,
                "bad_endpoint",
                format!(
                    "module `{}`: a replica's address is invalid",
                    deployment.module
                ),
                &request_id,
            );
        };
        let guards = Guards::begin(series, &deployment, replica);
        match replica.upstream.send(forwarded).await {
            Ok((response, _)) if stale(&response) => {
                // The replica was removed after the table this gateway
                // holds: not a failure of the base, so no ejection and no
                // retry spent; the next table update drops it. Every
                // replica not tried yet is tried (a scale-in may have
                // removed several at once: 8 → 1 removes 7).
                drop(guards);
                tried.push(&replica.address);
                tracing::debug!(
                    module = %deployment.module, base = %replica.base,
                    "replica no longer hosts the module; trying another"
                );
                failed = Some(format!("base {}: no longer hosts the module", replica.base));
            }
            Ok((response, lease)) => {
                replica.state.succeeded();
                series.latency.observe(started.elapsed().as_secs_f64());
                series.count(&shared.metrics, response.status().as_u16());
                return respond(response, lease, guards, &request_id, cold_start);
            }
            Err(e) => {
                drop(guards);
                tried.push(&replica.address);
                let why = error_chain(&e);
                let ejected = replica
                    .state
                    .failed(shared.config.ejection, shared.config.max_ejection);
                series.ejections.inc();
                failures += 1;
                tracing::warn!(
                    module = %deployment.module, base = %replica.base, address = %replica.address,
                    error = %why, ejected_for = ?ejected,
                    "replica failed before answering; ejected{}",
                    if failures == 1 { ", retrying on another" } else { "" }
                );
                failed = Some(format!("base {}: {why}", replica.base));
                if failures == 2 {
                    break;
                }
            }
        }
    }
    let why = failed.unwrap_or_default();
    series.count(&shared.metrics, StatusCode::BAD_GATEWAY.as_u16());
    error(
        StatusCode::BAD_GATEWAY,
        "replica_failed",
        format!(
            "module `{}`: two replicas failed before answering (last: {why})",
            deployment.module
        ),
        &request_id,
    )
}

/// Whether a base answered that no module is installed at the path: the
/// replica is gone from it (see [`berth_api::endpoints::NOT_HERE_HEADER`]).
fn stale<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::NOT_FOUND && response.headers().contains_key(NOT_HERE)
}

/// The request id (the client's if it sent a sane one, else the trace id)
/// and the trace context to forward (the client's, else a new root).
fn ids(headers: &HeaderMap) -> (HeaderValue, HeaderValue) {
    let traceparent = headers
        .get(TRACEPARENT)
        .filter(|v| valid_traceparent(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_traceparent);
    let request_id = client_request_id(headers).cloned().unwrap_or_else(|| {
        HeaderValue::from_bytes(&traceparent.as_bytes()[3..35]).expect("hex is a valid header")
    });
    (request_id, traceparent)
}

/// A new root trace context: random trace and span ids, sampled.
fn new_traceparent() -> HeaderValue {
    let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
    put_hex(&mut tp[3..19], fastrand::u64(..));
    put_hex(&mut tp[19..35], fastrand::u64(1..));
    put_hex(&mut tp[36..52], fastrand::u64(1..));
    HeaderValue::from_bytes(&tp).expect("hex is a valid header")
}

/// `value` as 16 lowercase hex digits into `out`.
fn put_hex(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`.
fn valid_traceparent(value: &[u8]) -> bool {
    value.len() == 55
        && value.iter().enumerate().all(|(i, b)| match i {
            2 | 35 | 52 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Drops the hop-by-hop headers and those the `Connection` header names.
/// Most messages carry none, and one pass over their few names is cheaper
/// than a lookup per hop-by-hop name (done twice per request).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request to send to `replica`: origin-form (the connection is to
/// the replica already), the client's Host kept.
fn forward(
    parts: &http::request::Parts,
    body: Bytes,
    replica: &Replica,
    version: Option<&str>,
    secret: Option<&str>,
    (request_id, traceparent): (&HeaderValue, &HeaderValue),
    client: Option<IpAddr>,
) -> Option<Request<UpstreamBody>> {
    let uri = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        parts.uri.clone()
    } else {
        let mut origin = http::uri::Parts::default();
        origin.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(origin).ok()?
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    // Only this gateway pins, and only with the secret.
    headers.remove(PIN_VERSION);
    headers.remove(GATEWAY_SECRET);
    if let (Some(version), Some(secret)) = (version, secret)
        && let (Ok(v), Ok(s)) = (
            HeaderValue::from_str(version),
            HeaderValue::from_str(secret),
        )
    {
        headers.insert(PIN_VERSION, v);
        headers.insert(GATEWAY_SECRET, s);
    }
    headers.insert(REQUEST_ID, request_id.clone());
    headers.insert(TRACEPARENT, traceparent.clone());
    if let Some(ip) = client {
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(before) => format!("{before}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::try_from(forwarded_for) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(header::HOST) {
        // An absolute-form request names its host in the URI; failing
        // that, the replica's address (what a client library would send).
        let host = parts
            .uri
            .authority()
            .map_or(replica.address.as_str(), |a| a.as_str());
        headers.insert(header::HOST, HeaderValue::from_str(host).ok()?);
    }
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(request)
}

/// What counts a forwarded request until its response has been sent whole.
struct Guards {
    _replica: Outstanding,
    deployment: Arc<crate::table::DeploymentStats>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Guards {
    fn begin(series: &ModuleSeries, deployment: &Deployment, replica: &Replica) -> Self {
        let in_flight = series.in_flight.clone();
        in_flight.inc();
        deployment
            .stats
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            _replica: replica.state.begin(),
            deployment: deployment.stats.clone(),
            in_flight,
        }
    }
}

impl Drop for Guards {
    fn drop(&mut self) {
        self.in_flight.dec();
        self.deployment
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A response body that holds its request's counts until it ends, and
/// gives its connection back to the pool once read whole.
struct Tracked {
    inner: Incoming,
    lease: Option<Lease>,
    _guards: Guards,
}

impl Tracked {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Sent whole without a last poll (a known length): reusable. Cut
        // short: the lease drops and the connection with it.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

fn respond(
    response: Response<Incoming>,
    lease: Lease,
    guards: Guards,
    request_id: &HeaderValue,
    cold_start: Option<std::time::Duration>,
) -> Response<Body> {
    let (mut parts, inner) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(waited) = cold_start {
        parts
            .headers
            .insert(COLD_START, HeaderValue::from(waited.as_millis() as u64));
    }
    parts
        .headers
        .entry(REQUEST_ID)
        .or_insert_with(|| request_id.clone());
    let body = Tracked {
        inner,
        lease: Some(lease),
        _guards: guards,
    };
    Response::from_parts(parts, UnsyncBoxBody::new(body))
}

fn count(metrics: &Metrics, module: &str, status: StatusCode) {
    metrics
        .requests
        .get_or_create(&RequestLabels {
            module: module.to_string(),
            code: status.as_u16(),
        })
        .inc();
}

/// A JSON error answered by the gateway itself.
fn error(
    status: StatusCode,
    code: &str,
    message: String,
    request_id: &HeaderValue,
) -> Response<Body> {
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message,
        },
    })
    .expect("errors serialize");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REQUEST_ID, request_id.clone());
    response
}

fn metrics_response(metrics: &Metrics) -> Response<Body> {
    let mut response = Response::new(full(metrics.encode().into_bytes()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn full(bytes: Vec<u8>) -> Body {
    UnsyncBoxBody::new(Full::new(Bytes::from(bytes)).map_err(|never| match never {}))
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_trace_is_kept_and_a_missing_one_started() {
        let mut headers = HeaderMap::new();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert(TRACEPARENT, tp.parse().unwrap());
        let (id, kept) = ids(&headers);
        assert_eq!(kept, tp);
        assert_eq!(id, "0af7651916cd43dd8448eb211c80319c");
        headers.insert(REQUEST_ID, "abc".parse().unwrap());
        assert_eq!(ids(&headers).0, "abc");
        let (id, new) = ids(&HeaderMap::new());
        assert!(valid_traceparent(new.as_bytes()), "{new:?}");
        assert_eq!(id.len(), 32);
        assert_eq!(id.as_bytes(), &new.as_bytes()[3..35]);
        assert_ne!(ids(&HeaderMap::new()).1, new, "each root trace is new");
        assert!(!valid_traceparent(b"00-xyz-1-01"));
        assert!(!valid_traceparent(
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g"
        ));
        assert!(!valid_traceparent(
            b"00-0af7651916cd43dd8448eb211c80319c+b7ad6b7169203331-01"
        ));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-user", "u".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-user"));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_without_a_connection_header_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "u".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let untouched = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, untouched);

        for name in ["te", "proxy-connection", "transfer-encoding", "upgrade"] {
            let mut headers = untouched.clone();
            headers.insert(name, "x".parse().unwrap());
            strip_hop_by_hop(&mut headers);
            assert_eq!(headers, untouched, "{name} is forwarded");
        }
    }
}
