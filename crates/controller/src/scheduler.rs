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
//! Replicas that find no candidate are unschedulable. Deployments are placed
//! by `spec.priority` (critical first), running ones before new ones of the
//! same priority, then by name: a full group keeps the higher priorities,
//! and a replica whose room a higher one took is an [`Eviction`].
//!
//! How many replicas a deployment wants is [`wanted`]: its `replicas`, or
//! for a peer deployment (`replicas: all`) one per Ready base matching the
//! selector and offering its imports — so it follows bases joining and
//! leaving — unless the controller set a count itself (scaled to zero,
//! activated, autoscaled; [`crate::scaler`]).
//!
//! A base is a candidate only if it offers every interface the module
//! imports beyond WASI (its heartbeat's capabilities; the imports come from
//! the controller's compile, [`Imports`]): a module importing
//! `berth:sql/query` lands only on a base that shares a SQL database.
//!
//! **Buffer bases** (labelled `berth.dev/role=buffer`, [`is_buffer`]) are
//! no group's own: an autoscaled deployment whose group has no room (or
//! only bases busier than its `autoscale.busyBaseInFlight`) takes them
//! after its own candidates, so they are the first it gives up on
//! scale-in, and every buffer base is told to keep the code of each
//! autoscaled deployment it does not run compiled ([`Placement::warm`]).

use std::collections::{BTreeMap, BTreeSet};

use berth_api::manifest::Priority;
use berth_api::{Assignment, BaseState, BaseStatus, ModuleRef};

use crate::code::Imports;
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
    /// Deployment name → replicas it wants now ([`wanted`]).
    pub desired: BTreeMap<String, u32>,
    /// Buffer base name → code it keeps compiled without running it: every
    /// autoscaled deployment it does not run.
    pub warm: BTreeMap<String, Vec<Assignment>>,
    /// Deployment name → buffer bases its replicas overflowed onto because
    /// its own group had no room.
    pub buffered: BTreeMap<String, Vec<String>>,
    /// Replicas a higher-priority deployment took the room of.
    pub evictions: Vec<Eviction>,
}

/// A replica that lost its base to a higher-priority deployment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The base, full, that runs it.
    pub base: String,
    /// The deployment whose replica goes.
    pub evicted: String,
    /// Its priority.
    pub evicted_priority: Priority,
    /// The deployment whose replica takes the room.
    pub by: String,
    /// Its priority.
    pub by_priority: Priority,
}

/// The label whose value names a base's role in the fleet.
pub const ROLE_LABEL: &str = "berth.dev/role";

/// The role of a buffer base (`--labels berth.dev/role=buffer`).
pub const BUFFER_ROLE: &str = "buffer";

/// Whether `base` belongs to the buffer group: it holds no steady
/// replicas, keeps the code of autoscaled deployments compiled, and takes
/// their replicas when their own group has no room.
pub fn is_buffer(base: &BaseStatus) -> bool {
    base.heartbeat.labels.get(ROLE_LABEL).map(String::as_str) == Some(BUFFER_ROLE)
}

/// The replicas `d` wants now: the count the controller set itself when it
/// did ([`crate::scaler::Scale`]: scaled to zero, activated, autoscaled),
/// else the spec's; for `replicas: all`, `eligible`, the Ready bases that
/// match its selector and offer what its module imports.
pub fn wanted(d: &StoredDeployment, eligible: u32) -> u32 {
    use berth_api::manifest::Replicas;
    let spec = &d.manifest.spec;
    if let Some(scale) = &d.scale {
        return match &spec.autoscale {
            Some(a) => scale.replicas.clamp(a.min_replicas, a.max_replicas),
            None => scale.replicas,
        };
    }
    match (&spec.replicas, &spec.autoscale) {
        (Some(Replicas::Count(n)), _) => *n,
        (Some(Replicas::All), _) => eligible,
        // An autoscaled deployment starts with one replica (or its minimum).
        (None, Some(a)) => a.min_replicas.max(1).min(a.max_replicas),
        (None, None) => 0,
    }
}

/// A short stable name of a set of assignments (what a base is told it
/// runs, and reports back with its failures).
pub fn revision(modules: &[Assignment]) -> String {
    revision_with_warm(modules, &[])
}

/// The revision of `modules` plus the code a buffer base keeps `warm`:
/// [`revision`] when nothing is warm, else that followed by `+` and a
/// hash of the warm set, so a base learns of new code to warm while
/// [`is_revision_of`] still knows what it runs.
pub fn revision_with_warm(modules: &[Assignment], warm: &[Assignment]) -> String {
    let runs = hash_of(modules);
    if warm.is_empty() {
        runs
    } else {
        format!("{runs}+{}", hash_of(warm))
    }
}

/// Whether a base reporting `reported` was told to run exactly `modules`.
pub fn is_revision_of(reported: &str, modules: &[Assignment]) -> bool {
    reported.split('+').next() == Some(revision(modules).as_str())
}

fn hash_of(modules: &[Assignment]) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(modules)
        .expect("assignments serialize")
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Places every deployment onto the Ready bases, without knowing what
/// their modules import.
pub fn place(deployments: &[StoredDeployment], bases: &[BaseStatus]) -> Placement {
    place_with(deployments, bases, &|_| Imports::Unknown)
}

/// What a deployment needs of a base's capabilities, given what `imports`
/// says of its module: `None` places it nowhere yet.
fn needs<'a>(
    d: &StoredDeployment,
    bases: &[BaseStatus],
    imports: &'a Imports,
) -> Option<&'a [String]> {
    match imports {
        Imports::Known(list) => Some(list),
        Imports::Unknown => Some(&[]),
        // Hold a new deployment until its imports are known, but never
        // take replicas away from one that already runs.
        Imports::Pending => {
            let name = &d.manifest.spec.module.name;
            let running = bases.iter().any(|b| {
                b.heartbeat
                    .modules
                    .iter()
                    .any(|m| ModuleRef::split(m).map_or(m.as_str(), |(n, _)| n) == name)
            });
            (running || d.rollout.is_some()).then_some(&[][..])
        }
    }
}

/// Whether `base` offers every interface in `needed`.
fn offers(base: &BaseStatus, needed: &[String]) -> bool {
    needed.iter().all(|i| offers_one(base, i))
}

/// Whether `base` offers `interface` (`pkg:name/iface@version`): by its
/// exact name, or by the name alone when the base reports no version.
fn offers_one(base: &BaseStatus, interface: &str) -> bool {
    let unversioned = interface
        .split_once('@')
        .map_or(interface, |(name, _)| name);
    base.heartbeat
        .capabilities
        .iter()
        .any(|c| c == interface || c == unversioned)
}

/// Places every deployment onto the Ready bases offering what its module
/// imports (`imports` of each deployment).
pub fn place_with(
    deployments: &[StoredDeployment],
    bases: &[BaseStatus],
    imports: &dyn Fn(&StoredDeployment) -> Imports,
) -> Placement {
    let ready: Vec<&BaseStatus> = bases
        .iter()
        .filter(|b| b.state == BaseState::Ready)
        .collect();
    let mut placement = Placement::default();
    let mut load: BTreeMap<&str, u32> = ready
        .iter()
        .map(|b| (b.heartbeat.name.as_str(), 0))
        .collect();
    // Base → (deployment, priority, whether it runs there already) of the
    // replicas placed on it so far: who took a full base's room.
    let mut taken: BTreeMap<&str, Vec<(&str, Priority, bool)>> = BTreeMap::new();
    let mut sorted: Vec<&StoredDeployment> = deployments.iter().collect();
    let priority_of: BTreeMap<&str, Priority> = deployments
        .iter()
        .map(|d| {
            (
                d.manifest.spec.module.name.as_str(),
                d.manifest.spec.priority,
            )
        })
        .collect();
    // Higher priorities take room first, so when a group is full the
    // lower ones are what find none; within a priority, deployments that
    // run already come before new ones, so equals never evict each other.
    let runs_anywhere = |d: &StoredDeployment| {
        ready.iter().any(|b| {
            b.heartbeat.modules.iter().any(|m| {
                ModuleRef::split(m).map_or(m.as_str(), |(n, _)| n) == d.manifest.spec.module.name
            })
        })
    };
    sorted.sort_by_cached_key(|d| {
        (
            std::cmp::Reverse(d.manifest.spec.priority),
            !runs_anywhere(d),
            d.manifest.metadata.name.clone(),
        )
    });
    for d in sorted {
        let spec = &d.manifest.spec;
        let imported = imports(d);
        let needed = needs(d, bases, &imported);
        let running = |b: &BaseStatus| {
            b.heartbeat.modules.iter().any(|m| {
                ModuleRef::split(m).map_or(m.as_str(), |(name, _)| name) == spec.module.name
            })
        };
        // Buffer bases are no group's own, unless a selector names them.
        let names_role = spec.base_selector.contains_key(ROLE_LABEL);
        let selected: Vec<&BaseStatus> = ready
            .iter()
            .copied()
            .filter(|b| names_role || !is_buffer(b))
            .filter(|b| {
                spec.base_selector
                    .iter()
                    .all(|(k, v)| b.heartbeat.labels.get(k) == Some(v))
            })
            .collect();
        // Bases a peer deployment (`replicas: all`) wants a replica on;
        // while its imports are unknown, every selected one.
        let eligible = selected
            .iter()
            .filter(|b| needed.is_none_or(|n| offers(b, n)))
            .count() as u32;
        let replicas = wanted(d, eligible);
        placement
            .desired
            .insert(d.manifest.metadata.name.clone(), replicas);
        // An autoscaled deployment's new replicas skip busy bases of its
        // group (and so overflow onto the buffer group).
        let busy_at = spec.autoscale.as_ref().and_then(|a| a.busy_base_in_flight);
        let mut candidates: Vec<&BaseStatus> = selected
            .iter()
            .copied()
            .filter(|b| load[b.heartbeat.name.as_str()] < b.heartbeat.capacity_modules)
            .filter(|b| busy_at.is_none_or(|n| running(b) || b.heartbeat.in_flight < n))
            .filter(|b| needed.is_some_and(|n| offers(b, n)))
            .collect();
        let binpack = spec.placement == berth_api::manifest::PlacementPolicy::BinPack;
        candidates.sort_by_key(|b| {
            let load = load[b.heartbeat.name.as_str()];
            // Spread: fewest placed first; bin-pack: most placed first.
            let order = if binpack { u32::MAX - load } else { load };
            (!running(b), order, b.heartbeat.name.clone())
        });
        // An autoscaled deployment takes the buffer group before it evicts
        // a lower priority: a base whose room is that of lower-priority
        // replicas running there comes after the buffer bases.
        let buffer_first = spec.autoscale.is_some() && !names_role;
        let evicts = |b: &BaseStatus| {
            let lower: BTreeSet<&str> = b
                .heartbeat
                .modules
                .iter()
                .map(|m| ModuleRef::split(m).map_or(m.as_str(), |(n, _)| n))
                .filter(|n| priority_of.get(n).is_some_and(|p| *p < spec.priority))
                .collect();
            !running(b)
                && load[b.heartbeat.name.as_str()] + lower.len() as u32
                    >= b.heartbeat.capacity_modules
        };
        let (free, evicting): (Vec<&BaseStatus>, Vec<&BaseStatus>) = candidates
            .iter()
            .copied()
            .partition(|b| !buffer_first || !evicts(b));
        let mut chosen: Vec<&BaseStatus> = free.into_iter().take(replicas as usize).collect();
        // A full base running this deployment that a higher-priority
        // newcomer took the room of: its replica is evicted.
        for b in &selected {
            let base = b.heartbeat.name.as_str();
            if !running(b) || load[base] < b.heartbeat.capacity_modules {
                continue;
            }
            let by = taken.get(base).and_then(|placed| {
                placed
                    .iter()
                    .find(|(_, priority, ran)| !ran && *priority > spec.priority)
            });
            if let Some((by, by_priority, _)) = by {
                placement.evictions.push(Eviction {
                    base: base.to_string(),
                    evicted: d.manifest.metadata.name.clone(),
                    evicted_priority: spec.priority,
                    by: by.to_string(),
                    by_priority: *by_priority,
                });
            }
        }
        // An autoscaled deployment whose group has no room overflows onto
        // the buffer group; as they come last, a scale-in drops them first.
        if chosen.len() < replicas as usize && spec.autoscale.is_some() && !names_role {
            let mut spare: Vec<&BaseStatus> = ready
                .iter()
                .copied()
                .filter(|b| is_buffer(b))
                .filter(|b| load[b.heartbeat.name.as_str()] < b.heartbeat.capacity_modules)
                .filter(|b| needed.is_some_and(|n| offers(b, n)))
                .collect();
            spare.sort_by_key(|b| {
                (
                    !running(b),
                    load[b.heartbeat.name.as_str()],
                    b.heartbeat.name.clone(),
                )
            });
            let more = replicas as usize - chosen.len();
            for b in spare.into_iter().take(more) {
                placement
                    .buffered
                    .entry(d.manifest.metadata.name.clone())
                    .or_default()
                    .push(b.heartbeat.name.clone());
                chosen.push(b);
            }
        }
        let more = (replicas as usize).saturating_sub(chosen.len());
        chosen.extend(evicting.into_iter().take(more));
        // During a rollout the first bases by name run the new version.
        chosen.sort_by(|a, b| a.heartbeat.name.cmp(&b.heartbeat.name));
        let updated = match &d.rollout {
            // A failed rollout moves no further, and its failed batch goes
            // back to the old version.
            Some(r) if r.failed.is_some() => {
                crate::rollout::updated_count(replicas, spec.strategy.batches, r.batch - 1) as usize
            }
            Some(r) => {
                crate::rollout::updated_count(replicas, spec.strategy.batches, r.batch) as usize
            }
            None => chosen.len(),
        };
        let mut placed = 0;
        for (i, base) in chosen.iter().enumerate() {
            *load
                .get_mut(base.heartbeat.name.as_str())
                .expect("a ready base") += 1;
            taken
                .entry(base.heartbeat.name.as_str())
                .or_default()
                .push((
                    d.manifest.metadata.name.as_str(),
                    spec.priority,
                    running(base),
                ));
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
        if placed < replicas {
            placement
                .unschedulable
                .insert(d.manifest.metadata.name.clone(), replicas - placed);
        }
    }
    warm_buffers(deployments, &ready, imports, &mut placement);
    placement
}

/// Gives every Ready buffer base the code of each autoscaled deployment it
/// could run but does not, to keep compiled.
fn warm_buffers(
    deployments: &[StoredDeployment],
    ready: &[&BaseStatus],
    imports: &dyn Fn(&StoredDeployment) -> Imports,
    placement: &mut Placement,
) {
    for base in ready.iter().filter(|b| is_buffer(b)) {
        let name = &base.heartbeat.name;
        let runs = placement.by_base.get(name);
        let mut warm: Vec<Assignment> = Vec::new();
        for d in deployments
            .iter()
            .filter(|d| d.manifest.spec.autoscale.is_some())
        {
            let spec = &d.manifest.spec;
            let imported = imports(d);
            let fits = match &imported {
                Imports::Known(list) => offers(base, list),
                Imports::Unknown | Imports::Pending => true,
            };
            let running = runs.is_some_and(|r| r.iter().any(|a| a.digest == spec.module.digest));
            if fits && !running && !warm.iter().any(|a| a.digest == spec.module.digest) {
                warm.push(Assignment {
                    name: spec.module.name.clone(),
                    version: spec.module.version.clone(),
                    artifact: spec.module.artifact.clone(),
                    digest: spec.module.digest.clone(),
                    route: None,
                });
            }
        }
        if !warm.is_empty() {
            warm.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
            placement.warm.insert(name.clone(), warm);
        }
    }
}

/// Why replicas of `d` found no base, in words, for its events, knowing
/// what its module imports.
pub fn why_unschedulable_with(
    d: &StoredDeployment,
    bases: &[BaseStatus],
    imports: &Imports,
) -> String {
    let Some(needed) = needs(d, bases, imports) else {
        return "waiting for the controller to read which interfaces the module imports".into();
    };
    let selected: Vec<&BaseStatus> = bases
        .iter()
        .filter(|b| {
            b.state == BaseState::Ready
                && d.manifest
                    .spec
                    .base_selector
                    .iter()
                    .all(|(k, v)| b.heartbeat.labels.get(k) == Some(v))
        })
        .collect();
    if !selected.is_empty()
        && let Some(missing) = needed
            .iter()
            .find(|i| !selected.iter().any(|b| offers_one(b, i)))
    {
        return format!(
            "unschedulable: no base offers {missing}; start a base that offers it (a custom base built with berth_base::Base::builder, see examples/sql-base) or remove the import from the module"
        );
    }
    why_unschedulable(d, bases)
}

/// Why replicas of `d` found no base, in words, for its events.
pub fn why_unschedulable(d: &StoredDeployment, bases: &[BaseStatus]) -> String {
    let spec = &d.manifest.spec;
    let matching = bases
        .iter()
        .filter(|b| {
            b.state == BaseState::Ready
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
            scale: None,
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
                revision: String::new(),
                capabilities: Vec::new(),
            },
            last_heartbeat: String::new(),
            state: BaseState::Ready,
        }
    }

    /// An autoscaled deployment the autoscaler set to `replicas`.
    fn autoscaled(name: &str, replicas: u32) -> StoredDeployment {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n  module: {{ name: {name}, version: \"1\", artifact: \"file:/m.wasm\", digest: \"sha256:{}\" }}\n  autoscale: {{ minReplicas: 1, maxReplicas: 4, target: {{ concurrency: 10 }} }}\n",
            "cd".repeat(32)
        );
        let Manifest::ModuleDeployment(manifest) = parse(&text).unwrap();
        StoredDeployment {
            manifest,
            generation: 1,
            history: Vec::new(),
            rollout: None,
            scale: Some(crate::scaler::Scale {
                replicas,
                reason: crate::scaler::ScaleReason::Autoscaled,
                at_ms: 0,
                why: String::new(),
            }),
        }
    }

    fn buffer(name: &str) -> BaseStatus {
        let mut b = base(name, 5);
        b.heartbeat
            .labels
            .insert(ROLE_LABEL.into(), BUFFER_ROLE.into());
        b
    }

    #[test]
    fn buffer_bases_take_only_overflow_and_warm_what_they_do_not_run() {
        let bases = [base("a", 5), base("b", 5), buffer("x"), buffer("y")];
        let fixed = [deployment("fixed", 4, "spread")];
        // A fixed deployment never lands on a buffer base.
        let p = place(&fixed, &bases);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.unschedulable["fixed"], 2);
        // The buffer bases warm every autoscaled deployment.
        let two = [autoscaled("auto", 2)];
        let p = place(&two, &bases);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(p.buffered.is_empty());
        assert_eq!(p.warm.keys().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(p.warm["x"][0].name, "auto");
        assert!(p.warm["x"][0].route.is_none());
        // Its group full, the autoscaled one overflows onto a buffer base,
        // which then no longer warms what it runs.
        let three = [autoscaled("auto", 3)];
        let p = place(&three, &bases);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b", "x"]);
        assert_eq!(p.buffered["auto"], ["x"]);
        assert_eq!(p.warm.keys().collect::<Vec<_>>(), ["y"]);
        // A busy base of the group takes no new replica when the spec
        // says how busy is too busy: the buffer takes it.
        let mut busy = bases.clone();
        busy[1].heartbeat.in_flight = 80;
        let p = place(&two, &busy);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b"]);
        let mut picky = autoscaled("auto", 2);
        picky
            .manifest
            .spec
            .autoscale
            .as_mut()
            .unwrap()
            .busy_base_in_flight = Some(50);
        let p = place(std::slice::from_ref(&picky), &busy);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "x"]);
        assert_eq!(p.buffered["auto"], ["x"]);
        // ... but keeps a replica it runs already.
        busy[1].heartbeat.modules = vec!["auto@1".into()];
        let p = place(std::slice::from_ref(&picky), &busy);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b"]);
        // Scale-in from there drops the buffer replica, not a group one,
        // even though x runs it now.
        let mut running = bases.clone();
        running[2].heartbeat.modules = vec!["auto@1".into()];
        let p = place(&two, &running);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b"]);
        // A warm set changes the revision a base is told, not what it runs.
        let runs = &p.by_base["a"];
        let told = revision_with_warm(runs, &p.warm["x"]);
        assert_ne!(told, revision(runs));
        assert!(is_revision_of(&told, runs) && is_revision_of(&revision(runs), runs));
        assert!(!is_revision_of(&told, &[]));
    }

    #[test]
    fn a_higher_priority_takes_a_full_base_and_names_whom_it_evicts() {
        let with = |name: &str, priority: Priority| {
            let mut d = deployment(name, 1, "spread");
            d.manifest.spec.priority = priority;
            d
        };
        // "a-low" sorts first by name, but priority comes before names.
        let all = [
            with("a-low", Priority::BestEffort),
            with("z-top", Priority::Critical),
        ];
        let mut full = base("b", 1);
        let p = place(&all, std::slice::from_ref(&full));
        assert_eq!(p.by_base["b"][0].name, "z-top");
        assert_eq!(p.unschedulable["a-low"], 1);
        // Nothing ran there before: nobody was evicted.
        assert!(p.evictions.is_empty());
        full.heartbeat.modules = vec!["a-low@1".into()];
        let p = place(&all, std::slice::from_ref(&full));
        assert_eq!(
            p.evictions,
            [Eviction {
                base: "b".into(),
                evicted: "a-low".into(),
                evicted_priority: Priority::BestEffort,
                by: "z-top".into(),
                by_priority: Priority::Critical,
            }]
        );
        // An equal newcomer, first by name, waits for the one running.
        let equal = [
            with("a-low", Priority::BestEffort),
            with("a-first", Priority::BestEffort),
        ];
        let p = place(&equal, std::slice::from_ref(&full));
        assert_eq!(p.by_base["b"][0].name, "a-low");
        assert_eq!(p.unschedulable["a-first"], 1);
        // An autoscaled critical one takes a buffer base before it evicts.
        let mut critical = autoscaled("auto", 2);
        critical.manifest.spec.priority = Priority::Critical;
        let mut two_full = [full.clone(), base("c", 1), buffer("x")];
        two_full[1].heartbeat.modules = vec!["a-low@1".into()];
        let mix = [with("a-low", Priority::BestEffort), critical];
        let p = place(&mix, &two_full);
        let on = |m: &str| -> Vec<&String> {
            p.by_base
                .iter()
                .filter(|(_, a)| a.iter().any(|a| a.name == m))
                .map(|(b, _)| b)
                .collect()
        };
        // Two replicas: the buffer base, then one of the full bases.
        assert_eq!(on("auto").len(), 2);
        assert!(on("auto").contains(&&"x".to_string()));
        assert_eq!(p.evictions.len(), 1);
        // The critical one gone, the room is the best-effort one's again.
        let p = place(&all[..1], std::slice::from_ref(&full));
        assert_eq!(p.by_base["b"][0].name, "a-low");
        assert!(p.evictions.is_empty() && p.unschedulable.is_empty());
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

    fn offering(name: &str, capabilities: &[&str]) -> BaseStatus {
        let mut b = base(name, 10);
        b.heartbeat.capabilities = capabilities.iter().map(|c| c.to_string()).collect();
        b
    }

    const SQL: &str = "berth:sql/query@0.1.0";

    #[test]
    fn a_module_lands_only_on_bases_offering_every_interface_it_imports() {
        let notes = [deployment("notes", 2, "spread")];
        let bases = [offering("plain", &[]), offering("sql", &[SQL])];
        let needs = |_: &StoredDeployment| Imports::Known(vec![SQL.to_string()]);
        let p = place_with(&notes, &bases, &needs);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), vec!["sql"]);
        assert_eq!(p.unschedulable["notes"], 1);
        // With only plain bases, none is placed, and the reason names the interface.
        let p = place_with(&notes, &bases[..1], &needs);
        assert!(p.by_base.is_empty());
        assert_eq!(
            why_unschedulable_with(&notes[0], &bases[..1], &needs(&notes[0])),
            format!(
                "unschedulable: no base offers {SQL}; start a base that offers it (a custom base built with berth_base::Base::builder, see examples/sql-base) or remove the import from the module"
            )
        );
        // A base reporting the interface without a version offers every version.
        let unversioned = [offering("team", &["berth:sql/query"])];
        assert_eq!(place_with(&notes, &unversioned, &needs).by_base.len(), 1);
        // Imports known to need nothing, or unknown: any base.
        let p = place_with(&notes, &bases, &|_| Imports::Known(Vec::new()));
        assert_eq!(p.by_base.len(), 2);
        let p = place(&notes, &bases);
        assert_eq!(p.by_base.len(), 2);
    }

    #[test]
    fn a_new_deployment_waits_for_its_imports_but_a_running_one_keeps_its_bases() {
        let notes = [deployment("notes", 1, "spread")];
        let mut bases = [offering("a", &[])];
        let p = place_with(&notes, &bases, &|_| Imports::Pending);
        assert!(p.by_base.is_empty());
        assert_eq!(
            why_unschedulable_with(&notes[0], &bases, &Imports::Pending),
            "waiting for the controller to read which interfaces the module imports"
        );
        bases[0].heartbeat.modules = vec!["notes@1".into()];
        let p = place_with(&notes, &bases, &|_| Imports::Pending);
        assert_eq!(p.by_base.len(), 1);
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

    #[test]
    fn a_peer_deployment_runs_once_on_every_matching_base_and_follows_them() {
        let mut peer = deployment("peer", 1, "spread");
        peer.manifest.spec.replicas = Some(berth_api::manifest::Replicas::All);
        peer.manifest.spec.base_selector = [("group".to_string(), "gold".to_string())].into();
        let labelled = |name: &str, group: &str| {
            let mut b = base(name, 10);
            b.heartbeat.labels = [("group".to_string(), group.to_string())].into();
            b
        };
        let mut bases = vec![
            labelled("a", "gold"),
            labelled("b", "gold"),
            labelled("c", "other"),
        ];
        let p = place(std::slice::from_ref(&peer), &bases);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((p.desired["peer"], p.unschedulable.get("peer")), (2, None));
        // A base joins the group: it gets one too.
        bases.push(labelled("d", "gold"));
        let p = place(std::slice::from_ref(&peer), &bases);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["a", "b", "d"]);
        // One goes NotReady: the peer shrinks with it, nothing unschedulable.
        bases[0].state = BaseState::NotReady;
        let p = place(std::slice::from_ref(&peer), &bases);
        assert_eq!(p.by_base.keys().collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!((p.desired["peer"], p.unschedulable.get("peer")), (2, None));
        // Only bases offering its imports count; a full base is unschedulable.
        let needs = |_: &StoredDeployment| Imports::Known(vec![SQL.to_string()]);
        bases[1].heartbeat.capabilities = vec![SQL.to_string()];
        let p = place_with(std::slice::from_ref(&peer), &bases, &needs);
        assert_eq!((p.desired["peer"], p.by_base.len()), (1, 1));
        bases[1].heartbeat.capacity_modules = 0;
        let p = place_with(std::slice::from_ref(&peer), &bases, &needs);
        assert_eq!(p.unschedulable["peer"], 1);
    }

    #[test]
    fn the_controllers_own_count_overrides_the_spec() {
        use crate::scaler::{Scale, ScaleReason};
        let mut d = deployment("m", 3, "spread");
        let bases = [base("a", 3), base("b", 3), base("c", 3)];
        assert_eq!(place(std::slice::from_ref(&d), &bases).desired["m"], 3);
        d.scale = Some(Scale {
            replicas: 0,
            reason: ScaleReason::Idle,
            at_ms: 0,
            why: String::new(),
        });
        let p = place(std::slice::from_ref(&d), &bases);
        assert!(p.by_base.is_empty() && p.unschedulable.is_empty());
        assert_eq!(p.desired["m"], 0);
        // An autoscaled count stays within the spec's bounds.
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: m }}\nspec:\n  module: {{ name: m, version: \"1\", artifact: \"file:/m.wasm\", digest: \"sha256:{}\" }}\n  autoscale: {{ minReplicas: 0, maxReplicas: 2, target: {{ rps: 10 }} }}\n",
            "ab".repeat(32)
        );
        let Manifest::ModuleDeployment(manifest) = parse(&text).unwrap();
        let mut auto = StoredDeployment {
            manifest,
            generation: 1,
            history: Vec::new(),
            rollout: None,
            scale: None,
        };
        assert_eq!(
            wanted(&auto, 0),
            1,
            "an autoscaled deployment starts at one"
        );
        auto.scale = Some(Scale {
            replicas: 5,
            reason: ScaleReason::Autoscaled,
            at_ms: 0,
            why: String::new(),
        });
        assert_eq!(wanted(&auto, 0), 2);
    }
}
