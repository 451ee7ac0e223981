//! The endpoint table gateways route by, and the drain that lets them stop
//! sending a replica new requests before it is removed.
//!
//! The table is a pure function of the deployments, the placement and the
//! bases' last heartbeats: per deployment its route (the module's route on
//! every base, `/<module>` when the manifest names none) and rules, and per
//! replica the base's ingress address, the version assigned, the versions
//! the base reports running, whether it is ready and whether it drains,
//! and the base's labels (traffic cells select on them).
//!
//! **Drain**: when a pass takes a replica off a base that is still Ready
//! (scale-in, a reschedule, a delete), the [`Drains`] keep it assigned for
//! the grace period and mark it `draining` in the table. Gateways watching
//! the table stop choosing it within a round trip; only when the grace
//! period is over is it unassigned, and the base uninstalls it (requests
//! already running there finish on the version they started on). A replica
//! of a base that went NotReady is not drained: there is nothing left to
//! finish. A version change on a base is not a removal: the base installs
//! the new version beside the old one and switches atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use berth_api::endpoints::{DeploymentEndpoints, Endpoint, EndpointTable};
use berth_api::{Assignment, BaseState, BaseStatus, ModuleRef, Route};

use crate::resources::StoredDeployment;
use crate::scheduler::Placement;

/// The default drain grace period.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Replicas being drained: (base, module) → until when, and what stays
/// assigned meanwhile.
#[derive(Debug, Default)]
pub struct Drains {
    draining: BTreeMap<(String, String), (Instant, Assignment)>,
}

impl Drains {
    /// What stays assigned to each base while it drains, given the
    /// previous pass's assignments (`previous`, drained ones included), the
    /// new `placement` and the `bases`; starts a drain of `grace` for each
    /// replica the placement took off a Ready base.
    pub fn update(
        &mut self,
        previous: &BTreeMap<String, Vec<Assignment>>,
        placement: &Placement,
        bases: &[BaseStatus],
        grace: Duration,
        now: Instant,
    ) -> BTreeMap<String, Vec<Assignment>> {
        let mut out: BTreeMap<String, Vec<Assignment>> = BTreeMap::new();
        if grace.is_zero() {
            self.draining.clear();
            return out;
        }
        let ready = |base: &str| {
            bases
                .iter()
                .any(|b| b.heartbeat.name == base && b.state == BaseState::Ready)
        };
        let mut seen = BTreeSet::new();
        for (base, assigned) in previous {
            if !ready(base) {
                continue;
            }
            let placed = placement.by_base.get(base);
            for a in assigned {
                if placed.is_some_and(|now| now.iter().any(|n| n.name == a.name)) {
                    continue;
                }
                let key = (base.clone(), a.name.clone());
                let (until, kept) = self
                    .draining
                    .entry(key.clone())
                    .or_insert_with(|| (now + grace, a.clone()));
                seen.insert(key);
                if now < *until {
                    out.entry(base.clone()).or_default().push(kept.clone());
                }
            }
        }
        // Over (not in the previous assignments any more) or re-placed.
        self.draining.retain(|key, _| seen.contains(key));
        out
    }
}

/// `placement`'s assignments with the `draining` ones added, per base.
pub fn merged(
    placement: &Placement,
    draining: &BTreeMap<String, Vec<Assignment>>,
) -> BTreeMap<String, Vec<Assignment>> {
    let mut all = placement.by_base.clone();
    for (base, kept) in draining {
        all.entry(base.clone())
            .or_default()
            .extend(kept.iter().cloned());
    }
    all
}

/// The endpoint table of `deployments` under `placement` (plus the
/// `draining` replicas), given the `bases`' reports.
pub fn table(
    deployments: &[StoredDeployment],
    placement: &Placement,
    draining: &BTreeMap<String, Vec<Assignment>>,
    bases: &[BaseStatus],
) -> EndpointTable {
    let mut out = Vec::new();
    let mut sorted: Vec<&StoredDeployment> = deployments.iter().collect();
    sorted.sort_by(|a, b| a.manifest.metadata.name.cmp(&b.manifest.metadata.name));
    for d in sorted {
        let spec = &d.manifest.spec;
        let module = &spec.module.name;
        let mut replicas = Vec::new();
        let groups = [(&placement.by_base, false), (draining, true)];
        for (by_base, is_draining) in groups {
            for (base, assigned) in by_base {
                for a in assigned.iter().filter(|a| a.name == *module) {
                    let Some(report) = bases.iter().find(|b| b.heartbeat.name == *base) else {
                        continue;
                    };
                    let versions: Vec<String> = report
                        .heartbeat
                        .modules
                        .iter()
                        .filter_map(|m| ModuleRef::split(m))
                        .filter(|(name, _)| name == module)
                        .map(|(_, version)| version.to_string())
                        .collect();
                    replicas.push(Endpoint {
                        base: base.clone(),
                        address: report.heartbeat.ingress.clone(),
                        version: a.version.clone(),
                        ready: report.state == BaseState::Ready && !versions.is_empty(),
                        versions,
                        draining: is_draining,
                        labels: report.heartbeat.labels.clone(),
                    });
                }
            }
        }
        replicas.sort_by(|a, b| a.base.cmp(&b.base));
        out.push(DeploymentEndpoints {
            name: d.manifest.metadata.name.clone(),
            module: module.clone(),
            route: spec.route.clone().unwrap_or_else(|| Route {
                host: None,
                path_prefix: Some(format!("/{module}")),
            }),
            rules: spec.rules.clone(),
            replicas,
        });
    }
    let mut table = EndpointTable {
        deployments: out,
        revision: String::new(),
    };
    table.revision = revision(&table);
    table
}

/// A short stable name of a table's content.
fn revision(table: &EndpointTable) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&table.deployments)
        .expect("endpoints serialize")
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::BaseHeartbeat;

    fn base(name: &str, ready: bool) -> BaseStatus {
        BaseStatus {
            heartbeat: BaseHeartbeat {
                name: name.into(),
                labels: Default::default(),
                capacity_modules: 10,
                ingress: format!("127.0.0.1:{}", name.len()),
                ops: "127.0.0.1:2".into(),
                modules: vec!["hello@1".into()],
                in_flight: 0,
                failures: Default::default(),
                revision: String::new(),
                capabilities: Vec::new(),
            },
            last_heartbeat: String::new(),
            state: if ready {
                BaseState::Ready
            } else {
                BaseState::NotReady
            },
        }
    }

    fn hello() -> Assignment {
        Assignment {
            name: "hello".into(),
            version: "1".into(),
            artifact: "file:/x".into(),
            digest: "sha256:0".into(),
            route: None,
        }
    }

    #[test]
    fn a_replica_taken_off_a_ready_base_drains_for_the_grace_period_only() {
        let bases = [base("a", true), base("bb", true), base("ccc", false)];
        let previous: BTreeMap<String, Vec<Assignment>> = ["a", "bb", "ccc"]
            .iter()
            .map(|b| (b.to_string(), vec![hello()]))
            .collect();
        let mut placement = Placement::default();
        placement.by_base.insert("a".into(), vec![hello()]);
        let mut drains = Drains::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let kept = drains.update(&previous, &placement, &bases, grace, t0);
        // bb drains; ccc is NotReady (nothing to finish); a keeps its replica.
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["bb"]);
        let next = merged(&placement, &kept);
        let again = drains.update(&next, &placement, &bases, grace, t0 + grace / 2);
        assert_eq!(again, kept, "the drain holds for its grace period");
        let over = drains.update(&next, &placement, &bases, grace, t0 + grace);
        assert!(over.is_empty(), "then the replica is unassigned");
        // The pass after does not start it again.
        let after = drains.update(
            &placement.by_base,
            &placement,
            &bases,
            grace,
            t0 + grace * 2,
        );
        assert!(after.is_empty() && drains.draining.is_empty());
        // No grace: nothing drains.
        assert!(
            drains
                .update(&previous, &placement, &bases, Duration::ZERO, t0)
                .is_empty()
        );
    }

    fn stored(spec: &str) -> StoredDeployment {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: hello }}\nspec:\n  module: {{ name: hello, version: \"1\", artifact: \"file:/x\", digest: \"sha256:{}\" }}\n{spec}",
            "ab".repeat(32)
        );
        let berth_api::manifest::Manifest::ModuleDeployment(manifest) =
            berth_api::manifest::parse(&text).unwrap();
        StoredDeployment {
            manifest,
            generation: 1,
            history: Vec::new(),
            rollout: None,
            scale: None,
        }
    }

    /// What drains when `d` goes from `before` to `after` on `bases`.
    fn drained(
        before: &StoredDeployment,
        after: &StoredDeployment,
        bases_before: &[BaseStatus],
        bases_after: &[BaseStatus],
    ) -> Vec<String> {
        let previous = crate::scheduler::place(std::slice::from_ref(before), bases_before);
        let now = crate::scheduler::place(std::slice::from_ref(after), bases_after);
        assert!(!previous.by_base.is_empty(), "placed before");
        let mut drains = Drains::default();
        let kept = drains.update(
            &previous.by_base,
            &now,
            bases_after,
            Duration::from_secs(2),
            Instant::now(),
        );
        kept.keys().cloned().collect()
    }

    #[test]
    fn the_controllers_own_removals_drain_too() {
        use crate::scaler::{Scale, ScaleReason};
        let bases = [base("a", true), base("bb", true), base("ccc", true)];
        let scale = |replicas, reason| {
            Some(Scale {
                replicas,
                reason,
                at_ms: 0,
                why: String::new(),
            })
        };
        // Scaled to zero: every replica drains.
        let zero = stored("  replicas: 2\n  scaleToZero: { idleAfter: 1m }\n");
        let mut idle = zero.clone();
        idle.scale = scale(0, ScaleReason::Idle);
        assert_eq!(drained(&zero, &idle, &bases, &bases), ["a", "bb"]);
        // An autoscale scale-in: the replica removed drains.
        let mut three = stored(
            "  autoscale: { minReplicas: 1, maxReplicas: 3, target: { concurrency: 10 } }\n",
        );
        three.scale = scale(3, ScaleReason::Autoscaled);
        let mut two = three.clone();
        two.scale = scale(2, ScaleReason::Autoscaled);
        assert_eq!(drained(&three, &two, &bases, &bases).len(), 1);
        // A peer deployment whose base leaves its selector (still Ready).
        let peer = stored("  replicas: all\n  baseSelector: { group: gold }\n");
        let gold = |b: &BaseStatus, group: &str| {
            let mut b = b.clone();
            b.heartbeat.labels = [("group".to_string(), group.to_string())].into();
            b
        };
        let before: Vec<BaseStatus> = bases.iter().map(|b| gold(b, "gold")).collect();
        let mut after = before.clone();
        after[1] = gold(&bases[1], "silver");
        assert_eq!(drained(&peer, &peer, &before, &after), ["bb"]);
    }
}
