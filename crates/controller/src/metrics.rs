//! Prometheus metrics of the controller, served as text at `GET /metrics`.
//!
//! State gauges (deployments, replicas by state, rollouts by state, bases
//! by readiness) are set from scratch at the end of every reconcile, so a
//! deleted deployment's series disappear with it; counters (heartbeats,
//! scheduler decisions, events) and the reconcile duration accumulate for
//! the life of the process, as Prometheus expects.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `deployment`, `state` (desired, ready, updated, unschedulable).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    /// The deployment.
    pub deployment: String,
    /// The replica state.
    pub state: &'static str,
}

/// `state` of a base, a rollout, or `decision` / `type` of a counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The state or kind.
    pub state: &'static str,
}

/// Every metric family of the controller.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// ModuleDeployments stored.
    pub deployments: Gauge,
    /// Replicas per deployment by state.
    pub replicas: Family<ReplicaLabels, Gauge>,
    /// Rollouts by state: progressing, waiting_confirm, paused, failed.
    pub rollouts: Family<StateLabels, Gauge>,
    /// Bases by readiness: Ready, NotReady.
    pub bases: Family<StateLabels, Gauge>,
    /// Heartbeats received.
    pub heartbeats: Counter,
    /// Placement and scaling decisions: scheduled, descheduled,
    /// unschedulable, scaled_to_zero, activated, restored, autoscaled.
    pub decisions: Family<StateLabels, Counter>,
    /// Events recorded, by type (Normal, Warning).
    pub events: Family<StateLabels, Counter>,
    /// How long one reconcile (placement, rollouts, events) took.
    pub reconcile_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::default()),
            deployments: Gauge::default(),
            replicas: Family::default(),
            rollouts: Family::default(),
            bases: Family::default(),
            heartbeats: Counter::default(),
            decisions: Family::default(),
            events: Family::default(),
            // 50 µs … ~1.6 s.
            reconcile_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        };
        {
            let mut r = m.registry.lock().expect("metrics registry");
            let r = r.sub_registry_with_prefix("berth_controller");
            r.register(
                "deployments",
                "ModuleDeployments stored",
                m.deployments.clone(),
            );
            r.register(
                "replicas",
                "Replicas of each deployment by state (desired, ready, updated, unschedulable)",
                m.replicas.clone(),
            );
            r.register(
                "rollouts",
                "Rollouts in progress by state (progressing, waiting_confirm, paused, failed)",
                m.rollouts.clone(),
            );
            r.register(
                "bases",
                "Registered bases by state (Ready, NotReady)",
                m.bases.clone(),
            );
            r.register(
                "heartbeats",
                "Base heartbeats received",
                m.heartbeats.clone(),
            );
            r.register(
                "scheduler_decisions",
                "Placement and scaling decisions (scheduled, descheduled, unschedulable, scaled_to_zero, activated, restored, autoscaled)",
                m.decisions.clone(),
            );
            r.register(
                "events",
                "Deployment events recorded by type",
                m.events.clone(),
            );
            r.register(
                "reconcile_duration_seconds",
                "Time of one reconcile pass",
                m.reconcile_seconds.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// Prometheus text format of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().expect("metrics registry"),
        )
        .expect("writing to a String cannot fail");
        out
    }

    /// Registers `metric` as `berth_controller_<name>` (for families that
    /// other modules own, e.g. [`crate::load`]'s).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .expect("metrics registry")
            .sub_registry_with_prefix("berth_controller")
            .register(name, help, metric);
    }

    /// Counts one placement decision.
    pub fn decided(&self, decision: &'static str) {
        self.decisions
            .get_or_create(&StateLabels { state: decision })
            .inc();
    }
}
