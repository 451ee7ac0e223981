//! Typed resources over the [`Store`]: ModuleDeployments as the controller
//! keeps them.
//!
//! Each deployment lives at `/deployments/<name>` as JSON with a
//! **generation** (bumped on every change of its spec, as Kubernetes does)
//! and the module versions it ran before (what `rollout undo` returns to).
//! Every change is a read-compare-and-swap loop on the entry's revision, so
//! two concurrent applies never lose one another's change.

use berth_api::manifest::{ModuleDeployment, ModuleRef};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Key prefix of deployments.
pub const DEPLOYMENTS: &str = "/deployments/";

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDeployment {
    /// The manifest as last applied.
    pub manifest: ModuleDeployment,
    /// Bumped on every change of the spec; 1 when created.
    pub generation: u64,
    /// Module versions it ran before, oldest first (for `rollout undo`).
    #[serde(default)]
    pub history: Vec<ModuleRef>,
    /// The version change in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Replicas the controller set itself (scaled to zero, activated,
    /// autoscaled), in force instead of the spec's count
    /// ([`crate::scaler`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<crate::scaler::Scale>,
}

/// A version change moving through its batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The version being replaced.
    pub from: ModuleRef,
    /// The batch now allowed to run `to` (1-based).
    pub batch: u32,
    /// Batches confirmed so far (with `needConfirm`).
    pub confirmed: u32,
    /// Held by `berth rollout pause`.
    pub paused: bool,
    /// When the current batch was seen complete (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_done_ms: Option<u64>,
    /// Why the rollout stopped: a base could not run the new version. The
    /// bases not yet moved keep the old version; `undo` or a fixed apply
    /// goes on from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Rollout {
    /// A rollout from `from`, at its first batch.
    pub fn starting(from: ModuleRef) -> Self {
        Self {
            from,
            batch: 1,
            confirmed: 0,
            paused: false,
            batch_done_ms: None,
            failed: None,
        }
    }
}

/// Whether two module references are the same code (name, version and
/// digest; the artifact's location may differ).
pub fn same_code(a: &ModuleRef, b: &ModuleRef) -> bool {
    a.name == b.name && a.version == b.version && a.digest == b.digest
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The deployment is new (generation 1).
    Created,
    /// The spec changed; the new generation.
    Updated(u64),
    /// The same spec was applied again.
    Unchanged(u64),
}

/// Why a resource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value is not what this controller writes.
    #[error(
        "the stored value of {key} is unreadable ({reason}); delete it and apply the manifest again"
    )]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        reason: String,
    },
}

/// ModuleDeployments over a [`Store`].
pub struct Resources<S> {
    store: S,
}

impl<S: Store> Resources<S> {
    /// Resources kept in `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The underlying store (for watches).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Creates or updates a deployment from its manifest. `ran` tells
    /// whether a stored deployment's current version runs on some base (the
    /// controller knows it from the heartbeats).
    ///
    /// A new version rolls out in batches from the last version that ran:
    /// the current one, or — when a rollout is still going or has failed —
    /// the version that rollout started from, so a failed generation never
    /// blocks a newer one and no base is sent back to it. A current version
    /// that never ran anywhere is simply replaced (there is nothing to roll
    /// from). Only versions that ran enter the history `rollout undo` uses.
    /// A moved artifact with the same name, version and digest is the same
    /// code: it starts no rollout, and restarts one that failed.
    pub fn apply(
        &self,
        manifest: ModuleDeployment,
        ran: impl Fn(&StoredDeployment) -> bool,
    ) -> Result<Applied, ResourceError> {
        let key = format!("{DEPLOYMENTS}{}", manifest.metadata.name);
        loop {
            let current = self.store.get(&key)?;
            let (next, applied, expected) = match &current {
                None => (
                    StoredDeployment {
                        manifest: manifest.clone(),
                        generation: 1,
                        history: Vec::new(),
                        rollout: None,
                        scale: None,
                    },
                    Applied::Created,
                    0,
                ),
                Some(entry) => {
                    let stored = decode(&key, &entry.value)?;
                    if stored.manifest == manifest {
                        return Ok(Applied::Unchanged(stored.generation));
                    }
                    let old = &stored.manifest.spec.module;
                    let new = &manifest.spec.module;
                    let mut history = stored.history.clone();
                    let mut rollout = stored.rollout.clone();
                    if same_code(old, new) {
                        // The same code from a fixed location: a rollout that
                        // failed (say, on the old path) starts over.
                        if let Some(r) = rollout.as_mut().filter(|r| r.failed.is_some()) {
                            *r = Rollout::starting(r.from.clone());
                        }
                    } else {
                        rollout = match &stored.rollout {
                            // Back to the version the rollout left: nothing to roll.
                            Some(r) if same_code(&r.from, new) => {
                                if history.last().is_some_and(|h| same_code(h, &r.from)) {
                                    history.pop();
                                }
                                None
                            }
                            Some(r) => Some(Rollout::starting(r.from.clone())),
                            None if ran(&stored) => {
                                history.push(old.clone());
                                Some(Rollout::starting(old.clone()))
                            }
                            None => None,
                        };
                    }
                    let generation = stored.generation + 1;
                    let scale = crate::scaler::carried_over(stored.scale.clone(), &manifest.spec);
                    (
                        StoredDeployment {
                            manifest: manifest.clone(),
                            generation,
                            history,
                            rollout,
                            scale,
                        },
                        Applied::Updated(generation),
                        entry.mod_revision,
                    )
                }
            };
            let value = serde_json::to_vec(&next).expect("deployments serialize");
            berth_runtime::failpoint::hit("apply:before-store");
            match self.store.compare_and_swap(&key, expected, &value) {
                Ok(_) => {
                    berth_runtime::failpoint::hit("apply:stored");
                    return Ok(applied);
                }
                // Someone else changed it between our read and write: read again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The deployment `name`.
    pub fn deployment(&self, name: &str) -> Result<Option<StoredDeployment>, ResourceError> {
        let key = format!("{DEPLOYMENTS}{name}");
        self.store
            .get(&key)?
            .map(|e| decode(&key, &e.value))
            .transpose()
    }

    /// Every deployment, by name.
    pub fn deployments(&self) -> Result<Vec<StoredDeployment>, ResourceError> {
        let (entries, _) = self.store.list(DEPLOYMENTS)?;
        entries.iter().map(|e| decode(&e.key, &e.value)).collect()
    }

    /// Changes the stored deployment `name` with `change` (a CAS loop);
    /// `None` if there is no such deployment.
    pub fn update(
        &self,
        name: &str,
        change: impl Fn(&mut StoredDeployment),
    ) -> Result<Option<StoredDeployment>, ResourceError> {
        let key = format!("{DEPLOYMENTS}{name}");
        loop {
            let Some(entry) = self.store.get(&key)? else {
                return Ok(None);
            };
            let mut stored = decode(&key, &entry.value)?;
            let before = stored.clone();
            change(&mut stored);
            if stored == before {
                return Ok(Some(stored));
            }
            let value = serde_json::to_vec(&stored).expect("deployments serialize");
            // Rollout progress and actions are the updates of a stored deployment.
            berth_runtime::failpoint::hit("rollout:before-store");
            match self
                .store
                .compare_and_swap(&key, entry.mod_revision, &value)
            {
                Ok(_) => {
                    berth_runtime::failpoint::hit("rollout:stored");
                    return Ok(Some(stored));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes the deployment `name`; false if there was none.
    pub fn delete_deployment(&self, name: &str) -> Result<bool, ResourceError> {
        Ok(self
            .store
            .delete(&format!("{DEPLOYMENTS}{name}"))?
            .is_some())
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<StoredDeployment, ResourceError> {
    serde_json::from_slice(bytes).map_err(|e| ResourceError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_api::manifest::{Manifest, parse};

    use super::*;
    use crate::store::RedbStore;

    fn manifest(replicas: u32, version: &str) -> ModuleDeployment {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: orders }}\nspec:\n  module: {{ name: orders, version: \"{version}\", artifact: \"https://example.invalid/o.wasm\", digest: \"sha256:{}\" }}\n  replicas: {replicas}\n",
            "ab".repeat(32)
        );
        let Manifest::ModuleDeployment(d) = parse(&text).unwrap();
        d
    }

    #[test]
    fn generations_count_spec_changes_and_history_keeps_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let r = Resources::new(RedbStore::open(&dir.path().join("c.redb")).unwrap());
        assert_eq!(
            r.apply(manifest(3, "1.0.0"), |_| true).unwrap(),
            Applied::Created
        );
        assert_eq!(
            r.apply(manifest(3, "1.0.0"), |_| true).unwrap(),
            Applied::Unchanged(1)
        );
        assert_eq!(
            r.apply(manifest(5, "1.0.0"), |_| true).unwrap(),
            Applied::Updated(2)
        );
        assert_eq!(
            r.apply(manifest(5, "2.0.0"), |_| true).unwrap(),
            Applied::Updated(3)
        );
        let stored = r.deployment("orders").unwrap().unwrap();
        assert_eq!(stored.generation, 3);
        assert_eq!(
            stored
                .history
                .iter()
                .map(|m| m.version.as_str())
                .collect::<Vec<_>>(),
            ["1.0.0"]
        );
        assert_eq!(r.deployments().unwrap().len(), 1);
        assert!(r.delete_deployment("orders").unwrap());
        assert!(!r.delete_deployment("orders").unwrap());
        assert_eq!(r.deployment("orders").unwrap(), None);
    }

    #[test]
    fn a_new_version_rolls_from_the_last_version_that_ran() {
        let dir = tempfile::tempdir().unwrap();
        let r = Resources::new(RedbStore::open(&dir.path().join("c.redb")).unwrap());
        let versions = |d: &StoredDeployment| {
            let from = d.rollout.as_ref().map(|r| r.from.version.clone());
            let history: Vec<String> = d.history.iter().map(|m| m.version.clone()).collect();
            (from, history)
        };
        let stored = || r.deployment("orders").unwrap().unwrap();
        r.apply(manifest(2, "1.0.0"), |_| true).unwrap();
        r.apply(manifest(2, "2.0.0"), |_| true).unwrap();
        assert_eq!(
            versions(&stored()),
            (Some("1.0.0".into()), vec!["1.0.0".into()])
        );
        // 2.0.0 fails: 3.0.0 rolls from 1.0.0, and 2.0.0 never enters the history.
        r.update("orders", |d| {
            d.rollout.as_mut().unwrap().failed = Some("boom".into())
        })
        .unwrap();
        r.apply(manifest(2, "3.0.0"), |_| true).unwrap();
        assert_eq!(
            versions(&stored()),
            (Some("1.0.0".into()), vec!["1.0.0".into()])
        );
        assert_eq!(stored().rollout.unwrap().failed, None);
        // 3.0.0 fails too, on a bad path: the same code from a fixed path starts over.
        r.update("orders", |d| {
            let rollout = d.rollout.as_mut().unwrap();
            (rollout.batch, rollout.failed) = (2, Some("boom".into()));
        })
        .unwrap();
        let mut fixed = manifest(2, "3.0.0");
        fixed.spec.module.artifact = "https://example.invalid/fixed.wasm".into();
        assert_eq!(r.apply(fixed, |_| true).unwrap(), Applied::Updated(4));
        let rollout = stored().rollout.unwrap();
        assert_eq!(
            (rollout.batch, rollout.failed, rollout.from.version.as_str()),
            (1, None, "1.0.0")
        );
        // Back to the version the rollout left: no rollout, and it is current again.
        r.apply(manifest(2, "1.0.0"), |_| true).unwrap();
        assert_eq!(versions(&stored()), (None, vec![]));
        // A version that never ran is replaced at once, and not remembered.
        r.apply(manifest(2, "4.0.0"), |_| false).unwrap();
        assert_eq!(versions(&stored()), (None, vec![]));
        assert_eq!(stored().manifest.spec.module.version, "4.0.0");
    }

    #[test]
    fn concurrent_applies_lose_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Resources::new(
            RedbStore::open(&dir.path().join("c.redb")).unwrap(),
        ));
        r.apply(manifest(1, "1.0.0"), |_| true).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        // Every apply is a distinct spec, so each must bump the generation.
                        r.apply(manifest(100 + t * 10 + i, "1.0.0"), |_| true)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(r.deployment("orders").unwrap().unwrap().generation, 41);
    }
}
