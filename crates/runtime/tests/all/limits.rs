//! Memory and CPU limits, enforced by the runtime alone.

use std::time::{Duration, Instant};

use berth_example_modules::{HOG, SPIN};
use berth_runtime::HandleError;

use crate::support::{TestRuntime, call};

#[tokio::test]
async fn a_module_over_its_memory_limit_fails_that_request_only() {
    let rt = TestRuntime::new();
    let hog = rt.load(HOG, "hog", |s| s.limits.max_memory_bytes = 16 << 20);
    match call(&hog, "/hog", None).await {
        Err(HandleError::MemoryLimit(max)) => assert_eq!(max, 16 << 20),
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert_eq!(
        hog.memory_in_use(),
        0,
        "the failed instance's memory is released"
    );
    let (status, body) = call(&hog, "/", None).await.expect("hog still serves");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_spinning_module_is_interrupted_at_its_deadline() {
    let rt = TestRuntime::new();
    let spin = rt.load(SPIN, "spin", |s| {
        s.limits.timeout = Duration::from_millis(300)
    });
    let started = Instant::now();
    match call(&spin, "/", None).await {
        Err(HandleError::Deadline(timeout)) => assert_eq!(timeout, Duration::from_millis(300)),
        other => panic!("expected the deadline, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "interrupted after {took:?}"
    );
    assert_eq!(HandleError::Deadline(Duration::ZERO).status(), 504);
}
