//! Span export with OpenTelemetry (OTLP/HTTP, protobuf), when an endpoint is
//! configured ([`BaseConfig::otlp_endpoint`](crate::BaseConfig::otlp_endpoint)).
//!
//! This module owns turning each request hop into one OTLP span and getting
//! it to the collector without the request path ever waiting on it:
//!
//! - **one span per hop**: an ingress request and each module-to-module call
//!   is a `SERVER` span whose trace and span id are the hop's
//!   [`TraceParent`]; its parent is the span that sent it (the client's
//!   `traceparent`, or the calling module's hop). Only sampled traces
//!   (flag bit 0) are exported, as a parent-based sampler would.
//! - **the request path only enqueues**: a finished hop is plain data put on a
//!   bounded queue ([`QUEUE_SPANS`]) with `try_send`; a full queue drops the
//!   span and counts it. Protobuf encoding and HTTP happen on one background
//!   task, which posts a batch to `{endpoint}/v1/traces` every
//!   [`FLUSH_EVERY`] or as soon as [`BATCH_SPANS`] are queued.
//! - **no retries**: a failed export drops its batch and counts its spans.
//!   Tracing is worth less than serving; a collector that is down must not
//!   build up memory or work in the base, and the next batch is the retry of
//!   the pipe. Drops and failures are counted in `/metrics`
//!   (`berth_otlp_spans_dropped_total{reason}`) and logged once per outage,
//!   not once per span.
//! - **bounded shutdown**: on [`RunningBase::shutdown`](crate::RunningBase::shutdown)
//!   the queued spans get one last export, and the base waits at most
//!   [`SHUTDOWN_GRACE`] for it.
//!
//! Without an endpoint nothing is spawned, and the request path pays one
//! branch on an `Option`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_runtime::TraceParent;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Spans the queue holds; past that new spans are dropped (and counted).
pub const QUEUE_SPANS: usize = 4096;
/// Spans per export request; a full batch is sent without waiting for the tick.
pub const BATCH_SPANS: usize = 512;
/// Longest a queued span waits before it is exported.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest shutdown waits for the last export.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// One finished hop as the request path hands it over: plain data, turned
/// into protobuf on the exporter task.
pub(crate) struct Hop {
    /// This hop's trace and span id.
    pub trace: TraceParent,
    /// The span that sent this hop, if any.
    pub parent_span_id: Option<[u8; 8]>,
    /// The parent is another process (the client), not a module of this base.
    pub remote_parent: bool,
    /// `name@version` of the module that served it.
    pub label: Arc<str>,
    /// The module's path prefix, for requests that came through the ingress.
    pub route: Option<String>,
    /// Request method.
    pub method: http::Method,
    /// Request path (no query).
    pub path: String,
    /// Response status (the base's, when the module failed).
    pub status: u16,
    /// Why the module failed, if it did.
    pub failure: Option<String>,
    /// The request id.
    pub request_id: http::HeaderValue,
    /// When the hop started.
    pub start: SystemTime,
    /// Time to the response head.
    pub duration: Duration,
}

/// Counters the exporter moves (handles into the base's [`Metrics`](crate::metrics::Metrics)).
#[derive(Clone)]
pub(crate) struct ExportCounters {
    /// Spans a collector accepted.
    pub exported: Counter,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: Counter,
    /// Spans dropped because their export failed.
    pub dropped_export_failed: Counter,
}

/// The queue into the exporter task, and the handle to stop it.
pub(crate) struct Exporter {
    queue: mpsc::Sender<Hop>,
    counters: ExportCounters,
    /// Set while the queue is overflowing (so it is logged once per outage).
    overflowing: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Exporter {
    /// Spawns the exporter task posting to `endpoint` (a base URL such as
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended unless present).
    /// `base_name` becomes the `service.instance.id` resource attribute.
    pub(crate) fn start(
        endpoint: &str,
        base_name: Option<&str>,
        counters: ExportCounters,
    ) -> Result<Self, String> {
        let url = traces_url(endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(EXPORT_TIMEOUT)
            .user_agent(concat!("berth-base/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut resource = vec![
            string("service.name", "berth-base"),
            string("service.version", env!("CARGO_PKG_VERSION")),
        ];
        if let Some(name) = base_name {
            resource.push(string("service.instance.id", name));
        }
        let (queue, receiver) = mpsc::channel(QUEUE_SPANS);
        let (stop, stopped) = watch::channel(false);
        let overflowing = Arc::new(AtomicBool::new(false));
        let task = Task {
            client,
            url: url.clone(),
            resource: Resource {
                attributes: resource,
                ..Default::default()
            },
            counters: counters.clone(),
            overflowing: overflowing.clone(),
            failing: false,
        };
        tracing::info!(endpoint = %url, "exporting spans with OTLP");
        Ok(Self {
            queue,
            counters,
            overflowing,
            stop,
            task: Mutex::new(Some(tokio::spawn(task.run(receiver, stopped)))),
        })
    }

    /// Hands a finished hop to the exporter; never waits. Unsampled traces
    /// are not exported.
    pub(crate) fn record(&self, hop: Hop) {
        if hop.trace.flags & 1 == 0 {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(hop) {
            self.counters.dropped_queue_full.inc();
            if !self.overflowing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    queue = QUEUE_SPANS,
                    "OTLP span queue is full: dropping spans until the exporter catches up \
                     (counted in berth_otlp_spans_dropped_total)"
                );
            }
        }
    }

    /// Exports what is queued, waiting at most [`SHUTDOWN_GRACE`]; later
    /// spans are not exported.
    pub(crate) async fn shutdown(&self) {
        let Some(mut task) = self.task.lock().expect("exporter lock").take() else {
            return;
        };
        let _ = self.stop.send(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
            tracing::warn!("OTLP export still running at shutdown; queued spans dropped");
        }
    }
}

/// `{endpoint}/v1/traces`, checked.
fn traces_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("http", endpoint));
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!(
            "OTLP endpoint `{endpoint}` has no host (e.g. http://127.0.0.1:4318)"
        ));
    }
    let endpoint = format!("{scheme}://{rest}");
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint
    } else {
        format!("{endpoint}/v1/traces")
    };
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(url)
        }
        Ok(_) => Err(format!(
            "OTLP endpoint `{url}` must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:4318)"
        )),
        Err(e) => Err(format!(
            "OTLP endpoint `{url}` is not a URL: {e} (e.g. http://127.0.0.1:4318)"
        )),
    }
}

/// The exporter task's state.
struct Task {
    client: reqwest::Client,
    url: String,
    resource: Resource,
    counters: ExportCounters,
    overflowing: Arc<AtomicBool>,
    /// The last export failed (so the outage is logged once).
    failing: bool,
}

impl Task {
    async fn run(mut self, mut queue: mpsc::Receiver<Hop>, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(BATCH_SPANS);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // batch.len() < BATCH_SPANS here, so the limit is never 0.
            let room = BATCH_SPANS - batch.len();
            tokio::select! {
                received = queue.recv_many(&mut batch, room) => {
                    if received == 0 {
                        break; // the base is gone
                    }
                    if batch.len() < BATCH_SPANS {
                        continue;
                    }
                }
                _ = tick.tick() => {
                    if batch.is_empty() {
                        continue;
                    }
                }
                _ = stop.changed() => break,
            }
            self.export(&mut batch).await;
        }
        // Last export of what is queued (the caller bounds how long).
        while let Ok(hop) = queue.try_recv() {
            batch.push(hop);
            if batch.len() == BATCH_SPANS {
                self.export(&mut batch).await;
            }
        }
        if !batch.is_empty() {
            self.export(&mut batch).await;
        }
    }

    /// Posts `batch` once (emptying it); counts and logs the outcome.
    async fn export(&mut self, batch: &mut Vec<Hop>) {
        let count = batch.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "berth-base".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch.drain(..).map(to_span).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let result = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await;
        let error = match result {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the collector answered {}", response.status())),
            Err(e) => Some(error_chain(&e)),
        };
        match error {
            None => {
                self.counters.exported.inc_by(count);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %self.url, "OTLP export works again");
                }
                if self.overflowing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP span queue has room again");
                }
            }
            Some(error) => {
                self.counters.dropped_export_failed.inc_by(count);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        endpoint = %self.url,
                        %error,
                        "OTLP export failed: dropping spans until the collector answers \
                         (counted in berth_otlp_spans_dropped_total)"
                    );
                }
            }
        }
    }
}

/// `e` with its sources (reqwest's own message hides the cause, e.g. "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The OTLP span of `hop`.
fn to_span(hop: Hop) -> Span {
    let (module, version) = berth_api::ModuleRef::split(&hop.label).unwrap_or((&hop.label, ""));
    let name = match &hop.route {
        Some(route) => format!("{} {route}", hop.method),
        None => format!("module {module}"),
    };
    let start = hop
        .start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let end = start.saturating_add(hop.duration.as_nanos() as u64);
    let mut attributes = vec![
        string("berth.module", module),
        string("berth.version", version),
        string("http.request.method", hop.method.as_str()),
        string("url.path", &hop.path),
        int("http.response.status_code", i64::from(hop.status)),
        string(
            "berth.request_id",
            &String::from_utf8_lossy(hop.request_id.as_bytes()),
        ),
    ];
    if let Some(route) = &hop.route {
        attributes.push(string("http.route", route));
    }
    let failed = hop.failure.is_some() || hop.status >= 500;
    let status = Status {
        code: if failed {
            status::StatusCode::Error
        } else {
            status::StatusCode::Unset
        } as i32,
        message: hop.failure.unwrap_or_default(),
    };
    // Bits 8 and 9: "whether the parent is remote" is known, and its value.
    let remote = match (hop.parent_span_id, hop.remote_parent) {
        (None, _) => 0,
        (Some(_), false) => 0x100,
        (Some(_), true) => 0x300,
    };
    Span {
        trace_id: hop.trace.trace_id.to_vec(),
        span_id: hop.trace.span_id.to_vec(),
        parent_span_id: hop.parent_span_id.map(|id| id.to_vec()).unwrap_or_default(),
        flags: u32::from(hop.trace.flags) | remote,
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/v1/traces").unwrap(),
            "https://otel.example/v1/traces"
        );
        assert_eq!(
            traces_url("127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert!(traces_url("ftp://x").is_err());
        assert!(traces_url("http://").is_err());
    }

    fn hop(trace: TraceParent) -> Hop {
        Hop {
            trace,
            parent_span_id: Some([7; 8]),
            remote_parent: false,
            label: Arc::from("panic@1.2.0"),
            route: None,
            method: http::Method::GET,
            path: "/panic/now".into(),
            status: 500,
            failure: Some("the module trapped".into()),
            request_id: http::HeaderValue::from_static("r-1"),
            start: UNIX_EPOCH + Duration::from_secs(10),
            duration: Duration::from_millis(2),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = crate::metrics::Metrics::new();
        let counters = metrics.otlp_counters();
        // Nothing listens on the discard port; the export task does not
        // run before this test yields, so the queue fills up.
        let exporter = Exporter::start("http://127.0.0.1:9", None, counters.clone()).unwrap();
        let trace = TraceParent::new_root();
        for _ in 0..QUEUE_SPANS + 100 {
            exporter.record(hop(trace.child()));
        }
        assert_eq!(counters.dropped_queue_full.get(), 100);
        exporter.shutdown().await;
        assert_eq!(counters.exported.get(), 0);
        assert_eq!(counters.dropped_export_failed.get(), QUEUE_SPANS as u64);
    }

    #[test]
    fn a_failed_hop_is_an_error_span_under_its_parent() {
        let trace = TraceParent::new_root();
        let span = to_span(hop(trace));
        assert_eq!(span.name, "module panic");
        assert_eq!(span.trace_id, trace.trace_id);
        assert_eq!(span.parent_span_id, [7; 8]);
        assert_eq!(span.start_time_unix_nano, 10_000_000_000);
        assert_eq!(span.end_time_unix_nano, 10_002_000_000);
        let status = span.status.unwrap();
        assert_eq!(status.code, status::StatusCode::Error as i32);
        assert_eq!(status.message, "the module trapped");
        assert_eq!(span.flags, 0x101);
        let version = span
            .attributes
            .iter()
            .find(|kv| kv.key == "berth.version")
            .unwrap();
        assert_eq!(
            version.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("1.2.0".into()))
        );
    }
}
