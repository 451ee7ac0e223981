//! Bases as the controller sees them: registered and kept alive by their
//! heartbeats, `NotReady` once heartbeats stop for longer than the timeout.
//!
//! A heartbeat is the base's whole report (labels, capacity, what it runs),
//! stored at `/bases/<name>` with its arrival time. Liveness is a lease, as
//! it would be in etcd: the base's `/alive/<name>` key is attached to a
//! lease whose TTL is the heartbeat timeout, and each heartbeat keeps it
//! alive. A base is Ready while that key exists. When heartbeats stop the
//! store expires the lease and deletes the key, and the base is NotReady
//! from then on; its next heartbeat grants a new lease.
//!
//! A restarted controller opens its store with every lease given its whole
//! TTL again (see [`crate::store`]), so bases are not declared dead — and
//! their replicas moved — because the controller itself was down; a base
//! that stays silent after the restart goes NotReady one timeout later.

use std::time::{Duration, UNIX_EPOCH};

use berth_api::{BaseHeartbeat, BaseState, BaseStatus};
use serde::{Deserialize, Serialize};

use crate::resources::ResourceError;
use crate::rollout::now_ms;
use crate::store::{LeaseId, Store};

/// Key prefix of bases.
pub const BASES: &str = "/bases/";
/// Key prefix of the leased keys that say a base is alive.
pub const ALIVE: &str = "/alive/";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredBase {
    heartbeat: BaseHeartbeat,
    at_ms: u64,
    /// The lease that keeps `/alive/<name>`.
    #[serde(default)]
    lease: Option<LeaseId>,
    /// Its TTL: a controller restarted with another timeout grants anew.
    #[serde(default)]
    lease_ttl_ms: u64,
}

/// Records a heartbeat and keeps the base's lease alive (granting one of
/// `timeout` if it has none or it expired). Returns whether it tells the
/// controller anything new — a base that was unknown or NotReady, or a
/// change in its labels, capacity, modules or failures (not just its load)
/// — which is when placement and rollouts need another look.
pub fn heartbeat(
    store: &impl Store,
    beat: BaseHeartbeat,
    timeout: Duration,
) -> Result<bool, ResourceError> {
    let key = format!("{BASES}{}", beat.name);
    let before = store
        .get(&key)?
        .and_then(|entry| serde_json::from_slice::<StoredBase>(&entry.value).ok());
    let ttl_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let old_lease = before.as_ref().and_then(|b| b.lease);
    let kept = old_lease.filter(|lease| {
        before.as_ref().is_some_and(|b| b.lease_ttl_ms == ttl_ms)
            && store.keep_alive(*lease).is_ok()
    });
    let news = match (&before, kept) {
        (Some(before), Some(_)) => {
            let mut old = before.heartbeat.clone();
            old.in_flight = beat.in_flight;
            old != beat
        }
        _ => true,
    };
    let lease = match kept {
        Some(lease) => lease,
        None => {
            if let Some(old) = old_lease {
                let _ = store.revoke_lease(old); // most likely expired already
            }
            let lease = store.grant_lease(timeout)?;
            store.put_with_lease(&format!("{ALIVE}{}", beat.name), b"", lease)?;
            lease
        }
    };
    let value = serde_json::to_vec(&StoredBase {
        heartbeat: beat,
        at_ms: now_ms(),
        lease: Some(lease),
        lease_ttl_ms: ttl_ms,
    })
    .expect("bases serialize");
    store.put(&key, &value)?;
    Ok(news)
}

/// For `berth store copy`: the stored base `value` with its lease replaced
/// by one `grant` gives (for the TTL the base's leases have), so the base
/// stays Ready in the new store until its next heartbeat keeps that lease
/// alive; `None` if `value` is not a stored base.
pub fn with_new_lease(
    value: &[u8],
    grant: impl FnOnce(Duration) -> Result<LeaseId, crate::store::StoreError>,
) -> Option<Result<(LeaseId, Vec<u8>), crate::store::StoreError>> {
    let mut stored: StoredBase = serde_json::from_slice(value).ok()?;
    let ttl = match stored.lease_ttl_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(ms),
    };
    Some(grant(ttl).map(|lease| {
        stored.lease = Some(lease);
        (lease, serde_json::to_vec(&stored).expect("bases serialize"))
    }))
}

/// Every base, Ready while its lease lives.
pub fn list(store: &impl Store) -> Result<Vec<BaseStatus>, ResourceError> {
    let (alive, _) = store.list(ALIVE)?;
    let alive: std::collections::BTreeSet<&str> = alive
        .iter()
        .filter_map(|e| e.key.strip_prefix(ALIVE))
        .collect();
    let (entries, _) = store.list(BASES)?;
    entries
        .iter()
        .map(|entry| {
            let stored: StoredBase =
                serde_json::from_slice(&entry.value).map_err(|e| ResourceError::Corrupt {
                    key: entry.key.clone(),
                    reason: e.to_string(),
                })?;
            Ok(BaseStatus {
                last_heartbeat: humantime::format_rfc3339_millis(
                    UNIX_EPOCH + Duration::from_millis(stored.at_ms),
                )
                .to_string(),
                state: if alive.contains(stored.heartbeat.name.as_str()) {
                    BaseState::Ready
                } else {
                    BaseState::NotReady
                },
                heartbeat: stored.heartbeat,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EXPIRY_TICK, RedbStore};

    fn beat(in_flight: u32) -> BaseHeartbeat {
        BaseHeartbeat {
            name: "a".into(),
            labels: Default::default(),
            capacity_modules: 10,
            ingress: "127.0.0.1:1".into(),
            ops: "127.0.0.1:2".into(),
            modules: vec!["hello@1".into()],
            in_flight,
            failures: Default::default(),
            revision: String::new(),
            capabilities: Vec::new(),
        }
    }

    fn state(store: &RedbStore) -> BaseState {
        list(store).unwrap()[0].state
    }

    /// Whether the base goes NotReady within `within`.
    fn not_ready_within(store: &RedbStore, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if state(store) == BaseState::NotReady {
                return true;
            }
            std::thread::sleep(EXPIRY_TICK);
        }
        false
    }

    #[test]
    fn a_base_is_ready_while_its_lease_lives_and_news_is_what_placement_needs() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("c.redb")).unwrap();
        let timeout = Duration::from_millis(400);
        assert!(
            heartbeat(&store, beat(0), timeout).unwrap(),
            "a new base is news"
        );
        assert_eq!(state(&store), BaseState::Ready);
        // Only its load changed: not news, and the same lease is kept.
        assert!(!heartbeat(&store, beat(7), timeout).unwrap());
        let (alive, _) = store.list(ALIVE).unwrap();
        assert_eq!(alive.len(), 1);
        // Silent past the timeout: the lease expires and it is NotReady.
        assert!(not_ready_within(&store, timeout + Duration::from_secs(2)));
        // Back: news, Ready again on a new lease.
        assert!(heartbeat(&store, beat(0), timeout).unwrap());
        assert_eq!(state(&store), BaseState::Ready);
        assert_ne!(
            store.list(ALIVE).unwrap().0[0].create_revision,
            alive[0].create_revision
        );
    }

    #[test]
    fn a_new_timeout_takes_a_new_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("c.redb")).unwrap();
        heartbeat(&store, beat(0), Duration::from_secs(300)).unwrap();
        // The controller now runs with a 300 ms timeout: silence ends the
        // base within that, not within the old lease's 5 minutes.
        assert!(heartbeat(&store, beat(0), Duration::from_millis(300)).unwrap());
        assert!(not_ready_within(&store, Duration::from_secs(2)));
    }
}
