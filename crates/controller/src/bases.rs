//! Bases as the controller sees them: registered and kept alive by their
//! heartbeats, `NotReady` once heartbeats stop for longer than the timeout.
//!
//! A heartbeat is the base's whole report (labels, capacity, what it runs),
//! stored at `/bases/<name>` with its arrival time. Readiness is derived
//! when read, from that time and the controller's timeout, so a controller
//! restart never marks a base Ready on stale grounds. Nor NotReady: silence
//! counts only from when this controller process started (`up_since_ms`),
//! so bases are not declared dead — and their replicas moved — because the
//! controller itself was down; a base that stays silent after the restart
//! goes NotReady one timeout later.

use std::time::{Duration, UNIX_EPOCH};

use berth_api::{BaseHeartbeat, BaseStatus};
use serde::{Deserialize, Serialize};

use crate::resources::ResourceError;
use crate::rollout::now_ms;
use crate::store::Store;

/// Key prefix of bases.
pub const BASES: &str = "/bases/";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredBase {
    heartbeat: BaseHeartbeat,
    at_ms: u64,
}

/// Records a heartbeat. Returns whether it tells the controller anything
/// new — a base that was unknown or silent past `timeout`, or a change in
/// its labels, capacity, modules or failures (not just its load) — which is
/// when placement and rollouts need another look.
pub fn heartbeat(
    store: &impl Store,
    beat: BaseHeartbeat,
    timeout: Duration,
) -> Result<bool, ResourceError> {
    let key = format!("{BASES}{}", beat.name);
    let now = now_ms();
    let news = match store.get(&key)? {
        None => true,
        Some(entry) => match serde_json::from_slice::<StoredBase>(&entry.value) {
            Err(_) => true,
            Ok(before) => {
                let mut old = before.heartbeat;
                old.in_flight = beat.in_flight;
                old != beat || Duration::from_millis(now.saturating_sub(before.at_ms)) > timeout
            }
        },
    };
    let value = serde_json::to_vec(&StoredBase {
        heartbeat: beat,
        at_ms: now,
    })
    .expect("bases serialize");
    store.put(&key, &value)?;
    Ok(news)
}

/// Every base, with readiness judged against `timeout`, silence counted
/// from `up_since_ms` at the earliest (when this controller started).
pub fn list(
    store: &impl Store,
    timeout: Duration,
    up_since_ms: u64,
) -> Result<Vec<BaseStatus>, ResourceError> {
    let (entries, _) = store.list(BASES)?;
    let now = now_ms();
    entries
        .iter()
        .map(|entry| {
            let stored: StoredBase =
                serde_json::from_slice(&entry.value).map_err(|e| ResourceError::Corrupt {
                    key: entry.key.clone(),
                    reason: e.to_string(),
                })?;
            let silent = Duration::from_millis(now.saturating_sub(stored.at_ms.max(up_since_ms)));
            Ok(BaseStatus {
                last_heartbeat: humantime::format_rfc3339_millis(
                    UNIX_EPOCH + Duration::from_millis(stored.at_ms),
                )
                .to_string(),
                state: if silent <= timeout {
                    "Ready"
                } else {
                    "NotReady"
                }
                .into(),
                heartbeat: stored.heartbeat,
            })
        })
        .collect()
}
