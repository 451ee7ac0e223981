//! Bases as the controller sees them: registered and kept alive by their
//! heartbeats, `NotReady` once heartbeats stop for longer than the timeout.
//!
//! A heartbeat is the base's whole report (labels, capacity, what it runs),
//! stored at `/bases/<name>` with its arrival time. Readiness is derived
//! when read, from that time and the controller's timeout, so a controller
//! restart never marks a base Ready or NotReady on stale grounds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::{BaseHeartbeat, BaseStatus};
use serde::{Deserialize, Serialize};

use crate::resources::ResourceError;
use crate::store::Store;

/// Key prefix of bases.
pub const BASES: &str = "/bases/";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredBase {
    heartbeat: BaseHeartbeat,
    at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records a heartbeat.
pub fn heartbeat(store: &impl Store, beat: BaseHeartbeat) -> Result<(), ResourceError> {
    let key = format!("{BASES}{}", beat.name);
    let value = serde_json::to_vec(&StoredBase {
        heartbeat: beat,
        at_ms: now_ms(),
    })
    .expect("bases serialize");
    store.put(&key, &value)?;
    Ok(())
}

/// Every base, with readiness judged against `timeout`.
pub fn list(store: &impl Store, timeout: Duration) -> Result<Vec<BaseStatus>, ResourceError> {
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
            let silent = Duration::from_millis(now.saturating_sub(stored.at_ms));
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
