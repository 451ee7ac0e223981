//! Instrumentation: what a base observes and adds around each module call.
//!
//! [`Instrumentation`] owns the Prometheus [`Metrics`], the log hub, the
//! OTLP span exporter and the response headers a base adds
//! (`x-request-id`, `traceparent`, `x-berth-module`). The dispatcher calls
//! [`Instrumentation::begin`] before running a module and
//! [`Hop::finish`] after, which records the request in the version's stats,
//! turns a module failure into a response from the base (trap reports,
//! failure metrics, log line), exports the span and sets the headers. The
//! dispatcher itself only routes and runs.

use std::time::{Instant, SystemTime};

use berth_api::FailureKind;
use berth_api::header::{MODULE, REQUEST_ID, TRACEPARENT};
use berth_runtime::{HandleError, LoadedModule, ResponseBody, TraceParent, full_body};
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::otlp::Exporter;
use crate::registry::Installed;
use crate::router::Target;
use crate::state::InstallRecord;

/// Metrics, logs, spans and headers of one base.
pub(crate) struct Instrumentation {
    /// The Prometheus registry of the base.
    pub(crate) metrics: Metrics,
    /// Every line any module writes, for followers.
    pub(crate) logs: LogHub,
    /// The span exporter, when an OTLP endpoint is configured.
    pub(crate) otlp: Option<Exporter>,
    /// Add `x-berth-module` to module responses.
    version_header: bool,
    /// Per-version metrics, windows and log capture on.
    observability: bool,
}

/// One module call being observed, from [`Instrumentation::begin`] to
/// [`Hop::finish`].
pub(crate) struct Hop<'i> {
    instrumentation: &'i Instrumentation,
    target: Target,
    request_id: HeaderValue,
    trace: Option<TraceParent>,
    span: Option<SpanStart>,
    route: Option<String>,
    started: Instant,
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

impl Instrumentation {
    /// Instrumentation with `metrics`, exporting spans with `otlp`.
    pub(crate) fn new(
        metrics: Metrics,
        otlp: Option<Exporter>,
        version_header: bool,
        observability: bool,
    ) -> Self {
        Self {
            metrics,
            logs: LogHub::default(),
            otlp,
            version_header,
            observability,
        }
    }

    /// An installed version reporting into this base's metrics and logs.
    pub(crate) fn installed(
        &self,
        record: InstallRecord,
        module: Result<LoadedModule, String>,
    ) -> Installed {
        Installed::new(
            record,
            module,
            &self.metrics,
            &self.logs,
            self.observability,
        )
    }

    /// Starts observing a call of `target` with `request`. `route` names
    /// ingress hops in spans; `ingress` is false for module-to-module calls.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin<B>(
        &self,
        target: Target,
        request: &Request<B>,
        request_id: HeaderValue,
        trace: Option<TraceParent>,
        parent_span_id: Option<[u8; 8]>,
        ingress: bool,
        route: Option<String>,
    ) -> Hop<'_> {
        let span = self.otlp.as_ref().map(|_| SpanStart {
            start: SystemTime::now(),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            parent_span_id,
            ingress,
        });
        if target.stats.observed {
            target.stats.metrics.in_flight.inc();
        }
        Hop {
            instrumentation: self,
            target,
            request_id,
            trace,
            span,
            route,
            started: Instant::now(),
        }
    }

    /// Whether spans are exported.
    pub(crate) fn exporting(&self) -> bool {
        self.otlp.is_some()
    }
}

impl Hop<'_> {
    /// Ends the hop with the module's `result`: records it, answers a
    /// failure from the base, exports the span and sets the headers.
    pub(crate) fn finish(
        self,
        result: Result<Response<ResponseBody>, HandleError>,
    ) -> Response<ResponseBody> {
        let Hop {
            instrumentation,
            target,
            request_id,
            trace,
            span,
            route,
            started,
        } = self;
        let stats = &target.stats;
        if stats.observed {
            stats.metrics.in_flight.dec();
        }
        let took = started.elapsed();
        let mut failure = None;
        let mut response = match result {
            Ok(response) => {
                stats.record(response.status().as_u16(), false, took);
                response
            }
            Err(error) => {
                let id = request_id.to_str().unwrap_or_default().to_owned();
                tracing::error!(module = %target.label, request_id = %id, error = %error.detail(), "request failed in module");
                let kind = failure_kind(&error);
                stats.metrics.failure(kind);
                if kind.is_crash() {
                    stats.record_trap(&id, error.to_string(), error.detail());
                }
                if span.is_some() {
                    failure = Some(error.to_string());
                }
                let status = StatusCode::from_u16(error.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
                    let secs = error.retry_after_secs().unwrap_or(1);
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
        };
        // Failures the base answers for a module name it too, like the
        // module's own responses.
        if instrumentation.version_header
            && let Some(label) = &target.label_header
        {
            response.headers_mut().insert(MODULE, label.clone());
        }
        if let (Some(exporter), Some(span), Some(trace)) = (&instrumentation.otlp, span, trace) {
            exporter.record(crate::otlp::Hop {
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
        headers.insert(REQUEST_ID, request_id);
        if let Some(trace) = trace {
            headers.insert(TRACEPARENT, trace.header_value());
        }
        response
    }
}

/// The kind of a failure (the metric's `kind` label).
fn failure_kind(error: &HandleError) -> FailureKind {
    match error {
        HandleError::Trap { .. } => FailureKind::Trap,
        HandleError::MemoryLimit(_) => FailureKind::Memory,
        HandleError::Deadline(_) => FailureKind::Deadline,
        HandleError::Overloaded(_) => FailureKind::Concurrency,
        HandleError::RequestTooLarge(_) => FailureKind::RequestBody,
        HandleError::ResponseTooLarge(_) => FailureKind::ResponseBody,
        HandleError::Instantiate(_) => FailureKind::Instantiate,
        HandleError::CpuThrottled { .. } => FailureKind::Cpu,
        HandleError::NoResponse | HandleError::GuestError(_) | HandleError::BadRequest(_) => {
            FailureKind::NoResponse
        }
    }
}

/// A `text/plain` response from the base itself.
pub(crate) fn plain(
    status: StatusCode,
    body: String,
    request_id: HeaderValue,
) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(REQUEST_ID, request_id);
    response
}

/// A fresh request id.
pub(crate) fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
        .expect("hex is a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_line_up_with_the_metric_labels() {
        let labels: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels, crate::metrics::FAILURE_KINDS);
        for (i, kind) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
