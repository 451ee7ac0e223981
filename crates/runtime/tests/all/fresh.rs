//! The fresh-instance promise: nothing a request leaves in an instance is
//! seen by the next request, whatever happened to the one before.

use std::time::Duration;

use berth_example_modules::COUNTER;
use berth_runtime::{HandleError, LoadedModule};

use crate::support::{TestRuntime, call, until};

/// `counter`'s `/global`: the instance's own count after this request.
async fn global(module: &LoadedModule) -> u64 {
    let (status, body) = call(module, "/global", None)
        .await
        .expect("counter answers");
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    value["global"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_counts_one_on_every_request_under_concurrency_and_after_failures() {
    let rt = TestRuntime::new();
    let counter = rt.load(COUNTER, "counter", |s| {
        s.limits.max_memory_bytes = 16 << 20;
        s.limits.timeout = Duration::from_millis(200);
    });
    for _ in 0..3 {
        assert_eq!(global(&counter).await, 1, "one after another");
    }

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let counter = counter.clone();
        requests.spawn(async move { global(&counter).await });
    }
    while let Some(answer) = requests.join_next().await {
        assert_eq!(answer.unwrap(), 1, "sixteen at once");
    }

    match call(&counter, "/global/trap", None).await {
        Err(HandleError::Trap { .. }) => {}
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(global(&counter).await, 1, "after a trap");

    match call(&counter, "/global/hog", None).await {
        Err(HandleError::MemoryLimit(_)) => {}
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert_eq!(global(&counter).await, 1, "after the memory limit");

    match call(&counter, "/global/spin", None).await {
        Err(HandleError::Deadline(_)) => {}
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert_eq!(global(&counter).await, 1, "after the deadline");
}

/// A caller that goes away (hyper drops a request whose client closed the
/// connection) does not cut the module short: its guest runs on to its
/// own end, here the deadline, and only then gives its permit back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_caller_goes_away_still_runs_to_its_end() {
    let rt = TestRuntime::new();
    let deadline = Duration::from_millis(600);
    let counter = rt.load(COUNTER, "counter", |s| s.limits.timeout = deadline);
    let started = std::time::Instant::now();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        call(&counter, "/global/spin", None),
    )
    .await;
    assert!(gave_up.is_err(), "the spin answered: {gave_up:?}");
    // The caller's future is gone; the guest is not.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counter.in_flight(), 1, "the guest stopped with its caller");
    until("the guest to reach its deadline", || {
        counter.in_flight() == 0
    })
    .await;
    assert!(
        started.elapsed() >= deadline,
        "the guest ended after {:?}, before its {deadline:?} deadline",
        started.elapsed()
    );
    assert_eq!(global(&counter).await, 1, "the next request is fresh");
}
