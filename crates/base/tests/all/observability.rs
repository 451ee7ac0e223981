//! Observability: Prometheus metrics that move with real traffic (parsed by
//! a real text-format parser), W3C trace context across module calls, and
//! per-version recent stats and failures for `berth status`.

use std::collections::HashMap;

use berth_api::{InstallRequest, Limits, ModuleInfo};
use berth_example_modules::{ECHO, GATEWAY, HELLO, HOG, PANIC, SPIN};
use prometheus_parse::{Scrape, Value};

use crate::support::{TestBase, install_request};

async fn scrape(base: &TestBase) -> Scrape {
    let text = base.metrics_text().await;
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("invalid exposition ({e}):\n{text}"))
}

/// The value of `name` with exactly these labels (among others).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_failures_and_limit_hits() {
    let base = TestBase::start().await;
    base.install_path("hello", "1", HELLO).await;
    base.install_path("panic", "1", PANIC).await;
    let limited = |name: &str, path: &str, limits: Limits| InstallRequest {
        limits: Some(limits),
        ..install_request(name, "1", path)
    };
    assert_eq!(
        base.install(&limited(
            "hog",
            HOG,
            Limits {
                memory_mib: Some(16),
                ..Limits::default()
            }
        ))
        .await
        .0,
        201
    );
    assert_eq!(
        base.install(&limited(
            "spin",
            SPIN,
            Limits {
                timeout_ms: Some(200),
                ..Limits::default()
            }
        ))
        .await
        .0,
        201
    );
    // A refused install counts as an error.
    assert_eq!(
        base.upload("name=bad&version=1", b"not wasm".to_vec())
            .await
            .0,
        422
    );

    for _ in 0..5 {
        assert_eq!(base.get("/hello").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(base.get("/panic/boom").await.0, 500);
    }
    assert_eq!(base.get("/hog").await.0, 500);
    assert_eq!(base.get("/spin").await.0, 504);

    let m = scrape(&base).await;
    let hello = [("module", "hello"), ("version", "1")];
    assert_eq!(
        value(
            &m,
            "berth_requests_total",
            &[hello[0], hello[1], ("status", "2xx")]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_requests_total",
            &[("module", "panic"), ("status", "5xx")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_module_failures_total",
            &[("module", "panic"), ("kind", "trap")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_module_failures_total",
            &[("module", "hog"), ("kind", "memory")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_module_failures_total",
            &[("module", "spin"), ("kind", "deadline")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_module_failures_total",
            &[("module", "hello"), ("kind", "trap")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "berth_request_duration_seconds_count", &hello),
        Some(5.0)
    );
    assert_eq!(
        value(&m, "berth_instantiation_seconds_count", &hello),
        Some(5.0)
    );
    assert_eq!(value(&m, "berth_requests_in_flight", &hello), Some(0.0));
    assert_eq!(
        value(&m, "berth_installs_total", &[("outcome", "ok")]),
        Some(4.0)
    );
    assert_eq!(
        value(&m, "berth_installs_total", &[("outcome", "error")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_compile_cache_lookups_total",
            &[("outcome", "miss")]
        ),
        Some(4.0)
    );
    assert!(value(&m, "berth_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert_eq!(
        value(&m, "berth_module_memory_bytes", &hello),
        Some(0.0),
        "no live instances, no memory held"
    );

    // An uninstalled version's series go away.
    let (status, body) = base.ops_delete("/v1/modules/hello").await;
    assert_eq!(status, 200, "{body}");
    let m = scrape(&base).await;
    assert_eq!(
        value(&m, "berth_requests_total", &[("module", "hello")]),
        None
    );
    assert_eq!(value(&m, "berth_uninstalls_total", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_gauge_shows_a_live_instance_and_drops_when_it_ends() {
    let base = TestBase::start().await;
    let limits = Limits {
        timeout_ms: Some(3000),
        ..Limits::default()
    };
    let request = InstallRequest {
        limits: Some(limits),
        ..install_request("spin", "1", SPIN)
    };
    assert_eq!(base.install(&request).await.0, 201);
    let spin = [("module", "spin")];
    let spinning = {
        let request = base.client.get(base.url("/spin")).send();
        tokio::spawn(async move { request.await.unwrap().status().as_u16() })
    };
    // While its request spins, the instance holds its linear memory. The
    // request counts as in flight from the moment it is routed, a moment
    // before its instance exists, so wait for both (CI once scraped between).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let m = scrape(&base).await;
        let in_flight = value(&m, "berth_requests_in_flight", &spin);
        let held = value(&m, "berth_module_memory_bytes", &spin).unwrap_or(0.0);
        if in_flight == Some(1.0) && held >= 65536.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "within 2 s of the spinning request, a live instance holds at least one \
             wasm page; the gauges say in flight {in_flight:?}, memory {held}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(spinning.await.unwrap(), 504);
    let m = scrape(&base).await;
    assert_eq!(value(&m, "berth_requests_in_flight", &spin), Some(0.0));
    assert_eq!(
        value(&m, "berth_module_memory_bytes", &spin),
        Some(0.0),
        "the instance ended, its memory is no longer counted"
    );
}

#[tokio::test]
async fn a_trace_id_comes_back_and_reaches_a_called_module() {
    let base = TestBase::start().await;
    base.install_path("echo", "1", ECHO).await;
    base.install_path("hello", "1", HELLO).await;
    base.install_path("gateway", "1", GATEWAY).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let response = base
        .client
        .get(base.url("/gateway"))
        .header("traceparent", &sent)
        .send()
        .await
        .unwrap();
    let back = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        back.starts_with(&format!("00-{trace_id}-")) && back != sent,
        "{back}"
    );
    // Without an x-request-id, the request id is the trace id.
    assert_eq!(response.headers()["x-request-id"], trace_id);
    let body: serde_json::Value = response.json().await.unwrap();
    let headers = body["echo"]["headers"].as_array().unwrap();
    let reached = headers
        .iter()
        .find(|h| h[0] == "traceparent")
        .map(|h| h[1].as_str().unwrap().to_string());
    let reached = reached.unwrap_or_else(|| panic!("echo got no traceparent: {headers:?}"));
    assert!(reached.starts_with(&format!("00-{trace_id}-")), "{reached}");
    assert_ne!(reached, back, "the called module runs in a span of its own");

    // A request without one starts a trace.
    let response = base.client.get(base.url("/hello")).send().await.unwrap();
    let started = response.headers()["traceparent"].to_str().unwrap();
    assert!(
        berth_runtime::TraceParent::parse(started).is_some(),
        "{started}"
    );
}

#[tokio::test]
async fn status_shows_recent_rates_latency_and_traps_with_backtraces() {
    let base = TestBase::start().await;
    base.install_path("panic", "1", PANIC).await;
    for _ in 0..3 {
        base.get("/panic/ok").await;
    }
    let response = base
        .client
        .get(base.url("/panic/boom"))
        .header("x-request-id", "boom-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let list: berth_api::ModuleList = base.ops_get("/v1/modules/panic").await;
    let m: &ModuleInfo = &list.modules[0];
    assert!(m.recent.requests_per_second > 0.0);
    assert!((m.recent.error_rate - 0.25).abs() < 1e-9, "{:?}", m.recent);
    let (p50, p99) = (m.recent.p50_ms.unwrap(), m.recent.p99_ms.unwrap());
    assert!(p50 > 0.0 && p99 >= p50, "{:?}", m.recent);
    assert_eq!(m.recent_traps.len(), 1);
    let trap = &m.recent_traps[0];
    assert_eq!(trap.request_id, "boom-1");
    assert!(trap.message.contains("trap"), "{trap:?}");
    // The backtrace names guest functions (from the component's name section).
    assert!(
        trap.detail.contains("wasm backtrace") && trap.detail.contains("panic"),
        "{}",
        trap.detail
    );
    let counts: HashMap<_, _> = [("requests", m.requests), ("errors", m.errors)].into();
    assert_eq!(counts["requests"], 4);
    assert_eq!(counts["errors"], 1);
}

#[tokio::test]
async fn observability_can_be_turned_off_and_counters_still_count() {
    let base = TestBase::start_with(|c| c.observability = false).await;
    base.install_path("hello", "1", HELLO).await;
    for _ in 0..3 {
        assert_eq!(base.get("/hello").await.0, 200);
    }
    let m = scrape(&base).await;
    assert_eq!(
        value(
            &m,
            "berth_requests_total",
            &[("module", "hello"), ("status", "2xx")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "berth_instantiation_seconds_count",
            &[("module", "hello")]
        ),
        Some(0.0)
    );
    let list = base.list().await;
    assert_eq!(list.modules[0].requests, 3);
}
