//! Batched rollout: a version change moves through the replicas batch by
//! batch.
//!
//! Batch `b` of `n` lets the first `ceil(replicas / n) · b` placed bases (by
//! name) run the new version while the rest keep the old one. A batch is
//! done when every base it covers reports the new version in its heartbeat;
//! the next batch starts after `pauseBetween`, and, with `needConfirm`, only
//! after `berth rollout confirm`. `pause` holds it, `resume` releases it,
//! `undo` goes back to the last version that ran: during a rollout (going
//! or failed), at once to the version it started from, which the unmoved
//! bases still run; after one, to the version before, itself in batches.
//! A version applied over an unfinished rollout rolls from that rollout's
//! starting version ([`crate::resources::Resources::apply`]). The rollout
//! ends when the last batch is done.

use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use berth_api::{Assignment, BaseStatus, ModuleRef};

use crate::resources::StoredDeployment;

/// Replicas running the new version in batch `batch` of `batches`.
pub fn updated_count(replicas: u32, batches: u32, batch: u32) -> u32 {
    let per_batch = replicas.div_ceil(batches.max(1));
    (per_batch * batch).min(replicas)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Moves `d`'s rollout forward given the bases placed for it (`placed`, the
/// ones running the new version first), their reports, and what each base
/// is assigned (`assigned`: a failure counts only when reported for the
/// assignments in force, never for earlier ones). Returns whether anything
/// changed.
pub fn advance(
    d: &mut StoredDeployment,
    placed_new: &[String],
    bases: &[BaseStatus],
    assigned: &BTreeMap<String, Vec<Assignment>>,
    now: u64,
) -> bool {
    let spec = &d.manifest.spec;
    let Some(rollout) = d.rollout.as_mut() else {
        return false;
    };
    let wanted = ModuleRef::label(&spec.module.name, &spec.module.version);
    if rollout.failed.is_some() {
        return false;
    }
    // A base in this batch that cannot run the new version stops the rollout.
    if let Some((base, error)) = placed_new.iter().find_map(|name| {
        let base = bases.iter().find(|b| b.heartbeat.name == *name)?;
        let beat = &base.heartbeat;
        // A base that reports no revision (older) is taken at its word.
        let current = beat.revision.is_empty()
            || assigned
                .get(name)
                .is_some_and(|a| crate::scheduler::is_revision_of(&beat.revision, a));
        if !current {
            return None;
        }
        base.heartbeat
            .failures
            .get(&wanted)
            .map(|e| (name.clone(), e.clone()))
    }) {
        rollout.failed = Some(format!("base {base} cannot run {wanted}: {error}"));
        return true;
    }
    let done = placed_new.iter().all(|name| {
        bases
            .iter()
            .any(|b| b.heartbeat.name == *name && b.heartbeat.modules.contains(&wanted))
    });
    if !done {
        return false;
    }
    if rollout.batch >= spec.strategy.batches {
        d.rollout = None;
        return true;
    }
    let Some(done_at) = rollout.batch_done_ms else {
        rollout.batch_done_ms = Some(now);
        return true;
    };
    if rollout.paused || (spec.strategy.need_confirm && rollout.confirmed < rollout.batch) {
        return false;
    }
    let pause = spec
        .strategy
        .pause_between
        .as_deref()
        .and_then(|p| humantime::parse_duration(p).ok())
        .map_or(0, |p| p.as_millis() as u64);
    if now.saturating_sub(done_at) < pause {
        return false;
    }
    rollout.batch += 1;
    rollout.batch_done_ms = None;
    true
}

#[cfg(test)]
mod tests {
    use berth_api::BaseHeartbeat;
    use berth_api::manifest::{Manifest, parse};

    use super::*;
    use crate::resources::Rollout;

    #[test]
    fn only_a_failure_of_the_assignments_in_force_stops_a_rollout() {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: m }}\nspec:\n  module: {{ name: m, version: \"2\", artifact: \"file:/m.wasm\", digest: \"sha256:{}\" }}\n  replicas: 1\n",
            "ab".repeat(32)
        );
        let Manifest::ModuleDeployment(manifest) = parse(&text).unwrap();
        let mut from = manifest.spec.module.clone();
        from.version = "1".into();
        let mut d = StoredDeployment {
            manifest,
            generation: 2,
            history: Vec::new(),
            rollout: Some(Rollout::starting(from)),
            scale: None,
        };
        let assigned: BTreeMap<String, Vec<Assignment>> = [(
            "a".to_string(),
            vec![Assignment {
                name: "m".into(),
                version: "2".into(),
                artifact: "file:/m.wasm".into(),
                digest: d.manifest.spec.module.digest.clone(),
                route: None,
            }],
        )]
        .into();
        let base = |revision: String| BaseStatus {
            heartbeat: BaseHeartbeat {
                name: "a".into(),
                labels: BTreeMap::new(),
                capacity_modules: 10,
                ingress: String::new(),
                ops: String::new(),
                modules: vec!["m@1".into()],
                in_flight: 0,
                failures: [("m@2".to_string(), "cannot read /old/path".to_string())].into(),
                revision,
                capabilities: Vec::new(),
            },
            last_heartbeat: String::new(),
            state: berth_api::BaseState::Ready,
        };
        let placed = ["a".to_string()];
        // Reported for an earlier assignment (say, the old path): ignored.
        assert!(!advance(
            &mut d,
            &placed,
            &[base("0123".into())],
            &assigned,
            0
        ));
        assert_eq!(d.rollout.as_ref().unwrap().failed, None);
        // Reported for the assignments in force: the rollout fails.
        let now = crate::scheduler::revision(&assigned["a"]);
        assert!(advance(&mut d, &placed, &[base(now)], &assigned, 0));
        let failed = d.rollout.as_ref().unwrap().failed.as_deref().unwrap();
        assert!(
            failed.contains("base a cannot run m@2: cannot read /old/path"),
            "{failed}"
        );
    }

    /// `hello` 2.0.0 over 2 replicas in 2 batches, `pauseBetween: 5s`,
    /// rolling out from 1.0.0 and in its first batch.
    fn rolling() -> StoredDeployment {
        let digest = "ab".repeat(32);
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  \
             module: {{ name: hello, version: 2.0.0, artifact: \"file:/m.wasm\", digest: \"sha256:{digest}\" }}\n  \
             replicas: 2\n  strategy: {{ batches: 2, pauseBetween: 5s }}\n"
        );
        let Manifest::ModuleDeployment(manifest) = parse(&text).unwrap();
        let mut from = manifest.spec.module.clone();
        from.version = "1.0.0".into();
        StoredDeployment {
            manifest,
            generation: 2,
            history: Vec::new(),
            rollout: Some(Rollout {
                from,
                batch: 1,
                confirmed: 0,
                paused: false,
                batch_done_ms: None,
                failed: None,
            }),
            scale: None,
        }
    }

    fn base(name: &str, module: &str) -> BaseStatus {
        BaseStatus {
            heartbeat: BaseHeartbeat {
                name: name.into(),
                labels: BTreeMap::new(),
                capacity_modules: 10,
                ingress: String::new(),
                ops: String::new(),
                modules: vec![module.into()],
                in_flight: 0,
                failures: BTreeMap::new(),
                revision: String::new(),
                capabilities: Vec::new(),
            },
            last_heartbeat: String::new(),
            state: berth_api::BaseState::Ready,
        }
    }

    #[test]
    fn the_next_batch_waits_for_pause_between_and_for_resume() {
        let mut d = rolling();
        let batch = |d: &StoredDeployment| d.rollout.as_ref().map(|r| r.batch);
        let placed = ["a".to_string()];
        let bases = [base("a", "hello@2.0.0"), base("b", "hello@1.0.0")];
        // Batch 1 is seen done at t = 10 s: the pause starts.
        assert!(advance(&mut d, &placed, &bases, &BTreeMap::new(), 10_000));
        assert_eq!(d.rollout.as_ref().unwrap().batch_done_ms, Some(10_000));
        // Within `pauseBetween: 5s` the rollout stays on batch 1.
        assert!(!advance(&mut d, &placed, &bases, &BTreeMap::new(), 14_999));
        assert_eq!(batch(&d), Some(1));
        // Paused, it stays there after the 5 s too.
        d.rollout.as_mut().unwrap().paused = true;
        assert!(!advance(&mut d, &placed, &bases, &BTreeMap::new(), 20_000));
        assert_eq!(batch(&d), Some(1));
        // Resumed, batch 2 starts.
        d.rollout.as_mut().unwrap().paused = false;
        assert!(advance(&mut d, &placed, &bases, &BTreeMap::new(), 20_001));
        assert_eq!(batch(&d), Some(2));
        // Batch 2 done: the rollout ends.
        let both = ["a".to_string(), "b".to_string()];
        let bases = [base("a", "hello@2.0.0"), base("b", "hello@2.0.0")];
        assert!(advance(&mut d, &both, &bases, &BTreeMap::new(), 20_002));
        assert_eq!(batch(&d), None);
    }

    #[test]
    fn batches_cover_the_replicas() {
        assert_eq!(
            (1..=2).map(|b| updated_count(4, 2, b)).collect::<Vec<_>>(),
            [2, 4]
        );
        assert_eq!(
            (1..=3).map(|b| updated_count(5, 3, b)).collect::<Vec<_>>(),
            [2, 4, 5]
        );
        assert_eq!(updated_count(3, 1, 1), 3);
    }
}
