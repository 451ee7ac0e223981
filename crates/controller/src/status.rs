//! Where a deployment stands: replica counts, each base's replica, and
//! conditions, derived from the placement and the bases' last heartbeats.
//!
//! Status is computed when read rather than stored: it is a function of
//! state the controller already keeps (deployments, heartbeats), so it can
//! never disagree with them, and a restarted controller shows the truth
//! from its first answer. What happened over time is in the events
//! ([`crate::events`]).

use berth_api::{BaseState, BaseStatus, ModuleRef};
use serde::Serialize;

use crate::resources::StoredDeployment;
use crate::scheduler::Placement;

/// Replica counts, per-base state and conditions of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Replicas asked for.
    pub desired: u32,
    /// Placed replicas whose base reports the version assigned to it.
    pub ready: u32,
    /// Ready bases reporting the spec's (newest) version.
    pub updated: u32,
    /// Replicas no base could take (selector, capacity, Ready bases).
    pub unschedulable: u32,
    /// Per placed base: its name, the version assigned, and its state.
    pub bases: Vec<BaseReplica>,
    /// Available, Progressing and ReplicaFailure, as Kubernetes names them.
    pub conditions: Vec<Condition>,
    /// No replica because it was idle (`spec.scaleToZero`, or autoscale
    /// down to `minReplicas: 0`): not a failure; the next request through
    /// a gateway activates it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scaled_to_zero: bool,
    /// The load the gateways report for it, summed over their fresh
    /// reports; absent when none reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::load::Load>,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseReplica {
    /// The base.
    pub base: String,
    /// The version assigned to it.
    pub version: String,
    /// Whether it reports running that version.
    pub running: bool,
    /// Why it cannot, when the base reported a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One condition: a yes/no fact with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Available`, `Progressing` or `ReplicaFailure`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// A short CamelCase cause.
    pub reason: &'static str,
    /// The cause in words.
    pub message: String,
}

/// The status of `d` under `placement`, given the bases' reports.
pub fn of(d: &StoredDeployment, placement: &Placement, bases: &[BaseStatus]) -> DeploymentStatus {
    let name = &d.manifest.metadata.name;
    let spec = &d.manifest.spec;
    let mut replicas = Vec::new();
    for (base, assignments) in &placement.by_base {
        for a in assignments.iter().filter(|a| a.name == spec.module.name) {
            let label = ModuleRef::label(&a.name, &a.version);
            let report = bases.iter().find(|b| b.heartbeat.name == *base);
            // A failure reported for earlier assignments (say, the same
            // version from a path since fixed) is not this replica's.
            let current = report.is_some_and(|b| {
                b.heartbeat.revision.is_empty()
                    || crate::scheduler::is_revision_of(&b.heartbeat.revision, assignments)
            });
            replicas.push(BaseReplica {
                base: base.clone(),
                version: a.version.clone(),
                running: report.is_some_and(|b| b.heartbeat.modules.contains(&label)),
                error: report
                    .filter(|_| current)
                    .and_then(|b| b.heartbeat.failures.get(&label).cloned()),
            });
        }
    }
    let newest = ModuleRef::label(&spec.module.name, &spec.module.version);
    let ready = replicas.iter().filter(|r| r.running).count() as u32;
    let unschedulable = placement.unschedulable.get(name).copied().unwrap_or(0);
    let desired = placement.desired.get(name).copied().unwrap_or(0);
    let mut status = DeploymentStatus {
        desired,
        ready,
        updated: bases
            .iter()
            .filter(|b| b.state == BaseState::Ready && b.heartbeat.modules.contains(&newest))
            .count() as u32,
        unschedulable,
        bases: replicas,
        conditions: Vec::new(),
        scaled_to_zero: desired == 0 && crate::scaler::idle(d),
        load: None,
    };
    status.conditions = conditions(d, &status);
    status
}

fn conditions(d: &StoredDeployment, s: &DeploymentStatus) -> Vec<Condition> {
    let spec = &d.manifest.spec;
    let available = if s.scaled_to_zero {
        Condition {
            kind: "Available",
            status: "True",
            reason: "ScaledToZero",
            message: "scaled to zero while idle; the next request through a gateway brings a replica back".into(),
        }
    } else if s.ready >= s.desired {
        Condition {
            kind: "Available",
            status: "True",
            reason: "ReplicasReady",
            message: format!("{} of {} replicas ready", s.ready, s.desired),
        }
    } else {
        Condition {
            kind: "Available",
            status: "False",
            reason: "ReplicasNotReady",
            message: format!("{} of {} replicas ready", s.ready, s.desired),
        }
    };
    let progressing = match &d.rollout {
        None => Condition {
            kind: "Progressing",
            status: "False",
            reason: "Complete",
            message: format!("every replica is assigned {}", spec.module.version),
        },
        Some(r) => {
            let (status, reason, message) = if let Some(why) = &r.failed {
                ("False", "RolloutFailed", why.clone())
            } else if r.paused {
                ("True", "Paused", format!("held at batch {}", r.batch))
            } else if r.batch_done_ms.is_some()
                && spec.strategy.need_confirm
                && r.confirmed < r.batch
            {
                (
                    "True",
                    "WaitingForConfirm",
                    format!(
                        "batch {} of {} done; waiting for `berth rollout confirm {}`",
                        r.batch, spec.strategy.batches, d.manifest.metadata.name
                    ),
                )
            } else {
                (
                    "True",
                    "BatchInProgress",
                    format!(
                        "batch {} of {}: {} → {}",
                        r.batch, spec.strategy.batches, r.from.version, spec.module.version
                    ),
                )
            };
            Condition {
                kind: "Progressing",
                status,
                reason,
                message,
            }
        }
    };
    let failing: Vec<String> = s
        .bases
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.base, r.error.as_ref()?)))
        .collect();
    let failure = if s.unschedulable > 0 {
        Condition {
            kind: "ReplicaFailure",
            status: "True",
            reason: "Unschedulable",
            message: format!("{} replica(s) found no base", s.unschedulable),
        }
    } else if !failing.is_empty() {
        Condition {
            kind: "ReplicaFailure",
            status: "True",
            reason: "InstallFailed",
            message: failing.join("; "),
        }
    } else {
        Condition {
            kind: "ReplicaFailure",
            status: "False",
            reason: "None",
            message: "every replica is placed and no base reports a failure".into(),
        }
    };
    vec![available, progressing, failure]
}
