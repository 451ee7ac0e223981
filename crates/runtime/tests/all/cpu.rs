//! Fair CPU: guests yield every 1 ms quantum, CPU time is counted per
//! version, and a version over its CPU share is held back and then turned
//! away while a neighbour stays prompt.

use std::time::{Duration, Instant};

use berth_example_modules::{HELLO, SPIN};
use berth_runtime::{HandleError, LoadedModule};

use crate::support::{TestRuntime, call, until};

fn spinners(spin: &LoadedModule, n: usize) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let spin = spin.clone();
        set.spawn(async move {
            match call(&spin, "/", None).await {
                Err(HandleError::Deadline(_)) => {}
                other => panic!("spin should run to its deadline, got {other:?}"),
            }
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_stays_prompt_beside_spinning_requests_and_spin_cpu_is_counted() {
    let rt = TestRuntime::new();
    let hello = rt.load(HELLO, "hello", |_| {});
    let spin = rt.load(SPIN, "spin", |s| s.limits.timeout = Duration::from_secs(2));
    let mut spinning = spinners(&spin, 4);
    until("four spinning requests", || spin.in_flight() == 4).await;
    let before = spin.cpu_time();

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let (status, body) = call(&hello, "/", None).await.expect("hello answers");
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("hello beside 4 spinning requests on 2 workers: slowest of 20 {slowest:?}");
    assert!(
        slowest < Duration::from_millis(300),
        "hello took {slowest:?} beside spinning requests"
    );
    // The spinners run on the long-request workers, below hello's priority:
    // they may get no CPU while hello's requests run, but they do go on.
    until("spin's CPU time to grow", || spin.cpu_time() > before).await;
    while let Some(done) = spinning.join_next().await {
        done.unwrap();
    }
    assert!(
        spin.cpu_time() >= Duration::from_millis(500),
        "4 requests spinning 2 s on 2 workers count at least 0.5 s, got {:?}",
        spin.cpu_time()
    );
    assert!(hello.cpu_time() > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_over_its_share_is_held_back_then_turned_away() {
    let rt = TestRuntime::new();
    let spin = rt.load(SPIN, "spin", |s| {
        s.limits.timeout = Duration::from_secs(2);
        s.limits.cpu_millis = Some(10);
        s.limits.cpu_queue_wait = Duration::from_millis(5);
    });
    let mut spinning = spinners(&spin, 2);
    until("spin past its burst", || {
        spin.cpu_time() >= Duration::from_millis(22)
    })
    .await;

    // Held back: over 500 ms of wall time two spinning requests would use
    // ~1 s of CPU unchecked; at 0.01 cores they get ~5 ms. (So small a
    // share also makes the bucket drain slowly: 1 s from its burst to the
    // admission line, far longer than any scheduling hiccup of a busy
    // machine, so the refusal below cannot race.)
    let (from, at) = (spin.cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = spin.cpu_time() - from;
    let rate = used.as_secs_f64() / at.elapsed().as_secs_f64();
    eprintln!(
        "spin at a 0.01-core share used {used:?} in {:?}",
        at.elapsed()
    );
    assert!(rate < 0.3, "spin used {rate:.2} cores with a 0.01 share");

    // Turned away: its turn is further than its 5 ms queue wait.
    match call(&spin, "/", None).await {
        Err(e @ HandleError::CpuThrottled { .. }) => {
            assert_eq!(e.status(), 503);
            assert!(e.retry_after_secs().is_some_and(|s| s >= 1), "{e:?}");
        }
        other => panic!("expected 503 over the CPU share, got {other:?}"),
    }
    while let Some(done) = spinning.join_next().await {
        done.unwrap();
    }
}
