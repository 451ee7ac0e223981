//! The ingress: 404 for unknown paths, 500 with a request id for a trapping
//! module, a base that keeps serving through both, and HTTP/2 streams (as
//! the fleet gateway sends them) served side by side.

use std::time::Instant;

use berth_example_modules::{HELLO, PANIC, SPIN};

use crate::support::TestBase;

#[tokio::test]
async fn unknown_paths_get_a_404_that_names_nothing_installed() {
    let base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let (status, headers, body) = base.get("/secret-admin").await;
    assert_eq!(status, 404);
    assert!(!headers["x-request-id"].is_empty());
    assert!(
        !body.contains("hello"),
        "404 body leaks installed modules: {body}"
    );
    assert!(body.len() < 200);
}

#[tokio::test]
async fn a_trapping_module_costs_one_500_and_the_base_keeps_serving() {
    let base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    base.install_path("panic", "1.0.0", PANIC).await;

    let response = base
        .client
        .get(base.url("/panic/boom"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let body = response.text().await.unwrap();
    assert!(
        body.contains("req-42") && body.contains("panic@1.0.0"),
        "{body}"
    );
    assert!(body.contains("trap"), "{body}");

    // Many traps at once, interleaved with good requests: every good one succeeds.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = base.client.clone();
        let url = base.url(if i % 2 == 0 { "/panic/boom" } else { "/hello" });
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let status = task.await.unwrap();
        assert_eq!(status, if i % 2 == 0 { 500 } else { 200 });
    }
    // The same module answers normally on a path where it does not panic.
    let (status, _, body) = base.get("/panic/ok").await;
    assert_eq!((status, body.as_str()), (200, "not panicking this time\n"));
    base.assert_hello_serves().await;

    // Per-version counters saw every request and every failure.
    let list = base.list().await;
    let counts = |name: &str| {
        let m = list.modules.iter().find(|m| m.name == name).unwrap();
        (m.requests, m.errors)
    };
    assert_eq!(counts("panic"), (22, 21));
    assert_eq!(counts("hello"), (21, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_runs_past_its_deadline_gets_504_and_neighbours_keep_serving() {
    // Long enough that hello's answer, on a loaded 2-core machine, clearly
    // comes while the spinners still hold their threads.
    let timeout = std::time::Duration::from_secs(2);
    let base = TestBase::start_with(|c| c.runtime.limits.timeout = timeout).await;
    base.install_path("hello", "1.0.0", HELLO).await;
    base.install_path("spin", "1.0.0", SPIN).await;

    // Four spinning requests at once: more than the base has worker threads.
    let started = Instant::now();
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let request = base.client.get(base.url("/spin")).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                (
                    response.status().as_u16(),
                    response.text().await.unwrap(),
                    Instant::now(),
                )
            })
        })
        .collect();
    // Once all four spin at once (more than the base's two worker threads),
    // hello answers promptly.
    loop {
        let spinning = base
            .list()
            .await
            .modules
            .iter()
            .find(|m| m.name == "spin")
            .map_or(0, |m| m.in_flight);
        if spinning == 4 {
            break;
        }
        assert!(
            started.elapsed() < timeout / 2,
            "only {spinning} of 4 spinning requests were running after {:?}",
            timeout / 2
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let hello_started = Instant::now();
    base.assert_hello_serves().await;
    let hello_latency = hello_started.elapsed();
    // Spinning guests yield their worker thread every 10 ms epoch tick, so
    // hello waits a few ticks at most; 500 ms leaves room for a loaded
    // 2-core machine, and a base whose guests did not yield would hold
    // hello until the spinners' 2 s deadline.
    assert!(
        hello_latency < std::time::Duration::from_millis(500),
        "hello waited {hello_latency:?} behind spinning modules (allowed: 500 ms)"
    );
    for spinner in spinners {
        let (status, body, finished) = spinner.await.unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(body.contains("deadline"), "{body}");
        let elapsed = finished - started;
        // Interrupted at the deadline, within a generous margin for a loaded machine.
        assert!(
            elapsed >= timeout && elapsed < timeout * 4,
            "spin ended after {elapsed:?}"
        );
    }
    base.assert_hello_serves().await;
}

/// The fleet gateway sends its requests to a base as HTTP/2 streams
/// (cleartext, prior knowledge) on one connection per gateway thread: the
/// base serves them side by side on that connection, each answered with
/// its own request id, and still serves HTTP/1.1 clients.
#[tokio::test]
async fn http2_streams_on_one_connection_are_served_side_by_side() {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let stream = tokio::net::TcpStream::connect(base.running().ingress_addr)
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let requests = (0..32).map(|i| {
        let mut sender = sender.clone();
        async move {
            let request = http::Request::get("/hello")
                .header(http::header::HOST, "localhost")
                .header("x-request-id", format!("stream-{i}"))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            let (head, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            (i, head, body)
        }
    });
    for (i, head, body) in futures::future::join_all(requests).await {
        assert_eq!(head.status, 200, "stream {i}: {body:?}");
        assert_eq!(body, "Hello from berth!\n");
        assert_eq!(head.headers["x-request-id"], format!("stream-{i}").as_str());
    }
    base.assert_hello_serves().await;
}
