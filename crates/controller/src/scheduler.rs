//! Placement: which bases run which ModuleDeployment.
//!
//! Placement is a pure function of the desired state (deployments) and the
//! fleet (bases with their last heartbeats), recomputed whenever a base
//! heartbeats, so a base that goes NotReady simply stops being a candidate
//! and its replicas land elsewhere on the next heartbeats of the others.
//!
//! Policy (**spread**): for each deployment, candidates are Ready bases whose
//! labels include the selector and that have room (capacity), at most one
//! replica per base; bases already running the module come first (so a
//! steady fleet does not reshuffle), then the bases with the fewest modules
//! placed so far, then by name. Replicas that find no candidate are
//! unschedulable.

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
        candidates.sort_by_key(|b| {
            (
                !running(b),
                load[b.heartbeat.name.as_str()],
                b.heartbeat.name.clone(),
            )
        });
        let chosen = candidates.iter().take(spec.replicas as usize);
        let mut placed = 0;
        for base in chosen {
            *load
                .get_mut(base.heartbeat.name.as_str())
                .expect("a ready base") += 1;
            placement
                .by_base
                .entry(base.heartbeat.name.clone())
                .or_default()
                .push(Assignment {
                    name: spec.module.name.clone(),
                    version: spec.module.version.clone(),
                    artifact: spec.module.artifact.clone(),
                    digest: spec.module.digest.clone(),
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
