//! The opt-in `pooled` policy: warm instances reused one request at a
//! time, dropped on a trap, a limit hit, after their requests or idle time,
//! and all at once when the version is discarded (a switch, an uninstall).

use std::time::{Duration, Instant};

use berth_example_modules::COUNTER;
use berth_runtime::{HandleError, InstancePolicy, LoadedModule, Tiers};

use crate::support::{TestRuntime, call};

async fn global(module: &LoadedModule) -> u64 {
    let (status, body) = call(module, "/global", None)
        .await
        .expect("counter answers");
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    value["global"].as_u64().unwrap()
}

async fn answers(module: &LoadedModule, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        // No wait between requests: a pooled response ends only once its
        // instance is back in the pool.
        out.push(global(module).await);
    }
    out
}

/// A runtime compiling with Cranelift only. With tiers, Cranelift's code
/// taking over mid-test drops the warm instances made on Winch's (they
/// start counting from 1 again), and the counts below assume no discard
/// but the ones each test makes.
fn cranelift_only() -> TestRuntime {
    TestRuntime::with(|c| c.tiers = Tiers::CraneliftOnly)
}

fn pooled(rt: &TestRuntime, max_requests: u32, max_idle: Duration) -> LoadedModule {
    rt.load(COUNTER, "counter", |s| {
        s.limits.max_memory_bytes = 16 << 20;
        s.limits.timeout = Duration::from_millis(200);
        s.policy = InstancePolicy::Pooled {
            max_requests,
            max_idle,
        };
    })
}

#[tokio::test]
async fn a_warm_instance_is_reused_and_a_trap_or_limit_hit_discards_it() {
    let rt = cranelift_only();
    let counter = pooled(&rt, 100, Duration::from_secs(60));
    assert_eq!(
        answers(&counter, 3).await,
        [1, 2, 3],
        "the same instance serves again"
    );
    assert_eq!(counter.warm_instances(), 1);

    assert!(matches!(
        call(&counter, "/global/trap", None).await,
        Err(HandleError::Trap { .. })
    ));
    assert_eq!(
        answers(&counter, 2).await,
        [1, 2],
        "a trap discards the instance"
    );

    assert!(matches!(
        call(&counter, "/global/hog", None).await,
        Err(HandleError::MemoryLimit(_))
    ));
    assert_eq!(
        answers(&counter, 1).await,
        [1],
        "a memory limit hit discards it"
    );

    assert!(matches!(
        call(&counter, "/global/spin", None).await,
        Err(HandleError::Deadline(_))
    ));
    assert_eq!(answers(&counter, 1).await, [1], "a deadline discards it");
}

#[tokio::test]
async fn an_instance_serves_at_most_its_requests_and_a_discard_starts_over() {
    let rt = cranelift_only();
    let counter = pooled(&rt, 2, Duration::from_secs(60));
    assert_eq!(answers(&counter, 5).await, [1, 2, 1, 2, 1]);

    counter.discard_instances();
    assert_eq!(counter.warm_instances(), 0);
    assert_eq!(
        answers(&counter, 2).await,
        [1, 2],
        "pooled again after a discard"
    );
}

#[tokio::test]
async fn an_idle_instance_is_dropped_after_its_idle_time() {
    let rt = cranelift_only();
    let counter = pooled(&rt, 100, Duration::from_millis(100));
    assert_eq!(answers(&counter, 2).await, [1, 2]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter.warm_instances() > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle instance was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answers(&counter, 1).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_share_an_instance() {
    let rt = cranelift_only();
    let counter = pooled(&rt, 1000, Duration::from_secs(60));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let counter = counter.clone();
        requests.spawn(async move { answers(&counter, 10).await });
    }
    let mut all = Vec::new();
    while let Some(seen) = requests.join_next().await {
        all.extend(seen.unwrap());
    }
    // Each instance counts 1, 2, 3, … one request at a time: the answers
    // are runs from 1, so there are as many 1s as instances and every n > 1
    // appears at most as often as n - 1.
    let count = |n: u64| all.iter().filter(|&&v| v == n).count();
    assert_eq!(all.len(), 80);
    assert!(count(1) >= 1 && count(1) <= 8, "{all:?}");
    for n in 2..=80 {
        assert!(
            count(n) <= count(n - 1),
            "{n} seen more often than {}: {all:?}",
            n - 1
        );
    }
    assert!(count(2) >= 1, "no reuse at all: {all:?}");
}

/// A module that cannot be reused (it returns without a response from a
/// reused instance, as componentize-js components do) fails once, at once,
/// and its version serves on fresh instances from then on. Before, the
/// failed instance went back to the pool, still holding the response's
/// sender: the request hung until the idle sweep dropped it (60 s here),
/// and every other request failed the same way.
#[tokio::test]
async fn a_module_that_cannot_be_reused_fails_once_then_gets_fresh_instances() {
    let rt = cranelift_only();
    let counter = pooled(&rt, 100, Duration::from_secs(60));
    let once = |module| async move { call(module, "/global/once", None).await };
    assert_eq!(once(&counter).await.expect("first request").0, 200);
    let second = tokio::time::timeout(Duration::from_secs(20), once(&counter))
        .await
        .expect("the request on the reused instance hung");
    assert!(matches!(second, Err(HandleError::NoResponse)), "{second:?}");
    assert_eq!(counter.warm_instances(), 0, "nothing is kept after that");
    for _ in 0..5 {
        assert_eq!(once(&counter).await.expect("fresh instances answer").0, 200);
    }
    assert_eq!(
        answers(&counter, 3).await,
        [1, 1, 1],
        "every request gets a fresh instance"
    );
    assert_eq!(counter.warm_instances(), 0);
}
