//! The per-request engine through a real base: a CPU share answered with
//! 503 + `Retry-After`, CPU seconds and the instance pool in `/metrics`,
//! the `pooled` policy discarded by a version switch, and a request that
//! runs long moving to the long-request workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{CpuCores, InstallRequest, InstancePolicy, Limits, PooledPolicy};
use berth_example_modules::{COUNTER, HELLO, SPIN};
use serde_json::{Value, json};

use crate::support::{TestBase, install_request};

/// The value of the first `/metrics` line starting with `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_over_its_cpu_share_is_answered_503_with_retry_after() {
    let base = Arc::new(TestBase::start().await);
    base.install_path("hello", "1", HELLO).await;
    let request = InstallRequest {
        limits: Some(Limits {
            timeout_ms: Some(2000),
            cpu: CpuCores::new(0.01),
            cpu_queue_wait_ms: Some(5),
            ..Limits::default()
        }),
        ..install_request("spin", "1", SPIN)
    };
    let (status, body) = base.install(&request).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["module"]["limits"]["cpu"], 0.01, "{body}");

    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { base.get("/spin").await.0 })
        })
        .collect();
    let series = r#"berth_module_cpu_seconds_total{module="spin",version="1"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = metric(&base.metrics_text().await, series).unwrap_or(0.0);
        if used >= 0.022 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spin's CPU seconds stayed at {used}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, headers, text) = base.get("/spin").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("CPU share"), "{text}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After: {retry}");
    base.assert_hello_serves().await;

    for spinner in spinners {
        assert_eq!(spinner.await.unwrap(), 504, "spin runs to its deadline");
    }
    let text = base.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            r#"berth_module_failures_total{module="spin",version="1",kind="cpu"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "berth_pool_resident_bytes_bound").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        metric(&text, "berth_pool_resident_bytes ").is_some(),
        "{text}"
    );
}

#[tokio::test]
async fn a_switch_discards_the_pooled_instances_of_both_versions() {
    // Cranelift only: with tiers, the optimized code taking over would drop
    // the warm instance between two requests and the count would restart.
    let base =
        TestBase::start_with(|c| c.runtime.tiers = berth_runtime::Tiers::CraneliftOnly).await;
    let pooled = |version: &str, activate: bool| InstallRequest {
        activate: Some(activate),
        limits: Some(Limits {
            policy: Some(InstancePolicy::Pooled(PooledPolicy {
                max_requests: 100,
                max_idle_ms: 60_000,
            })),
            ..Limits::default()
        }),
        ..install_request("counter", version, COUNTER)
    };
    let (status, body) = base.install(&pooled("1", true)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["module"]["limits"]["policy"],
        json!({"pooled": {"maxRequests": 100, "maxIdleMs": 60000}})
    );
    let global = || async {
        let (status, _, text) = base.get("/counter/global").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()["global"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((global().await, global().await), (1, 2), "reused");

    let (status, body) = base.install(&pooled("2", false)).await;
    assert_eq!(status, 201, "{body}");
    let switch = |version: &'static str| {
        let request = base
            .client
            .post(base.ops("/v1/modules/counter/switch"))
            .json(&json!({ "version": version }));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
    };
    switch("2").await;
    assert_eq!(
        (global().await, global().await),
        (1, 2),
        "v2's own instance"
    );
    switch("1").await;
    assert_eq!(global().await, 1, "v1's warm instance went with the switch");
}

#[tokio::test]
async fn a_bad_cpu_share_or_pool_bound_is_refused_and_changes_nothing() {
    let base = TestBase::start().await;
    base.install_path("hello", "1", HELLO).await;
    let with_limits = |limits: Value| {
        let mut request = serde_json::to_value(install_request("spin", "1", SPIN)).unwrap();
        request["limits"] = limits;
        request
    };
    let post = |body: Value| {
        let request = base.client.post(base.ops("/v1/modules")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };

    let (status, body) = post(with_limits(json!({"cpu": 0}))).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("cpu 0 is not a share of cores") && message.contains("e.g. 0.5"),
        "{body}"
    );

    let (status, body) = post(with_limits(
        json!({"policy": {"pooled": {"maxRequests": 0, "maxIdleMs": 1000}}}),
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.policy.pooled.maxRequests must be at least 1"),
        "{body}"
    );

    let modules = base.list().await.modules;
    assert_eq!(modules.len(), 1, "only hello is installed: {modules:?}");
    base.assert_hello_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_runs_long_moves_off_and_short_ones_keep_serving() {
    let base = Arc::new(TestBase::start().await);
    base.install_path("hello", "1", HELLO).await;
    let request = InstallRequest {
        limits: Some(Limits {
            timeout_ms: Some(300),
            ..Limits::default()
        }),
        ..install_request("spin", "1", SPIN)
    };
    let (status, body) = base.install(&request).await;
    assert_eq!(status, 201, "{body}");

    let spinner = {
        let base = base.clone();
        tokio::spawn(async move { base.get("/spin").await.0 })
    };
    // hello answers while spin runs to its deadline.
    for _ in 0..5 {
        base.assert_hello_serves().await;
    }
    assert_eq!(spinner.await.unwrap(), 504, "spin runs to its deadline");

    let text = base.metrics_text().await;
    let long = |module: &str| {
        metric(
            &text,
            &format!(r#"berth_module_long_requests_total{{module="{module}",version="1"}}"#),
        )
    };
    assert_eq!(long("spin"), Some(1.0), "{text}");
    // hello's requests take microseconds; one the OS preempted for a
    // quantum in the middle of a poll may move too, but not all of them.
    assert!(long("hello").is_some_and(|n| n < 5.0), "{text}");
}
