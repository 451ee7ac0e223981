//! The store contract: what every [`Store`] backend must do, written once
//! and run against each backend by [`contract!`]. A backend is a function
//! returning a fresh, empty store and a guard that cleans it up when
//! dropped; assertions never depend on the absolute revision numbers, only
//! on their order, so a backend may share its server with other tests.

use std::time::{Duration, Instant};

use berth_controller::etcd::EtcdStore;
use berth_controller::store::{Event, RedbStore, SharedStore, Store, StoreError};

#[path = "support/etcd.rs"]
mod etcd_server;

/// A store under test and whatever keeps it alive (a temp dir, a server).
type Backend = (Box<dyn std::any::Any>, SharedStore);

/// The embedded backend: one redb file in a temp dir.
fn redb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("controller.redb")).unwrap();
    (Box::new(dir), std::sync::Arc::new(store))
}

/// The etcd backend: a single-member etcd of its own, keys under a prefix.
fn etcd() -> Backend {
    let server = etcd_server::EtcdServer::start();
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint), "/berth-test").unwrap();
    (Box::new(server), std::sync::Arc::new(store))
}

/// Runs every contract test against the backend `$open` returns, as the
/// tests of module `$backend`.
macro_rules! contract {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[test]
            fn revisions_order_every_change_and_cas_refuses_stale_writes() {
                let (_guard, s) = $open;
                super::revisions_order_every_change_and_cas_refuses_stale_writes(&s);
            }

            #[test]
            fn a_lease_kept_alive_keeps_its_keys_and_an_expired_one_deletes_them() {
                let (_guard, s) = $open;
                super::a_lease_kept_alive_keeps_its_keys_and_an_expired_one_deletes_them(&s);
            }

            #[test]
            fn revoking_a_lease_deletes_its_keys_at_once() {
                let (_guard, s) = $open;
                super::revoking_a_lease_deletes_its_keys_at_once(&s);
            }

            #[test]
            fn create_with_lease_takes_only_an_absent_key_and_the_lease_owns_it() {
                let (_guard, s) = $open;
                super::create_with_lease_takes_only_an_absent_key_and_the_lease_owns_it(&s);
            }

            #[tokio::test]
            async fn a_watch_replays_history_then_follows_live_changes_under_its_prefix() {
                let (_guard, s) = $open;
                super::a_watch_replays_history_then_follows_live_changes_under_its_prefix(&s).await;
            }
        }
    };
}

contract!(redb, super::redb());
contract!(etcd, super::etcd());

/// An etcd nobody runs: a clear error naming the endpoints and what to
/// check, within a few seconds.
#[test]
fn an_unreachable_etcd_is_named_with_what_to_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint), "/berth")
        .err()
        .expect("nothing listens there")
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains(&format!("no etcd member answers at {endpoint}"))
            && err.contains("check that etcd runs there")
            && err.contains("--advertise-client-urls"),
        "{err}"
    );
}

/// A watch whose connection drops (etcd restarted) resumes from the
/// revision after the last change it delivered: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_watch_resumes_after_a_disconnect_losing_nothing() {
    let mut server = etcd_server::EtcdServer::start();
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint), "/berth").unwrap();
    let first = store.put("/deployments/a", b"1").unwrap();
    let mut watch = store.watch("/deployments/", first - 1).unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.revision(), first);
    tokio::task::block_in_place(|| server.restart(Duration::from_millis(300)));
    let (second, third) = tokio::task::block_in_place(|| {
        (
            store.put("/deployments/b", b"2").unwrap(),
            store.put("/deployments/a", b"3").unwrap(),
        )
    });
    let mut after = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch resumes")
            .unwrap()
            .unwrap();
        after.push((event.key().to_string(), event.revision()));
    }
    assert_eq!(
        after,
        [
            ("/deployments/b".to_string(), second),
            ("/deployments/a".to_string(), third)
        ]
    );
}

/// The keys of one store stay under its prefix: another prefix on the
/// same etcd sees none of them.
#[test]
fn stores_under_different_prefixes_share_an_etcd_without_seeing_each_other() {
    let server = etcd_server::EtcdServer::start();
    let endpoints = std::slice::from_ref(&server.endpoint);
    let a = EtcdStore::connect(endpoints, "/berth-a").unwrap();
    let b = EtcdStore::connect(endpoints, "/berth-b").unwrap();
    a.put("/deployments/x", b"1").unwrap();
    assert!(b.get("/deployments/x").unwrap().is_none());
    assert!(b.list("/").unwrap().0.is_empty());
    let (listed, _) = a.list("/").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "/deployments/x");
}

fn revisions_order_every_change_and_cas_refuses_stale_writes(s: &SharedStore) {
    let r1 = s.put("/d/a", b"1").unwrap();
    let r2 = s.put("/d/b", b"2").unwrap();
    assert!(r2 > r1, "{r1} then {r2}");
    let a = s.get("/d/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r1, r1));
    let r3 = s.compare_and_swap("/d/a", r1, b"1b").unwrap();
    assert!(r3 > r2);
    let a = s.get("/d/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r1, r3));
    let err = s.compare_and_swap("/d/a", r1, b"lost").unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { expected, found, .. } if *expected == r1 && *found == r3),
        "{err}"
    );
    assert!(err.to_string().contains("read it again and retry"));
    assert_eq!(s.get("/d/a").unwrap().unwrap().value, b"1b");
    // 0 means "must not exist".
    assert!(matches!(
        s.compare_and_swap("/d/a", 0, b"x"),
        Err(StoreError::Conflict { found, .. }) if found == r3
    ));
    let r4 = s.compare_and_swap("/d/c", 0, b"3").unwrap();
    assert!(r4 > r3);
    let (entries, revision) = s.list("/d/").unwrap();
    assert_eq!(
        entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["/d/a", "/d/b", "/d/c"]
    );
    assert!(revision >= r4);
    let r5 = s.delete("/d/b").unwrap().unwrap();
    assert!(r5 > r4);
    assert_eq!(s.delete("/d/b").unwrap(), None);
    assert!(s.get("/d/b").unwrap().is_none());
    assert_eq!(s.list("/x").unwrap().0.len(), 0);
}

/// Waits up to `within` for `key` to be gone.
fn gone_within(s: &SharedStore, key: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if s.get(key).unwrap().is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs a future that is ready or nearly (a watch with its event queued).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(5), f)
                .await
                .unwrap()
        })
}

fn a_lease_kept_alive_keeps_its_keys_and_an_expired_one_deletes_them(s: &SharedStore) {
    // 2 s: etcd raises shorter TTLs to its minimum.
    let ttl = Duration::from_secs(2);
    let lease = s.grant_lease(ttl).unwrap();
    let at = s.put_with_lease("/alive/a", b"", lease).unwrap();
    s.put_with_lease("/alive/b", b"", lease).unwrap();
    // b is put again without the lease: detached, it outlives the lease.
    s.put("/alive/b", b"kept").unwrap();
    let mut watch = s.watch("/alive/a", at).unwrap();
    for _ in 0..6 {
        std::thread::sleep(ttl / 4);
        s.keep_alive(lease).unwrap();
    }
    assert!(
        s.get("/alive/a").unwrap().is_some(),
        "kept alive past its TTL"
    );
    // Silence: gone within the TTL and a second, as a change.
    assert!(gone_within(s, "/alive/a", ttl + Duration::from_secs(1)));
    let deleted = block_on(watch.next());
    assert!(
        matches!(deleted, Some(Ok(Event::Delete { ref key, revision })) if key == "/alive/a" && revision > at),
        "{deleted:?}"
    );
    assert_eq!(s.get("/alive/b").unwrap().unwrap().value, b"kept");
    // The lease is over: it cannot be renewed or given keys.
    let err = s.keep_alive(lease).unwrap_err();
    assert!(err.to_string().contains("grant a new lease"), "{err}");
    assert!(
        matches!(s.put_with_lease("/alive/c", b"", lease), Err(StoreError::LeaseNotFound(l)) if l == lease)
    );
    assert!(s.get("/alive/c").unwrap().is_none());
}

fn revoking_a_lease_deletes_its_keys_at_once(s: &SharedStore) {
    let lease = s.grant_lease(Duration::from_secs(60)).unwrap();
    s.put_with_lease("/alive/a", b"", lease).unwrap();
    s.put_with_lease("/alive/b", b"", lease).unwrap();
    s.revoke_lease(lease).unwrap();
    assert!(s.get("/alive/a").unwrap().is_none());
    assert!(s.get("/alive/b").unwrap().is_none());
    assert!(matches!(s.revoke_lease(lease), Err(StoreError::LeaseNotFound(l)) if l == lease));
    // Ids are not reused.
    assert_ne!(s.grant_lease(Duration::from_secs(5)).unwrap(), lease);
}

async fn a_watch_replays_history_then_follows_live_changes_under_its_prefix(s: &SharedStore) {
    s.put("/deployments/a", b"1").unwrap();
    s.put("/bases/x", b"up").unwrap();
    let (_, at) = s.list("/deployments/").unwrap();
    let b = s.put("/deployments/b", b"2").unwrap(); // after the snapshot
    let mut watch = s.watch("/deployments/", at).unwrap();
    let a_gone = s.delete("/deployments/a").unwrap().unwrap();
    s.put("/bases/y", b"up").unwrap();
    let b_again = s.put("/deployments/b", b"3").unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((
            event.key().to_string(),
            event.revision(),
            matches!(event, Event::Put(_)),
        ));
    }
    assert_eq!(
        seen,
        [
            ("/deployments/b".into(), b, true),
            ("/deployments/a".into(), a_gone, false),
            ("/deployments/b".into(), b_again, true)
        ]
    );
}

/// The leader lock: the first create wins, the second is a conflict
/// naming the holder's revision, and the key goes with its lease.
fn create_with_lease_takes_only_an_absent_key_and_the_lease_owns_it(s: &SharedStore) {
    let first = s.grant_lease(Duration::from_secs(5)).unwrap();
    let second = s.grant_lease(Duration::from_secs(5)).unwrap();
    let taken = s.create_with_lease("/leader", b"a", first).unwrap();
    match s.create_with_lease("/leader", b"b", second) {
        Err(StoreError::Conflict {
            expected: 0, found, ..
        }) => assert_eq!(found, taken),
        other => panic!("a second create must conflict: {other:?}"),
    }
    assert_eq!(s.get("/leader").unwrap().unwrap().value, b"a");
    s.revoke_lease(first).unwrap();
    assert!(s.get("/leader").unwrap().is_none());
    s.create_with_lease("/leader", b"b", second).unwrap();
    assert_eq!(s.get("/leader").unwrap().unwrap().value, b"b");
    // A lease that is gone cannot own a key.
    s.revoke_lease(second).unwrap();
    assert!(matches!(
        s.create_with_lease("/other", b"c", second),
        Err(StoreError::LeaseNotFound(_))
    ));
}
