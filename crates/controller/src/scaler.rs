//! Replicas the controller decides itself, from the load the gateways
//! report ([`crate::load`]): scale to zero, activation, autoscale.
//!
//! - **Scale to zero** (`spec.scaleToZero: {idleAfter: 5m}`): a deployment
//!   whose summed load has been 0 in flight, 0 requests/s and 0 held for
//!   `idleAfter` goes to 0 replicas, with a `ScaledToZero` event. Its
//!   status says `scaled to zero`, which is not a failure.
//! - **Activation** (`POST /v1/deployments/{name}/activate`, what a gateway
//!   sends when a request arrives for a deployment with no replica): a
//!   deployment at 0 replicas gets 1, placed as usual, answered 202
//!   `{"replicas": 1}`; one that has replicas is answered 200; one that
//!   does not scale to zero, or that no base can take, 409 with the reason
//!   (the gateway shows it to its clients). Once the activated replica
//!   runs, the deployment is back at its spec's count.
//! - **Autoscale** (`spec.autoscale`): every [`autoscale::TICK`], and on
//!   each load report as it arrives (at most one tick per [`REPORT_GAP`]),
//!   the [`autoscale::decide`] function sets the replicas; each decision
//!   is an `Autoscaled` event carrying its inputs.
//!
//! The count is kept with the deployment ([`Scale`], in force instead of
//! the spec's), so every controller and a restarted one agree on it; the
//! idle clocks and autoscale windows are in memory and start again after
//! a restart. Gateways are the only source of load: a deployment with
//! `scaleToZero` that no gateway reports load for is idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use berth_api::manifest::{DeploymentSpec, Metric, Replicas};
use berth_api::{ErrorBody, ErrorDetail};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Shared};
use crate::autoscale;
use crate::events::NewEvent;
use crate::load::{Load, LoadBoard};
use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::resources::{ResourceError, StoredDeployment};
use crate::rollout::now_ms;
use crate::scheduler;

/// A replica count the controller set, in force instead of the spec's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    /// Replicas.
    pub replicas: u32,
    /// Why.
    pub reason: ScaleReason,
    /// When it was set (ms since the Unix epoch).
    pub at_ms: u64,
    /// The decision in words, with its inputs (what its event said).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// Why the controller set a [`Scale`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScaleReason {
    /// Idle for `scaleToZero.idleAfter`: 0 replicas.
    Idle,
    /// A gateway asked for a replica: 1 until it runs.
    Activated,
    /// The autoscaler's decision.
    Autoscaled,
}

/// What an apply keeps of the controller's count: an autoscaled
/// deployment keeps it (within the new bounds, see
/// [`scheduler::wanted`]), a scale-to-zero one keeps being scaled to zero
/// or activated; any other drops it for the spec's count.
pub fn carried_over(scale: Option<Scale>, spec: &DeploymentSpec) -> Option<Scale> {
    let scale = scale?;
    let keep = match scale.reason {
        ScaleReason::Autoscaled => spec.autoscale.is_some(),
        ScaleReason::Idle | ScaleReason::Activated => spec.scales_to_zero(),
    };
    keep.then_some(scale)
}

/// Whether `d` was scaled to no replica while idle (by `scaleToZero`, or
/// the autoscaler down to `minReplicas: 0`).
pub fn idle(d: &StoredDeployment) -> bool {
    d.scale.as_ref().is_some_and(|s| s.replicas == 0)
}

/// Per deployment, what the scaler remembers between ticks.
#[derive(Debug)]
struct Tracked {
    /// When its load was last non-zero (or it was first seen, or activated).
    last_busy: Instant,
    autoscale: autoscale::State,
}

/// The load board and the scaler's memory; one per controller.
pub struct Scaler {
    /// The gateways' latest reports.
    pub load: LoadBoard,
    tracked: Mutex<BTreeMap<String, Tracked>>,
    /// Woken by each load report, so a step in the load is decided on
    /// when it arrives rather than at the next tick.
    reported: tokio::sync::Notify,
    /// Ticks run (`berth_controller_scaler_ticks_total`): what the load
    /// reports cost the controller, beyond parsing them.
    ticks: Counter,
}

impl Scaler {
    /// A scaler whose metrics are registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let ticks = Counter::default();
        metrics.register(
            "scaler_ticks",
            "Looks of the scaler and autoscaler at every deployment's load: each 500 ms, and on load reports at most each 100 ms",
            ticks.clone(),
        );
        Self {
            load: LoadBoard::new(metrics),
            tracked: Mutex::default(),
            reported: tokio::sync::Notify::new(),
            ticks,
        }
    }

    /// The summed load of deployment `name` now, if a gateway reports it.
    pub fn load_of(&self, name: &str) -> Option<Load> {
        self.load.sum(Instant::now()).remove(name)
    }

    /// Restarts `name`'s idle clock (it was just activated).
    fn touch(&self, name: &str) {
        let mut tracked = self.tracked.lock().expect("scaler state");
        let now = Instant::now();
        tracked
            .entry(name.to_string())
            .and_modify(|t| t.last_busy = now)
            .or_insert_with(|| Tracked {
                last_busy: now,
                autoscale: autoscale::State::default(),
            });
    }
}

/// The shortest time between two ticks a load report wakes: reports
/// arriving closer together (several gateways, each every 250 ms by
/// default) share one tick, so the controller's work stays at most one
/// tick per `REPORT_GAP` however many gateways report, for at most this
/// much delay on a decision.
pub const REPORT_GAP: Duration = Duration::from_millis(100);

/// Runs [`tick`] every [`autoscale::TICK`], and as soon as a load report
/// arrives (waiting for the next tick would add up to half a tick to
/// every scale-up), at most once per [`REPORT_GAP`], until the
/// reconciler stops.
pub async fn run(reconciler: Arc<Reconciler>) {
    let mut interval = tokio::time::interval(autoscale::TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = reconciler.scaler.reported.notified() => {
                let gap = REPORT_GAP.saturating_sub(last.elapsed());
                if !gap.is_zero() {
                    // Reports arriving meanwhile are summed by this tick.
                    tokio::select! {
                        _ = tokio::time::sleep(gap) => {}
                        _ = reconciler.stopped() => return,
                    }
                }
                interval.reset();
            }
            _ = reconciler.stopped() => return,
        }
        last = Instant::now();
        // Scaling writes the store: only the leader decides (load reports
        // sent to a follower are forwarded to it).
        if !reconciler.leading() {
            continue;
        }
        reconciler.scaler.ticks.inc();
        let this = reconciler.clone();
        match tokio::task::spawn_blocking(move || tick(&this, Instant::now())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "scaler tick failed; retrying on the next"),
            Err(e) => tracing::error!(error = %e, "scaler tick panicked"),
        }
    }
}

/// One look at every deployment's load: scales idle ones to zero, brings
/// activated ones back to their spec's count once they run, and runs the
/// autoscaler; reconciles if anything changed.
pub fn tick(reconciler: &Reconciler, now: Instant) -> Result<(), ResourceError> {
    let scaler = &reconciler.scaler;
    let loads = scaler.load.sum(now);
    let deployments = reconciler.resources().deployments()?;
    let snapshot = reconciler.subscribe().borrow().clone();
    let mut changes: Vec<(String, Option<Scale>, NewEvent)> = Vec::new();
    {
        let mut tracked = scaler.tracked.lock().expect("scaler state");
        tracked.retain(|name, _| {
            deployments
                .iter()
                .any(|d| d.manifest.metadata.name == *name)
        });
        for d in &deployments {
            let name = &d.manifest.metadata.name;
            let spec = &d.manifest.spec;
            let load = loads.get(name).copied().unwrap_or_default();
            let t = tracked.entry(name.clone()).or_insert_with(|| Tracked {
                last_busy: now,
                autoscale: autoscale::State::default(),
            });
            if load.busy() {
                t.last_busy = now;
            }
            let current = snapshot
                .placement
                .desired
                .get(name)
                .copied()
                .unwrap_or_else(|| scheduler::wanted(d, 0));
            let set = |replicas, reason| {
                Some(Scale {
                    replicas,
                    reason,
                    at_ms: now_ms(),
                    why: String::new(),
                })
            };
            if let Some(zero) = &spec.scale_to_zero {
                let idle_for = now.saturating_duration_since(t.last_busy);
                if current > 0 && !idle(d) && idle_for >= zero.idle_after() {
                    changes.push((
                        name.clone(),
                        set(0, ScaleReason::Idle),
                        NewEvent::normal(
                            "ScaledToZero",
                            format!(
                                "no request through the gateways for {} (0 in flight, 0/s, 0 held): replicas {current} → 0; the next request activates it",
                                zero.idle_after
                            ),
                        ),
                    ));
                    continue;
                }
            }
            let activated = d
                .scale
                .as_ref()
                .is_some_and(|s| s.reason == ScaleReason::Activated);
            // (A spec of `replicas: 0` keeps the activated replica until idle.)
            let restores = !matches!(spec.replicas, Some(Replicas::Count(0)));
            if activated && restores && spec.autoscale.is_none() {
                let ready = crate::status::of(d, &snapshot.placement, &snapshot.bases).ready;
                if ready > 0 {
                    changes.push((
                        name.clone(),
                        None,
                        NewEvent::normal(
                            "Restored",
                            format!(
                                "the activated replica runs; back to spec.replicas ({})",
                                spec.replicas_text()
                            ),
                        ),
                    ));
                }
                continue;
            }
            if let Some(a) = &spec.autoscale {
                let policy = autoscale::Policy::of(a);
                let observed = match policy.metric {
                    Metric::Concurrency => (load.in_flight + load.held) as f64,
                    Metric::Rps => load.rps,
                };
                if let Some(decision) =
                    autoscale::decide(&policy, &mut t.autoscale, current, observed, now_ms())
                {
                    changes.push((
                        name.clone(),
                        set(decision.to, ScaleReason::Autoscaled),
                        NewEvent::normal("Autoscaled", decision.to_string()),
                    ));
                }
            }
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    for (name, scale, event) in changes {
        let scale = scale.map(|s| Scale {
            why: event.message.clone(),
            ..s
        });
        reconciler
            .resources()
            .update(&name, |stored| stored.scale = scale.clone())?;
        reconciler.metrics.decided(match event.reason {
            "ScaledToZero" => "scaled_to_zero",
            "Restored" => "restored",
            _ => "autoscaled",
        });
        reconciler.record(&name, &[event])?;
    }
    reconciler.reconcile()
}

/// A failure of the scaling API, with its wire code.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// A load report that does not validate (422).
    #[error("{0}")]
    InvalidLoadReport(String),
    /// Activation of a deployment that does not scale to zero (409).
    #[error(
        "ModuleDeployment `{0}` does not scale to zero (its spec has no scaleToZero, nor autoscale with minReplicas: 0), so it is never activated; its replicas are placed as its spec says (see `berth describe deployment {0}`)"
    )]
    NotScaleToZero(String),
    /// Activation that no base can take (409).
    #[error("no base can run a replica of ModuleDeployment `{name}`: {why}")]
    Unschedulable {
        /// The deployment.
        name: String,
        /// Why, as the scheduler says it.
        why: String,
    },
    /// Anything the rest of the API can fail with.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<ResourceError> for ScaleError {
    fn from(e: ResourceError) -> Self {
        Self::Api(ApiError::Store(e))
    }
}

impl IntoResponse for ScaleError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code) = match self {
            Self::Api(e) => return e.into_response(),
            Self::InvalidLoadReport(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_load_report"),
            Self::NotScaleToZero(_) => (StatusCode::CONFLICT, "not_scale_to_zero"),
            Self::Unschedulable { .. } => (StatusCode::CONFLICT, "unschedulable"),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

/// The scaling routes: load reports and activation.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/gateways/{name}/load", put(put_load))
        .route("/v1/deployments/{name}/activate", post(activate))
}

async fn put_load(
    State(shared): State<Shared>,
    Path(gateway): Path<String>,
    body: Bytes,
) -> Result<Response, ScaleError> {
    let report = crate::load::parse(&body).map_err(|e| {
        ScaleError::InvalidLoadReport(format!(
            "the load report of gateway `{gateway}` is not valid: {e}"
        ))
    })?;
    let deployments = report.deployments.len();
    shared
        .reconciler
        .scaler
        .load
        .put(&gateway, report, Instant::now());
    shared.reconciler.scaler.reported.notify_one();
    Ok(axum::Json(serde_json::json!({ "deployments": deployments })).into_response())
}

/// What an activation found.
enum Activation {
    /// Replicas were already wanted: how many.
    Running(u32),
    /// It had none and now has one.
    Activated,
}

async fn activate(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ScaleError> {
    let found = {
        let shared = shared.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || activate_now(&shared.reconciler, &name))
            .await
            .map_err(|e| {
                ScaleError::Api(ApiError::Panicked {
                    what: "activation",
                    reason: e.to_string(),
                })
            })??
    };
    shared.reconciler.scaler.touch(&name);
    match found {
        Activation::Running(replicas) => {
            Ok(axum::Json(serde_json::json!({ "replicas": replicas })).into_response())
        }
        Activation::Activated => {
            crate::api::reconcile(&shared).await?;
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({ "replicas": 1 })),
            )
                .into_response())
        }
    }
}

/// The store half of [`activate`] (blocking).
fn activate_now(reconciler: &Reconciler, name: &str) -> Result<Activation, ScaleError> {
    let deployments = reconciler.resources().deployments()?;
    let Some(d) = deployments
        .iter()
        .find(|d| d.manifest.metadata.name == name)
    else {
        return Err(ApiError::DeploymentNotFound(name.to_string()).into());
    };
    if !d.manifest.spec.scales_to_zero() {
        return Err(ScaleError::NotScaleToZero(name.to_string()));
    }
    // Where would it go with one replica (or the ones it wants)? A dry
    // run of the scheduler over the bases as they are now.
    let bases = reconciler.bases()?;
    let imports = |d: &StoredDeployment| reconciler.imports(d);
    let now = scheduler::place_with(&deployments, &bases, &imports);
    // Scaled to zero, or a spec of `replicas: 0`.
    let zero = now.desired.get(name).copied().unwrap_or(0) == 0;
    let mut trial = deployments.clone();
    if zero {
        for t in trial
            .iter_mut()
            .filter(|t| t.manifest.metadata.name == name)
        {
            t.scale = Some(Scale {
                replicas: 1,
                reason: ScaleReason::Activated,
                at_ms: now_ms(),
                why: String::new(),
            });
        }
    }
    let placement = scheduler::place_with(&trial, &bases, &imports);
    let wanted = placement.desired.get(name).copied().unwrap_or(0);
    let unplaced = placement.unschedulable.get(name).copied().unwrap_or(0);
    if wanted > 0 && unplaced >= wanted {
        return Err(ScaleError::Unschedulable {
            name: name.to_string(),
            why: scheduler::why_unschedulable_with(d, &bases, &reconciler.imports(d)),
        });
    }
    if !zero {
        return Ok(Activation::Running(wanted));
    }
    let activated = std::cell::Cell::new(false);
    reconciler.resources().update(name, |stored| {
        // Another gateway may have activated it since it was read.
        if stored.scale.as_ref().is_none_or(|s| s.replicas == 0) {
            stored.scale = Some(Scale {
                replicas: 1,
                reason: ScaleReason::Activated,
                at_ms: now_ms(),
                why: "activated: a gateway holds a request for it".into(),
            });
            activated.set(true);
        }
    })?;
    if !activated.get() {
        return Ok(Activation::Running(1));
    }
    reconciler.metrics.decided("activated");
    reconciler.record(
        name,
        &[NewEvent::normal(
            "Activated",
            "a request is waiting at a gateway: replicas 0 → 1",
        )],
    )?;
    Ok(Activation::Activated)
}

#[cfg(test)]
mod tests {
    use berth_api::manifest::{Manifest, parse};

    use super::*;

    fn spec(lines: &str) -> DeploymentSpec {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: m }}\nspec:\n  module: {{ name: m, version: \"1\", artifact: \"file:/m.wasm\", digest: \"sha256:{}\" }}\n{lines}",
            "ab".repeat(32)
        );
        let Manifest::ModuleDeployment(d) = parse(&text).unwrap();
        d.spec
    }

    fn scale(replicas: u32, reason: ScaleReason) -> Option<Scale> {
        Some(Scale {
            replicas,
            reason,
            at_ms: 1,
            why: String::new(),
        })
    }

    #[test]
    fn an_apply_keeps_the_controllers_count_only_while_the_spec_still_asks_for_it() {
        let zero = spec("  replicas: 2\n  scaleToZero: { idleAfter: 1m }\n");
        let plain = spec("  replicas: 2\n");
        let auto = spec("  autoscale: { minReplicas: 0, maxReplicas: 4, target: { rps: 5 } }\n");
        let idle = scale(0, ScaleReason::Idle);
        assert_eq!(carried_over(idle.clone(), &zero), idle);
        // minReplicas 0 scales to zero too.
        assert_eq!(carried_over(idle.clone(), &auto), idle);
        // scaleToZero dropped: back to the spec's count.
        assert_eq!(carried_over(idle, &plain), None);
        let autoscaled = scale(3, ScaleReason::Autoscaled);
        assert_eq!(carried_over(autoscaled.clone(), &auto), autoscaled);
        assert_eq!(carried_over(autoscaled, &zero), None);
        assert_eq!(carried_over(None, &zero), None);
    }
}
