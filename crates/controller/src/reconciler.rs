//! The reconciler: the one loop that turns desired state into assignments.
//!
//! A pass reads the deployments and the bases' last heartbeats, places
//! replicas ([`crate::scheduler`]), moves rollouts along
//! ([`crate::rollout`]) — placing again when a batch advanced, so the next
//! batch is assigned in the same pass — and then:
//!
//! - **publishes** the placement; bases watching their assignments
//!   (`GET /v1/bases/{name}/assignments`, a long poll) are answered the
//!   moment theirs change, instead of on their next heartbeat;
//! - **records events** from what changed since the previous pass (a
//!   replica scheduled, running, moved off a silent base, unschedulable; an
//!   install that failed; a batch done; a rollout complete or failed);
//! - **sets the metrics** gauges;
//! - **drains** replicas taken off a Ready base: they stay assigned, marked
//!   draining in the gateways' endpoint table, for the grace period
//!   ([`crate::endpoints`]), and are unassigned only after it.
//!
//! Passes run when something changes — an apply, a delete, a rollout
//! action, a heartbeat with news — right in that request, so the change is
//! acted on before the API answers; when a base's lease expires (a watch
//! on `/alive/` sees its key deleted), so a silent base's replicas move at
//! once; and on a tick (a quarter of the heartbeat timeout), which is what
//! notices elapsed pauses. Passes are serialised; each is a pure function
//! of the store, so running one too many is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::{BaseState, BaseStatus, ModuleRef};
use tokio::sync::watch;

use crate::bases::ALIVE;
use crate::events::{self, NewEvent};
use crate::metrics::{Metrics, ReplicaLabels, StateLabels};
use crate::resources::{ResourceError, Resources, StoredDeployment};
use crate::rollout::{self, now_ms};
use crate::scheduler::{self, Placement};
use crate::status::{self, DeploymentStatus};
use crate::store::{Event, SharedStore, Store as _, Watch};

/// The outcome of the latest pass.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Where every replica goes.
    pub placement: Placement,
    /// The bases as that pass saw them.
    pub bases: Vec<BaseStatus>,
    /// Base → replicas it keeps while they drain (beyond `placement`).
    pub draining: BTreeMap<String, Vec<berth_api::Assignment>>,
    /// What gateways route by.
    pub endpoints: Arc<berth_api::endpoints::EndpointTable>,
}

impl Snapshot {
    /// What `base` should run, and the revision naming that set; `None` if
    /// the base is not Ready (its assignments would be empty for that
    /// reason alone, which must not make it uninstall everything).
    pub fn assignments(&self, base: &str) -> Option<berth_api::Assignments> {
        let ready = self
            .bases
            .iter()
            .any(|b| b.heartbeat.name == base && b.state == BaseState::Ready);
        if !ready {
            return None;
        }
        let mut modules = self
            .placement
            .by_base
            .get(base)
            .cloned()
            .unwrap_or_default();
        if let Some(draining) = self.draining.get(base) {
            modules.extend(draining.iter().cloned());
        }
        let warm = self.placement.warm.get(base).cloned().unwrap_or_default();
        Some(berth_api::Assignments {
            revision: scheduler::revision_with_warm(&modules, &warm),
            modules,
            warm,
        })
    }
}

/// Per deployment, what the previous pass saw (for events).
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    /// Base → version assigned.
    placed: BTreeMap<String, String>,
    /// Bases running their assigned version.
    running: BTreeSet<String>,
    /// Base → the error it reported for its assigned version.
    failures: BTreeMap<String, String>,
    unschedulable: u32,
    /// Replicas wanted.
    desired: u32,
    /// Base → why its replica of this deployment is evicted (a
    /// higher-priority deployment took the room).
    evicted: BTreeMap<String, String>,
    /// (Base, evicted deployment) → what this deployment's replica took
    /// the room of.
    preempted: BTreeMap<(String, String), String>,
}

/// The controller's reconciler; see the module docs.
pub struct Reconciler {
    resources: Arc<Resources<SharedStore>>,
    heartbeat_timeout: Duration,
    /// What the previous pass saw; `None` before the first.
    seen: Mutex<Option<BTreeMap<String, Seen>>>,
    published: watch::Sender<Arc<Snapshot>>,
    stopping: watch::Sender<bool>,
    /// The controller's metrics.
    pub metrics: Metrics,
    /// The compiler that reads what each module imports, if the
    /// controller compiles for its bases ([`Reconciler::set_code`]).
    code: std::sync::OnceLock<Arc<crate::code::CodeShop>>,
    /// Whether this controller leads ([`Reconciler::set_leadership`]);
    /// unset: it is the only one.
    leadership: std::sync::OnceLock<crate::leader::Leadership>,
    /// Replicas being drained.
    drains: Mutex<crate::endpoints::Drains>,
    /// How long a removed replica drains (ms; 0: not at all).
    drain_grace_ms: std::sync::atomic::AtomicU64,
    /// The gateways' load reports and the replica decisions made from
    /// them (scale to zero, activation, autoscale).
    pub scaler: crate::scaler::Scaler,
}

impl Reconciler {
    /// A reconciler over `resources`; bases silent for `heartbeat_timeout`
    /// are NotReady.
    pub fn new(resources: Arc<Resources<SharedStore>>, heartbeat_timeout: Duration) -> Arc<Self> {
        let metrics = Metrics::default();
        let scaler = crate::scaler::Scaler::new(&metrics);
        Arc::new(Self {
            resources,
            heartbeat_timeout,
            seen: Mutex::new(None),
            published: watch::channel(Arc::new(Snapshot::default())).0,
            stopping: watch::channel(false).0,
            metrics,
            code: std::sync::OnceLock::new(),
            leadership: std::sync::OnceLock::new(),
            drains: Mutex::default(),
            drain_grace_ms: std::sync::atomic::AtomicU64::new(
                crate::endpoints::DEFAULT_DRAIN_GRACE.as_millis() as u64,
            ),
            scaler,
        })
    }

    /// Sets how long a replica taken off a Ready base stays assigned,
    /// marked draining for the gateways, before it is unassigned
    /// ([`crate::endpoints::DEFAULT_DRAIN_GRACE`] unless set; zero: at once).
    pub fn set_drain_grace(&self, grace: Duration) {
        self.drain_grace_ms.store(
            u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Shares the store with other controllers: passes write (rollout
    /// steps, events) only while `leadership` says this one leads; a
    /// follower's passes only place, so its reads show the same status.
    pub fn set_leadership(&self, leadership: crate::leader::Leadership) {
        let _ = self.leadership.set(leadership);
    }

    /// This controller's leadership (always the leader when alone).
    pub fn leadership(&self) -> crate::leader::Leadership {
        self.leadership
            .get()
            .cloned()
            .unwrap_or_else(|| crate::leader::Leadership::always(""))
    }

    /// Whether this controller may write as the leader now.
    pub(crate) fn leading(&self) -> bool {
        self.leadership.get().is_none_or(|l| l.is_leader())
    }

    /// Places deployments only on bases offering what their modules import,
    /// as `shop` reads it from each compile.
    pub fn set_code(&self, shop: Arc<crate::code::CodeShop>) {
        let _ = self.code.set(shop);
    }

    /// What `d`'s module imports, as far as the controller knows.
    pub(crate) fn imports(&self, d: &StoredDeployment) -> crate::code::Imports {
        match self.code.get() {
            Some(shop) => shop.imports(
                &d.manifest.spec.module.digest,
                &d.manifest.spec.module.artifact,
            ),
            None => crate::code::Imports::Unknown,
        }
    }

    /// The deployments and the store under them.
    pub fn resources(&self) -> &Resources<SharedStore> {
        &self.resources
    }

    /// The heartbeat timeout.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    /// Every base, Ready while its lease lives.
    pub fn bases(&self) -> Result<Vec<BaseStatus>, ResourceError> {
        crate::bases::list(self.resources.store())
    }

    /// The latest pass's outcome, and a receiver told of each new one that
    /// changes some base's assignments.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    /// Tells watchers to answer now: the controller is shutting down.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Reconciler::stop`] was called.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// The status of deployment `d` as of the latest pass.
    pub fn status(&self, d: &StoredDeployment) -> DeploymentStatus {
        let snapshot = self.published.borrow().clone();
        let mut status = status::of(d, &snapshot.placement, &snapshot.bases);
        status.load = self.scaler.load_of(&d.manifest.metadata.name);
        if status.unschedulable > 0 {
            // Say why, e.g. `unschedulable: no base offers berth:sql/query@0.1.0`.
            let why = scheduler::why_unschedulable_with(d, &snapshot.bases, &self.imports(d));
            for c in &mut status.conditions {
                if c.reason == "Unschedulable" {
                    c.message = format!("{}: {why}", c.message);
                }
            }
        }
        status
    }

    /// Records `new` events on deployment `name`.
    pub fn record(&self, name: &str, new: &[NewEvent]) -> Result<(), ResourceError> {
        for e in new {
            self.metrics
                .events
                .get_or_create(&StateLabels {
                    state: e.kind.as_str(),
                })
                .inc();
        }
        events::record(self.resources.store(), name, new, now_ms())
    }

    /// Runs passes on the tick until [`Reconciler::stop`].
    pub async fn run(self: Arc<Self>) {
        let tick =
            (self.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost = None;
        loop {
            if lost.is_none() {
                lost = self.watch_lost_bases();
            }
            tokio::select! {
                _ = interval.tick() => {}
                _ = self.stopped() => return,
                event = async { lost.as_mut().expect("watching").next().await }, if lost.is_some() => {
                    match event {
                        Some(Ok(Event::Delete { .. })) => {}
                        Some(Ok(Event::Put(_))) => continue, // a heartbeat, acted on in its request
                        Some(Err(_)) | None => {
                            lost = None; // fell behind: watch again from now
                            continue;
                        }
                    }
                }
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reconcile()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reconcile failed; retrying on the next tick")
                }
                Err(e) => tracing::error!(error = %e, "reconcile panicked"),
            }
        }
    }

    /// A watch for bases' `/alive/` keys; `None` (the tick still runs) if
    /// the store cannot start one.
    fn watch_lost_bases(&self) -> Option<Watch> {
        let store = self.resources.store();
        let watched = store.list(ALIVE).and_then(|(_, at)| store.watch(ALIVE, at));
        watched
            .inspect_err(
                |e| tracing::warn!(error = %e, "cannot watch base leases; relying on the tick"),
            )
            .ok()
    }

    /// One pass; see the module docs.
    pub fn reconcile(&self) -> Result<(), ResourceError> {
        let mut seen_guard = self.seen.lock().expect("reconciler state");
        let started = Instant::now();
        let bases = self.bases()?;
        let mut deployments = self.resources.deployments()?;
        let now = now_ms();
        let mut news: BTreeMap<String, Vec<NewEvent>> = BTreeMap::new();
        let mut placement = scheduler::place_with(&deployments, &bases, &|d| self.imports(d));
        // A batch that completes lets the next one start in the same pass.
        // Only the leader moves rollouts and records events.
        let leading = self.leading();
        let rounds = if leading { 4 } else { 0 };
        for _ in 0..rounds {
            let mut advanced = false;
            for d in deployments.iter_mut().filter(|d| d.rollout.is_some()) {
                let name = d.manifest.metadata.name.clone();
                let rolled = placement.rolled.get(&name).cloned().unwrap_or_default();
                // A dry run first: most passes move no rollout, and then
                // the store is not read again.
                let assigned = &placement.by_base;
                if !rollout::advance(&mut d.clone(), &rolled, &bases, assigned, now) {
                    continue;
                }
                let before = d.clone();
                if !self.leading() {
                    break;
                }
                if let Some(after) = self.resources.update(&name, |stored| {
                    rollout::advance(stored, &rolled, &bases, assigned, now);
                })? {
                    news.entry(name)
                        .or_default()
                        .extend(rollout_events(&before, &after, &placement));
                    *d = after;
                    advanced = true;
                }
            }
            if !advanced {
                break;
            }
            placement = scheduler::place_with(&deployments, &bases, &|d| self.imports(d));
        }

        let seen_now = observe(&deployments, &placement, &bases);
        if let Some(seen_before) = seen_guard.as_ref() {
            for d in &deployments {
                let name = &d.manifest.metadata.name;
                let empty = Seen::default();
                let before = seen_before.get(name).unwrap_or(&empty);
                let found = self.placement_events(d, before, &seen_now[name], &bases);
                news.entry(name.clone()).or_default().extend(found);
            }
        }
        for (name, new) in news.iter().filter(|_| leading && self.leading()) {
            self.record(name, new)?;
        }
        *seen_guard = Some(seen_now);

        self.set_gauges(&deployments, &placement, &bases);
        let draining = {
            let previous = self.published.borrow().clone();
            let previous = crate::endpoints::merged(&previous.placement, &previous.draining);
            let grace = Duration::from_millis(
                self.drain_grace_ms
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            self.drains.lock().expect("drains").update(
                &previous,
                &placement,
                &bases,
                grace,
                Instant::now(),
            )
        };
        let endpoints = Arc::new(crate::endpoints::table(
            &deployments,
            &placement,
            &draining,
            &bases,
        ));
        let snapshot = Arc::new(Snapshot {
            placement,
            bases,
            draining,
            endpoints,
        });
        self.published.send_if_modified(|current| {
            let changed = current.placement.by_base != snapshot.placement.by_base
                || current.draining != snapshot.draining
                || current.endpoints.revision != snapshot.endpoints.revision
                || current.placement.warm != snapshot.placement.warm
                || ready_set(&current.bases) != ready_set(&snapshot.bases);
            *current = snapshot;
            changed
        });
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Events from what changed in `d`'s placement between two passes.
    fn placement_events(
        &self,
        d: &StoredDeployment,
        before: &Seen,
        now: &Seen,
        bases: &[BaseStatus],
    ) -> Vec<NewEvent> {
        let module = &d.manifest.spec.module.name;
        let mut out = Vec::new();
        for (base, why) in &now.evicted {
            if !before.evicted.contains_key(base) {
                self.metrics.decided("evicted");
                out.push(NewEvent::warning("Evicted", why.clone()));
            }
        }
        for (key, what) in &now.preempted {
            if !before.preempted.contains_key(key) {
                out.push(NewEvent::normal("Preempted", what.clone()));
            }
        }
        for (base, version) in &now.placed {
            match before.placed.get(base) {
                None => {
                    self.metrics.decided("scheduled");
                    let buffer = bases
                        .iter()
                        .any(|b| b.heartbeat.name == *base && scheduler::is_buffer(b));
                    out.push(if buffer {
                        NewEvent::normal(
                            "Buffered",
                            format!("group full: replica placed on buffer base {base} ({module}@{version}); it goes first on scale-in"),
                        )
                    } else {
                        NewEvent::normal(
                            "Scheduled",
                            format!("replica placed on base {base} ({module}@{version})"),
                        )
                    });
                }
                Some(old) if old != version => out.push(NewEvent::normal(
                    "VersionAssigned",
                    format!("base {base}: {module}@{old} → {version}"),
                )),
                Some(_) => {}
            }
        }
        for base in before
            .placed
            .keys()
            .filter(|b| !now.placed.contains_key(*b))
        {
            self.metrics.decided("descheduled");
            let ready = bases
                .iter()
                .any(|b| b.heartbeat.name == *base && b.state == BaseState::Ready);
            out.push(if ready {
                NewEvent::normal("Descheduled", format!("replica removed from base {base}"))
            } else {
                NewEvent::warning(
                    "BaseNotReady",
                    format!(
                        "base {base} sent no heartbeat for {}; its replica is placed elsewhere",
                        humantime::format_duration(self.heartbeat_timeout)
                    ),
                )
            });
        }
        for base in now.running.difference(&before.running) {
            out.push(NewEvent::normal(
                "Running",
                format!("base {base} runs {module}@{}", now.placed[base]),
            ));
        }
        for (base, error) in &now.failures {
            if before.failures.get(base) != Some(error) {
                out.push(NewEvent::warning(
                    "InstallFailed",
                    format!(
                        "base {base} cannot run {module}@{}: {error}",
                        now.placed[base]
                    ),
                ));
            }
        }
        if now.unschedulable > 0 && now.unschedulable != before.unschedulable {
            self.metrics.decided("unschedulable");
            out.push(NewEvent::warning(
                "Unschedulable",
                format!(
                    "{} of {} replica(s) found no base: {}",
                    now.unschedulable,
                    now.desired,
                    scheduler::why_unschedulable_with(d, bases, &self.imports(d))
                ),
            ));
        } else if now.unschedulable == 0 && before.unschedulable > 0 {
            out.push(NewEvent::normal("Scheduled", "every replica has a base"));
        }
        out
    }

    fn set_gauges(
        &self,
        deployments: &[StoredDeployment],
        placement: &Placement,
        bases: &[BaseStatus],
    ) {
        let m = &self.metrics;
        m.deployments.set(deployments.len() as i64);
        m.replicas.clear();
        m.rollouts.clear();
        m.bases.clear();
        for state in [BaseState::Ready, BaseState::NotReady] {
            let n = bases.iter().filter(|b| b.state == state).count();
            m.bases
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        for d in deployments {
            let s = status::of(d, placement, bases);
            let name = &d.manifest.metadata.name;
            for (state, n) in [
                ("desired", s.desired),
                ("ready", s.ready),
                ("updated", s.updated),
                ("unschedulable", s.unschedulable),
            ] {
                m.replicas
                    .get_or_create(&ReplicaLabels {
                        deployment: name.clone(),
                        state,
                    })
                    .set(i64::from(n));
            }
            if let Some(r) = &d.rollout {
                let spec = &d.manifest.spec;
                let state = if r.failed.is_some() {
                    "failed"
                } else if r.paused {
                    "paused"
                } else if r.batch_done_ms.is_some()
                    && spec.strategy.need_confirm
                    && r.confirmed < r.batch
                {
                    "waiting_confirm"
                } else {
                    "progressing"
                };
                m.rollouts.get_or_create(&StateLabels { state }).inc();
            }
        }
    }
}

fn ready_set(bases: &[BaseStatus]) -> BTreeSet<&str> {
    bases
        .iter()
        .filter(|b| b.state == BaseState::Ready)
        .map(|b| b.heartbeat.name.as_str())
        .collect()
}

/// What each deployment's placement looks like now.
fn observe(
    deployments: &[StoredDeployment],
    placement: &Placement,
    bases: &[BaseStatus],
) -> BTreeMap<String, Seen> {
    deployments
        .iter()
        .map(|d| {
            let module = &d.manifest.spec.module.name;
            let mut seen = Seen {
                unschedulable: placement
                    .unschedulable
                    .get(&d.manifest.metadata.name)
                    .copied()
                    .unwrap_or(0),
                desired: placement
                    .desired
                    .get(&d.manifest.metadata.name)
                    .copied()
                    .unwrap_or(0),
                ..Seen::default()
            };
            for (base, assignments) in &placement.by_base {
                for a in assignments.iter().filter(|a| a.name == *module) {
                    let label = ModuleRef::label(&a.name, &a.version);
                    seen.placed.insert(base.clone(), a.version.clone());
                    if let Some(b) = bases.iter().find(|b| b.heartbeat.name == *base) {
                        if b.heartbeat.modules.contains(&label) {
                            seen.running.insert(base.clone());
                        }
                        if let Some(error) = b.heartbeat.failures.get(&label) {
                            seen.failures.insert(base.clone(), error.clone());
                        }
                    }
                }
            }
            let name = &d.manifest.metadata.name;
            for e in &placement.evictions {
                if e.evicted == *name {
                    seen.evicted.insert(
                        e.base.clone(),
                        format!(
                            "replica on base {} evicted: {} ({}) took the room of this {} deployment; it comes back when the group has room",
                            e.base, e.by, e.by_priority, e.evicted_priority
                        ),
                    );
                }
                if e.by == *name {
                    seen.preempted.insert(
                        (e.base.clone(), e.evicted.clone()),
                        format!(
                            "base {} full: took the room of {} ({}, below this {} deployment)",
                            e.base, e.evicted, e.evicted_priority, e.by_priority
                        ),
                    );
                }
            }
            (name.clone(), seen)
        })
        .collect()
}

/// Events from one rollout step.
fn rollout_events(
    before: &StoredDeployment,
    after: &StoredDeployment,
    placement: &Placement,
) -> Vec<NewEvent> {
    let spec = &after.manifest.spec;
    let name = &after.manifest.metadata.name;
    let replicas = placement.desired.get(name).copied().unwrap_or(0);
    let version = &spec.module.version;
    let batches = spec.strategy.batches;
    let (Some(b), a) = (&before.rollout, &after.rollout) else {
        return Vec::new();
    };
    let Some(a) = a else {
        return vec![NewEvent::normal(
            "RolloutComplete",
            format!("all {replicas} replicas run {version}"),
        )];
    };
    let mut out = Vec::new();
    if let (None, Some(why)) = (&b.failed, &a.failed) {
        out.push(NewEvent::warning(
            "RolloutFailed",
            format!(
                "{why}; the other bases keep {} (berth rollout undo {name}, or apply a fixed version)",
                a.from.version
            ),
        ));
    }
    if b.batch_done_ms.is_none() && a.batch_done_ms.is_some() {
        let next = if spec.strategy.need_confirm {
            format!("; waiting for `berth rollout confirm {name}`")
        } else {
            spec.strategy
                .pause_between
                .as_ref()
                .map_or(String::new(), |p| format!("; next batch in {p}"))
        };
        out.push(NewEvent::normal(
            "BatchComplete",
            format!("batch {} of {batches} runs {version}{next}", a.batch),
        ));
    }
    if a.batch > b.batch {
        out.push(NewEvent::normal(
            "BatchStarted",
            format!(
                "batch {} of {batches}: {} of {} replicas move to {version}",
                a.batch,
                rollout::updated_count(replicas, batches, a.batch),
                replicas
            ),
        ));
    }
    out
}
