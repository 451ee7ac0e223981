//! Placement: which bases run which ModuleDeployment.
//!
//! Placement is a pure function of the desired state (deployments) and the
//! fleet (bases with their last heartbeats), recomputed whenever a base
//! heartbeats, so a base that goes NotReady simply stops being a candidate
//! and its replicas land elsewhere on the next heartbeats of the others.
//!
//! For each deployment, candidates are Ready bases whose labels include the
//! selector and that have room (capacity), at most one replica per base;
//! bases already running the module come first (so a steady fleet does not
//! reshuffle), then — **spread** (default) — the bases with the fewest
//! modules placed so far, or — **binPack** — the most, then by name.
//! Replicas that find no candidate are unschedulable.

use std::collections::BTreeMap;

use berth_api::{Assignment, BaseStatus};

use crate::resources::StoredDeployment;

/// The outcome of one placement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Base name → what it should run.
    pub by_base: BTreeMap<String, Vec<Assignment>>,
    /// Deployment name → replicas that found no base.
    pub unschedulable: BTreeMap<String, u32>,
    /// Deployment name → bases assigned its new version during a rollout.
    pub rolled: BTreeMap<String, Vec<String>>,
}

/// Places every deployment onto the Ready bases.
pub fn place(deployments: &[StoredDeployment], bases: &[BaseStatus]) -> Placement {
    let ready: Vec<&BaseStatus> = bases.iter().filter(|b| b.state == "Ready").collect();
    let mut placement = Placement::default();
    let mut load: BTreeMap<&str, u32> = ready
        .iter()
        .map(|b| (b.heartbeat.name.as_str(), 0))
        .collect();
    let mut sorted: Vec<&StoredDeployment> = deployments.iter().collect();
    sorted.sort_by(|a, b| a.manifest.metadata.name.cmp(&b.manifest.metadata.name));
    for d in sorted {
        let spec = &d.manifest.spec;
        let running = |b: &BaseStatus| {
            b.heartbeat
                .modules
                .iter()
                .any(|m| m.split('@').next() == Some(spec.module.name.as_str()))
        };
        let mut candidates: Vec<&BaseStatus> = ready
            .iter()
            .copied()
            .filter(|b| {
                spec.base_selector
                    .iter()
                    .all(|(k, v)| b.heartbeat.labels.get(k) == Some(v))
            })
            .filter(|b| load[b.heartbeat.name.as_str()] < b.heartbeat.capacity_modules)
            .collect();
        let binpack = spec.placement == berth_api::manifest::PlacementPolicy::BinPack;
        candidates.sort_by_key(|b| {
            let load = load[b.heartbeat.name.as_str()];
            // Spread: fewest placed first; bin-pack: most placed first.
            let order = if binpack { u32::MAX - load } else { load };
            (!running(b), order, b.heartbeat.name.clone())
        });
        let mut chosen: Vec<&BaseStatus> = candidates
            .iter()
            .take(spec.replicas as usize)
            .copied()
            .collect();
        // During a rollout the first bases by name run the new version.
        chosen.sort_by(|a, b| a.heartbeat.name.cmp(&b.heartbeat.name));
        let updated = match &d.rollout {
            // A failed rollout moves no further, and its failed batch goes
            // back to the old version.
            Some(r) if r.failed.is_some() => {
                crate::rollout::updated_count(spec.replicas, spec.strategy.batches, r.batch - 1)
                    as usize
            }
            Some(r) => crate::rollout::updated_count(spec.replicas, spec.strategy.batches, r.batch)
                as usize,
            None => chosen.len(),
        };
        let mut placed = 0;
        for (i, base) in chosen.iter().enumerate() {
            *load
                .get_mut(base.heartbeat.name.as_str())
                .expect("a ready base") += 1;
            let module = match &d.rollout {
                Some(r) if i >= updated => &r.from,
                _ => &spec.module,
            };
            if d.rollout.is_some() && i < updated {
                placement
                    .rolled
                    .entry(d.manifest.metadata.name.clone())
                    .or_default()
                    .push(base.heartbeat.name.clone());
            }
            placement
                .by_base
                .entry(base.heartbeat.name.clone())
                .or_default()
                .push(Assignment {
                    name: module.name.clone(),
                    version: module.version.clone(),
                    artifact: module.artifact.clone(),
                    digest: module.digest.clone(),
                    route: spec.route.clone(),
                });
            placed += 1;
        }
        if placed < spec.replicas {
            placement
                .unschedulable
                .insert(d.manifest.metadata.name.clone(), spec.replicas - placed);
        }
    }
    placement
}

/// Why replicas of `d` found no base, in words, for its events.
pub fn why_unschedulable(d: &StoredDeployment, bases: &[BaseStatus]) -> String {
    let spec = &d.manifest.spec;
    let matching = bases
        .iter()
        .filter(|b| {
            b.state == "Ready"
                && spec
                    .base_selector
                    .iter()
                    .all(|(k, v)| b.heartbeat.labels.get(k) == Some(v))
        })
        .count();
    let selector = if spec.base_selector.is_empty() {
        "any labels".to_string()
    } else {
        spec.base_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    if matching == 0 {
        format!(
            "no Ready base matches {selector}; start one with `berth base --controller … --labels {selector}`"
        )
    } else {
        format!(
            "{matching} Ready base(s) match {selector}, each takes at most one replica and only while under its --capacity-modules; add bases or lower spec.replicas"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use berth_api::manifest::{Manifest, parse};
    use berth_api::{BaseHeartbeat, BaseStatus};

    use super::*;

    fn deployment(name: &str, replicas: u32, placement: &str) -> StoredDeployment {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n  module: {{ name: {name}, version: \"1\", artifact: \"file:/m.wasm\", digest: \"sha256:{}\" }}\n  replicas: {replicas}\n  placement: {placement}\n",
            "ab".repeat(32)
        );
        let Manifest::ModuleDeployment(manifest) = parse(&text).unwrap();
        StoredDeployment {
            manifest,
            generation: 1,
            history: Vec::new(),
            rollout: None,
        }
    }

    fn base(name: &str, capacity: u32) -> BaseStatus {
        BaseStatus {
            heartbeat: BaseHeartbeat {
                name: name.into(),
                labels: BTreeMap::new(),
                capacity_modules: capacity,
                ingress: String::new(),
                ops: String::new(),
                modules: Vec::new(),
                in_flight: 0,
                failures: BTreeMap::new(),
            },
            last_heartbeat: String::new(),
            state: "Ready".into(),
        }
    }

    fn per_base(p: &Placement) -> Vec<usize> {
        p.by_base.values().map(Vec::len).collect()
    }

    #[test]
    fn spread_evens_out_and_binpack_fills_up_within_capacity() {
        let bases = [base("a", 3), base("b", 3), base("c", 3)];
        let spread: Vec<_> = (0..3)
            .map(|i| deployment(&format!("m{i}"), 1, "spread"))
            .collect();
        assert_eq!(per_base(&place(&spread, &bases)), [1, 1, 1]);
        let packed: Vec<_> = (0..3)
            .map(|i| deployment(&format!("m{i}"), 1, "binPack"))
            .collect();
        assert_eq!(per_base(&place(&packed, &bases)), [3]);
        // Capacity and one-per-base bound a deployment; the rest is unschedulable.
        let big = [deployment("big", 5, "binPack")];
        let p = place(&big, &[base("a", 1), base("b", 1)]);
        assert_eq!((per_base(&p), p.unschedulable["big"]), (vec![1, 1], 3));
    }

    #[test]
    fn bases_running_a_module_keep_it_when_a_base_joins() {
        let running = |name: &str| {
            let mut b = base(name, 3);
            b.heartbeat.modules = vec!["m@1".into()];
            b
        };
        // `a` joins empty; it sorts first and has the least load, so only
        // preferring the bases already running `m` keeps it where it is.
        let bases = [base("a", 3), running("b"), running("c")];
        for policy in ["spread", "binPack"] {
            let p = place(&[deployment("m", 2, policy)], &bases);
            assert_eq!(
                p.by_base.keys().collect::<Vec<_>>(),
                ["b", "c"],
                "{policy}: replicas moved to the new base"
            );
        }
    }
}
