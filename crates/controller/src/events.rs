//! Events: what happened to a deployment, newest last, as `berth describe`
//! shows them (Kubernetes' events, kept per deployment).
//!
//! Each deployment has one bounded list at `/events/<name>` (the last
//! [`KEPT`]), written by the API (applied, confirmed, undone) and by the
//! reconciler (scheduled, running, unschedulable, batch done, failed). An
//! event identical to the newest one (same reason and message) is folded
//! into it — its count goes up and its time moves — so a condition that
//! holds for an hour is one line, not thousands. Events are kept in the
//! store, so they survive a controller restart, and go with the deployment
//! when it is deleted.

use serde::{Deserialize, Serialize};

use crate::resources::ResourceError;
use crate::store::{Store, StoreError};

/// Key prefix of event lists.
pub const EVENTS: &str = "/events/";
/// Events kept per deployment.
pub const KEPT: usize = 50;

/// Whether an event is routine or needs a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Things going as asked.
    Normal,
    /// Something an operator should look at.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEvent {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// A short CamelCase cause (`Scheduled`, `Unschedulable`, …).
    pub reason: String,
    /// What happened, naming the base and version.
    pub message: String,
    /// How many times it happened in a row.
    pub count: u32,
    /// When it first happened (ms since the Unix epoch).
    pub first_ms: u64,
    /// When it last happened (ms since the Unix epoch).
    pub last_ms: u64,
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Normal or Warning.
    pub kind: EventType,
    /// A short CamelCase cause.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

impl NewEvent {
    /// A routine event.
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: EventType::Normal,
            reason,
            message: message.into(),
        }
    }

    /// An event that needs a look.
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: EventType::Warning,
            reason,
            message: message.into(),
        }
    }
}

/// The events of deployment `name`, oldest first.
pub fn list(store: &impl Store, name: &str) -> Result<Vec<DeploymentEvent>, ResourceError> {
    let key = format!("{EVENTS}{name}");
    Ok(match store.get(&key)? {
        Some(entry) => decode(&key, &entry.value)?,
        None => Vec::new(),
    })
}

/// Appends `new` to the events of deployment `name` at time `now_ms`.
pub fn record(
    store: &impl Store,
    name: &str,
    new: &[NewEvent],
    now_ms: u64,
) -> Result<(), ResourceError> {
    if new.is_empty() {
        return Ok(());
    }
    let key = format!("{EVENTS}{name}");
    loop {
        let current = store.get(&key)?;
        let (mut events, expected) = match &current {
            Some(entry) => (decode(&key, &entry.value)?, entry.mod_revision),
            None => (Vec::new(), 0),
        };
        for event in new {
            match events.last_mut() {
                Some(last) if last.reason == event.reason && last.message == event.message => {
                    last.count += 1;
                    last.last_ms = now_ms;
                }
                _ => events.push(DeploymentEvent {
                    kind: event.kind,
                    reason: event.reason.into(),
                    message: event.message.clone(),
                    count: 1,
                    first_ms: now_ms,
                    last_ms: now_ms,
                }),
            }
        }
        let excess = events.len().saturating_sub(KEPT);
        events.drain(..excess);
        let value = serde_json::to_vec(&events).expect("events serialize");
        match store.compare_and_swap(&key, expected, &value) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Forgets the events of deployment `name`.
pub fn forget(store: &impl Store, name: &str) -> Result<(), ResourceError> {
    store.delete(&format!("{EVENTS}{name}"))?;
    Ok(())
}

fn decode(key: &str, bytes: &[u8]) -> Result<Vec<DeploymentEvent>, ResourceError> {
    serde_json::from_slice(bytes).map_err(|e| ResourceError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;

    #[test]
    fn repeats_fold_and_the_list_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("c.redb")).unwrap();
        let warn = NewEvent::warning("Unschedulable", "1 replica: no Ready base");
        record(&store, "orders", std::slice::from_ref(&warn), 1).unwrap();
        record(&store, "orders", std::slice::from_ref(&warn), 2).unwrap();
        let events = list(&store, "orders").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].count, events[0].first_ms, events[0].last_ms),
            (2, 1, 2)
        );
        let many: Vec<NewEvent> = (0..KEPT + 10)
            .map(|i| NewEvent::normal("Scheduled", format!("base b{i}")))
            .collect();
        record(&store, "orders", &many, 3).unwrap();
        let events = list(&store, "orders").unwrap();
        assert_eq!(events.len(), KEPT);
        assert_eq!(
            events.last().unwrap().message,
            format!("base b{}", KEPT + 9)
        );
        forget(&store, "orders").unwrap();
        assert!(list(&store, "orders").unwrap().is_empty());
    }
}
