//! The fresh-instance promise: nothing a request leaves in an instance is
//! seen by the next request, whatever happened to the one before.

use std::time::Duration;

use berth_example_modules::COUNTER;
use berth_runtime::{HandleError, LoadedModule};

use crate::support::{TestRuntime, call};

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
