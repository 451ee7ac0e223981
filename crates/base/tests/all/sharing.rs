//! Sharing on purpose: config, kv and log from `berth:base`, and
//! module-to-module calls in-process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use berth_api::InstallRequest;
use berth_example_modules::{COUNTER, ECHO, GATEWAY, HELLO};
use serde_json::Value;

use crate::support::{TestBase, install_request};

async fn json(base: &TestBase, path: &str) -> Value {
    let (status, _, text) = base.get(path).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn config_and_kv_are_per_module_and_kv_survives_a_restart() {
    let mut base = TestBase::start().await;
    let with_greeting = InstallRequest {
        config: [("greeting".to_string(), "hi from a".to_string())].into(),
        ..install_request("counter-a", "1", COUNTER)
    };
    let (status, body) = base.install(&with_greeting).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["module"]["configKeys"],
        serde_json::json!(["greeting"])
    );
    base.install_path("counter-b", "1", COUNTER).await;

    for expected in 1..=3 {
        assert_eq!(json(&base, "/counter-a").await["hits"], expected);
    }
    let b = json(&base, "/counter-b").await;
    assert_eq!(b["hits"], 1, "counter-b saw counter-a's keys");
    assert_eq!(
        b["greeting"],
        Value::Null,
        "counter-b saw counter-a's config"
    );
    assert_eq!(
        json(&base, "/counter-a/peek").await["greeting"],
        "hi from a"
    );

    base.restart().await;
    assert_eq!(json(&base, "/counter-a/peek").await["hits"], 3);
    assert_eq!(json(&base, "/counter-a").await["hits"], 4);
    // Concurrent increments are atomic.
    let base = Arc::new(base);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { base.get("/counter-b").await.0 })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(json(&base, "/counter-b/peek").await["hits"], 21);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines of every test in this binary (one global subscriber:
/// tracing's per-callsite interest cache makes thread-scoped subscribers
/// miss events while other tests run).
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        captured
    })
}

#[tokio::test]
async fn log_lines_carry_the_module_version_and_request_id() {
    let captured = captured_logs();
    let base = TestBase::start().await;
    base.install_path("counter", "7", COUNTER).await;
    let response = base
        .client
        .get(base.url("/counter"))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("counted hit 1 ") && l.contains("trace-me-1"))
        .unwrap_or_else(|| panic!("no module log line in:\n{logs}"));
    assert!(
        line.contains("berth::module")
            && line.contains("module=\"counter\"")
            && line.contains("version=\"7\""),
        "{line}"
    );
    assert!(line.contains("request_id=\"trace-me-1\""), "{line}");
}

#[tokio::test]
async fn modules_call_each_other_in_process() {
    let base = TestBase::start().await;
    base.install_path("hello", "1", HELLO).await;
    base.install_path("echo", "1", ECHO).await;
    base.install_path("gateway", "1", GATEWAY).await;

    let response = base
        .client
        .get(base.url("/gateway"))
        .header("x-request-id", "chain-7")
        .header("x-berth-traffic-unit", "blue")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["hello"], "Hello from berth!\n");
    assert_eq!(body["echo"]["method"], "POST");
    assert_eq!(body["echo"]["path"], "/echo/from-gateway");
    assert_eq!(body["echo"]["body"], "hi echo");
    let headers = body["echo"]["headers"].as_array().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(
        header("x-request-id").as_deref(),
        Some("chain-7"),
        "request id not propagated: {headers:?}"
    );
    assert_eq!(
        header("x-berth-traffic-unit").as_deref(),
        Some("blue"),
        "traffic unit not propagated"
    );
    assert_eq!(header("x-from").as_deref(), Some("gateway"));

    // The callees counted the calls; nothing went through the ingress socket for them.
    let list = base.list().await;
    let requests = |name: &str| {
        list.modules
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .requests
    };
    assert_eq!(
        (requests("hello"), requests("echo"), requests("gateway")),
        (1, 1, 1)
    );

    let (status, _, text) = base.get("/gateway/call?module=ghost&path=/x").await;
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("no module named `ghost` is installed"),
        "{text}"
    );

    let (status, _, text) = base.get("/gateway/loop").await;
    assert_eq!(status, 508, "{text}");
    assert!(
        text.contains("Loop Detected") && text.contains("8 hops"),
        "{text}"
    );
    base.assert_hello_serves().await;
}
