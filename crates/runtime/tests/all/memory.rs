//! Memory reset: a freed instance's written pages stay resident (up to the
//! keep-resident bytes) for the next instance, bounded and reported, and
//! come back to it as they were at the start.

use berth_example_modules::{HELLO, HOG};
use berth_runtime::{PoolStats, Runtime};

use crate::support::{TestRuntime, call, until};

/// The pool once no instance is live: a request's instance is freed when
/// its guest task ends, a moment after the client has the whole response
/// (later still if the request ran on the long-request workers).
async fn settled(runtime: &Runtime) -> PoolStats {
    let stats = || runtime.pool_stats().expect("the runtime pools");
    until("the request's instance to be freed", || {
        stats().instances == 0
    })
    .await;
    stats()
}

#[tokio::test]
async fn freed_instances_keep_their_written_pages_within_the_bound() {
    let rt = TestRuntime::with(|c| c.memory_keep_resident = 4 << 20);
    let before = rt.runtime.pool_stats().expect("the runtime pools");
    assert_eq!(before.resident_bytes, 0, "nothing freed yet: {before:?}");

    let hello = rt.load(HELLO, "hello", |_| {});
    let (status, _) = call(&hello, "/", None).await.unwrap();
    assert_eq!(status, 200);
    let after_hello = settled(&rt.runtime).await;
    eprintln!("a freed hello instance keeps {after_hello:?}");
    assert!(after_hello.resident_bytes > 0, "{after_hello:?}");
    assert!(after_hello.resident_bytes <= after_hello.resident_bytes_bound);

    // A module writing 8 MiB keeps at most the 4 MiB of its slot.
    let hog = rt.load(HOG, "hog", |_| {});
    let (status, body) = call(&hog, "/touch?mib=8", None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let after_hog = settled(&rt.runtime).await;
    eprintln!("and a freed hog instance that wrote 8 MiB: {after_hog:?}");
    assert!(
        after_hog.resident_bytes <= after_hello.resident_bytes + (4 << 20) + (64 << 10),
        "{after_hog:?}"
    );
    assert!(after_hog.resident_bytes <= after_hog.resident_bytes_bound);

    // With nothing kept, freed memory goes back at once.
    let none = TestRuntime::with(|c| c.memory_keep_resident = 0);
    let hello = none.load(HELLO, "hello", |_| {});
    call(&hello, "/", None).await.unwrap();
    let stats = settled(&none.runtime).await;
    assert!(stats.resident_bytes <= 64 << 10, "tables only: {stats:?}");
}

/// A guest whose writes are scattered over many runs of pages (an
/// interpreter's heap) keeps all of them resident, not only the first 32
/// runs (`vendor/wasmtime`, PAGEMAP_SCAN resumed), and every one is reset:
/// the next instance finds none of the bytes the last one wrote.
#[tokio::test]
async fn scattered_writes_stay_resident_and_come_back_clean() {
    const PAGES: usize = 600;
    let rt = TestRuntime::with(|c| c.memory_keep_resident = 8 << 20);
    let hog = rt.load(HOG, "hog", |_| {});
    for round in 1..=3 {
        let (status, body) = call(&hog, &format!("/scatter?pages={PAGES}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("scattered {PAGES} pages, 0 not zero before")),
            "round {round}: an instance saw what the last one wrote: {body}"
        );
        let stats = settled(&rt.runtime).await;
        eprintln!("round {round}: {stats:?}");
        assert!(
            stats.resident_bytes >= (PAGES * 4096) as u64,
            "round {round}: {PAGES} scattered written pages should stay resident: {stats:?}"
        );
        assert!(
            stats.resident_bytes <= stats.resident_bytes_bound,
            "{stats:?}"
        );
    }
}
