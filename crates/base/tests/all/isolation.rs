//! Isolation: per-module memory, CPU, concurrency and body limits, and
//! capabilities denied by default — each contained while `hello` serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_api::{InstallRequest, Limits};
use berth_example_modules::{ECHO, GATEWAY, HELLO, HOG, SPIN};
use serde_json::Value;

use crate::support::{TestBase, install_request};

fn with_limits(name: &str, path: &str, limits: Limits) -> InstallRequest {
    InstallRequest {
        limits: Some(limits),
        ..install_request(name, "1", path)
    }
}

impl TestBase {
    async fn install_ok(&self, request: &InstallRequest) -> Value {
        let (status, body) = self.install(request).await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

#[tokio::test]
async fn a_module_over_its_memory_limit_fails_alone() {
    let base = TestBase::start().await;
    base.install_path("hello", "1", HELLO).await;
    let body = base
        .install_ok(&with_limits(
            "hog",
            HOG,
            Limits {
                memory_mib: Some(16),
                ..Limits::default()
            },
        ))
        .await;
    assert_eq!(body["module"]["limits"]["memoryMib"], 16);

    let (status, headers, text) = base.get("/hog").await;
    assert_eq!(status, 500, "{text}");
    assert!(
        text.contains("memory limit of 16 MiB") && text.contains("hog@1"),
        "{text}"
    );
    // The base's failure answer names the module like the module's own responses.
    assert_eq!(headers["x-berth-module"], "hog@1");
    base.assert_hello_serves().await;
    // The same module still serves requests that stay within the limit.
    let (status, _, text) = base.get("/hog/fine").await;
    assert_eq!((status, text.as_str()), (200, "hog is fine\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_module_deadline_and_concurrency_cap_hold() {
    let base = Arc::new(TestBase::start().await);
    base.install_path("hello", "1", HELLO).await;
    let limits = Limits {
        timeout_ms: Some(3000),
        max_concurrency: Some(2),
        ..Limits::default()
    };
    base.install_ok(&with_limits("spin", SPIN, limits)).await;

    let started = Instant::now();
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { base.get("/spin").await.0 })
        })
        .collect();
    // Wait until both spinners hold their slots (the base reports in-flight requests).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let list = base.list().await;
        if list
            .modules
            .iter()
            .any(|m| m.name == "spin" && m.in_flight == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the spinners never both started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Both slots are taken: the third request is turned away at once.
    let response = base.client.get(base.url("/spin")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["x-berth-module"], "spin@1");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("limit of 2 concurrent requests")
    );
    base.assert_hello_serves().await;
    for spinner in spinners {
        assert_eq!(spinner.await.unwrap(), 504);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    // Slots free again once the spinners are cut.
    assert_eq!(base.get("/spin").await.0, 504);
}

#[tokio::test]
async fn request_and_response_bodies_are_capped() {
    let base = TestBase::start().await;
    let small = Limits {
        max_request_bytes: Some(1000),
        max_response_bytes: Some(10_000),
        ..Limits::default()
    };
    base.install_ok(&with_limits("echo", ECHO, small)).await;
    base.install_ok(&with_limits("hog", HOG, small)).await;
    base.install_path("hello", "1", HELLO).await;

    let response = base
        .client
        .post(base.url("/echo"))
        .body(vec![b'a'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["x-berth-module"], "echo@1");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("limit of 1000 bytes")
    );
    let response = base
        .client
        .post(base.url("/echo"))
        .body(vec![b'a'; 500])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Under the cap a response arrives whole; over it, it is cut off.
    let response = base
        .client
        .get(base.url("/hog/bytes?n=5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap().len(), 5000);
    // Over it, the client never gets the whole body. Short bodies are
    // gathered before the head goes out (see the runtime's `body`
    // module), so a guest that writes fast is answered with an error that
    // names the limit; one that writes slower gets its head, and then the
    // body is cut off before more than the cap arrives.
    let mut response = base
        .client
        .get(base.url("/hog/chunks?n=100000"))
        .send()
        .await
        .expect("an over-cap response has a head");
    if response.status() == 500 {
        let text = response.text().await.unwrap();
        assert!(
            text.contains("larger than the module's limit of 10000 bytes"),
            "{text}"
        );
    } else {
        assert_eq!(response.status(), 200);
        let mut received = 0;
        let ended_cleanly = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        assert!(
            !ended_cleanly,
            "a 100 kB body over a 10 kB cap ended as if complete after {received} bytes"
        );
        assert!(
            (1024..=10_000).contains(&received),
            "{received} bytes of a 100 kB body arrived under a 10 kB cap (expected 1 KiB to 10,000)"
        );
    }
    base.assert_hello_serves().await;
}

#[tokio::test]
async fn outgoing_http_is_denied_unless_the_host_is_granted() {
    let base = TestBase::start().await;
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/secret",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { "the outside world\n" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let fetch = format!("/gateway/fetch?url=http://{addr}/secret");

    base.install_ok(&install_request("gateway", "1", GATEWAY))
        .await;
    let (status, _, text) = base.get(&fetch).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("HttpRequestDenied"), "{text}");
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "a denied request reached the server"
    );
    // No environment, no filesystem.
    let (_, _, probe) = base.get("/gateway/probe").await;
    let probe: Value = serde_json::from_str(&probe).unwrap();
    assert_eq!(probe["env"], serde_json::json!([]));
    assert!(
        probe["fs"].as_str().unwrap().starts_with("denied"),
        "{probe}"
    );

    // Granting the host (as host:port) lets it through.
    let granted = InstallRequest {
        allowed_hosts: vec![addr.to_string()],
        ..install_request("gateway", "2", GATEWAY)
    };
    assert_eq!(base.install(&granted).await.0, 201);
    let (status, _, text) = base.get(&fetch).await;
    assert_eq!((status, text.as_str()), (200, "the outside world\n"));
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}
