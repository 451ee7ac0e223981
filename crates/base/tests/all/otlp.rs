//! OTLP span export: a real OTLP/HTTP receiver on localhost decodes what the
//! base posts with the OpenTelemetry protobuf types, for ingress requests,
//! module-to-module calls and traps; a collector that refuses or hangs
//! neither stops serving nor holds up shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_example_modules::{ECHO, GATEWAY, HELLO, PANIC};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;

use crate::support::TestBase;

/// An OTLP/HTTP receiver: keeps every export request it decodes.
struct Collector {
    endpoint: String,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Collector {
    async fn start() -> Self {
        let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
        let store = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: http::HeaderMap, body: bytes::Bytes| async move {
                    if headers
                        .get(http::header::CONTENT_TYPE)
                        .is_none_or(|v| v != "application/x-protobuf")
                    {
                        return (http::StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
                    }
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            store.lock().unwrap().push(request);
                            (
                                http::StatusCode::OK,
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                        }
                        Err(_) => (http::StatusCode::BAD_REQUEST, Vec::new()),
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            endpoint: format!("http://{addr}"),
            received,
        }
    }

    /// Every span received so far in trace `trace_id` (hex).
    fn spans(&self, trace_id: &str) -> Vec<Span> {
        let trace_id = bytes_of(trace_id);
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits (up to 10 s) until trace `trace_id` has `count` spans.
    async fn wait_for(&self, trace_id: &str, count: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans(trace_id);
            if spans.len() >= count || Instant::now() > deadline {
                assert_eq!(spans.len(), count, "spans of trace {trace_id}: {spans:#?}");
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The resource attribute `key` of the first export.
    fn resource_attr(&self, key: &str) -> Option<Value> {
        let received = self.received.lock().unwrap();
        let resource = received
            .first()?
            .resource_spans
            .first()?
            .resource
            .as_ref()?;
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn text(value: &str) -> Option<Value> {
    Some(Value::StringValue(value.into()))
}

/// The bytes of a hex id.
fn bytes_of(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn span_id_of(traceparent: &str) -> Vec<u8> {
    bytes_of(traceparent.split('-').nth(2).unwrap())
}

async fn base_exporting_to(endpoint: &str) -> TestBase {
    let endpoint = endpoint.to_string();
    TestBase::start_with(move |config| config.otlp_endpoint = Some(endpoint)).await
}

/// `berth_otlp_spans_*` series from `/metrics`: (exported, dropped for `reason`).
async fn otlp_counters(base: &TestBase, reason: &str) -> (f64, f64) {
    let text = base.metrics_text().await;
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in /metrics:\n{text}"))
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    (
        value("berth_otlp_spans_exported_total "),
        value(&format!(
            "berth_otlp_spans_dropped_total{{reason=\"{reason}\"}} "
        )),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_becomes_a_span_under_the_callers_span() {
    let collector = Collector::start().await;
    let base = base_exporting_to(&collector.endpoint).await;
    base.install_path("hello", "1.2.0", HELLO).await;

    // An unsampled trace is not exported.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let response = base
        .client
        .get(base.url("/hello"))
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent_span = "00f067aa0ba902b7";
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let response = base
        .client
        .get(base.url("/hello/there?x=1"))
        .header("traceparent", format!("00-{trace_id}-{sent_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let back = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();

    let spans = collector.wait_for(trace_id, 1).await;
    let span = &spans[0];
    assert_eq!(span.parent_span_id, bytes_of(sent_span));
    assert_eq!(span.span_id, span_id_of(&back), "the span is the hop's");
    assert_eq!(span.name, "GET /hello");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert!(
        before.as_nanos() as u64 <= span.start_time_unix_nano
            && span.start_time_unix_nano <= span.end_time_unix_nano
            && span.end_time_unix_nano <= after.as_nanos() as u64,
        "{span:?}"
    );
    assert_eq!(attr(span, "berth.module"), text("hello"));
    assert_eq!(attr(span, "berth.version"), text("1.2.0"));
    assert_eq!(attr(span, "http.request.method"), text("GET"));
    assert_eq!(attr(span, "url.path"), text("/hello/there"));
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(attr(span, "berth.request_id"), text(trace_id));
    assert_ne!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
    assert_eq!(collector.resource_attr("service.name"), text("berth-base"));
    // Spans are exported in order: the unsampled request's would be here by now.
    assert!(collector.spans(unsampled).is_empty());
    // Counted once the collector's answer is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counters = otlp_counters(&base, "export_failed").await;
        if counters == (1.0, 0.0) || Instant::now() > deadline {
            assert_eq!(counters, (1.0, 0.0), "(exported, failed)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_call_is_a_child_span_in_the_same_trace() {
    let collector = Collector::start().await;
    let base = base_exporting_to(&collector.endpoint).await;
    base.install_path("hello", "1", HELLO).await;
    base.install_path("echo", "1", ECHO).await;
    base.install_path("gateway", "1", GATEWAY).await;

    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let sent_span = "10f067aa0ba902b7";
    let response = base
        .client
        .get(base.url("/gateway"))
        .header("traceparent", format!("00-{trace_id}-{sent_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let spans = collector.wait_for(trace_id, 3).await;
    let by_module = |name: &str| {
        spans
            .iter()
            .find(|s| attr(s, "berth.module") == text(name))
            .unwrap_or_else(|| panic!("no span of {name}: {spans:#?}"))
    };
    let gateway = by_module("gateway");
    assert_eq!(gateway.parent_span_id, bytes_of(sent_span));
    assert_eq!(gateway.name, "GET /gateway");
    for (callee, method, path) in [
        ("hello", "GET", "/hello"),
        ("echo", "POST", "/echo/from-gateway"),
    ] {
        let span = by_module(callee);
        assert_eq!(
            span.parent_span_id, gateway.span_id,
            "{callee} runs under the gateway's span"
        );
        assert_ne!(span.span_id, gateway.span_id);
        assert_eq!(span.name, format!("module {callee}"));
        assert_eq!(attr(span, "http.request.method"), text(method));
        assert_eq!(attr(span, "url.path"), text(path));
        assert_eq!(
            attr(span, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
        // The call happened inside the gateway's hop.
        assert!(
            gateway.start_time_unix_nano <= span.start_time_unix_nano
                && span.end_time_unix_nano <= gateway.end_time_unix_nano,
            "{span:?} not within {gateway:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_an_error_span() {
    let collector = Collector::start().await;
    let base = base_exporting_to(&collector.endpoint).await;
    base.install_path("panic", "1", PANIC).await;

    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4736";
    let response = base
        .client
        .get(base.url("/panic/boom"))
        .header("traceparent", format!("00-{trace_id}-20f067aa0ba902b7-01"))
        .header("x-request-id", "boom-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);

    let spans = collector.wait_for(trace_id, 1).await;
    let span = &spans[0];
    let status = span.status.as_ref().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32, "{span:?}");
    assert!(!status.message.is_empty(), "{span:?}");
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(Value::IntValue(500))
    );
    assert_eq!(attr(span, "berth.request_id"), text("boom-1"));
    assert_eq!(attr(span, "berth.module"), text("panic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_collector_neither_stops_serving_nor_goes_uncounted() {
    // A port nothing listens on: connections are refused.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let base = base_exporting_to(&format!("http://{addr}")).await;
    base.install_path("hello", "1", HELLO).await;
    for _ in 0..20 {
        let (status, _, body) = base.get("/hello").await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (exported, dropped) = otlp_counters(&base, "export_failed").await;
        assert_eq!(exported, 0.0);
        if dropped == 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed exports not counted: {dropped} of 20"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    base.assert_hello_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_hung_collector() {
    // A collector that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hung = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut base = base_exporting_to(&format!("http://{addr}")).await;
    base.install_path("hello", "1", HELLO).await;
    let (status, _, _) = base.get("/hello").await;
    assert_eq!(status, 200);
    let stopping = Instant::now();
    base.running.take().unwrap().shutdown().await;
    let took = stopping.elapsed();
    // Documented: shutdown waits at most a second for the last batch. The
    // hung collector makes it wait that whole second; 400 ms more is room
    // for a loaded machine, and a longer grace or an unbounded export (3 s
    // timeout) fails.
    let allowed = berth_base::otlp::SHUTDOWN_GRACE + Duration::from_millis(400);
    assert_eq!(berth_base::otlp::SHUTDOWN_GRACE, Duration::from_secs(1));
    assert!(
        took < allowed,
        "shutdown took {took:?} (allowed {allowed:?})"
    );
    hung.abort();
}
