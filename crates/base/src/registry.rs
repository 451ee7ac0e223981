//! The in-memory installed set: every module version, loaded or failed.
//!
//! A module (by name) has one or more installed versions; exactly one of them
//! is *active* and serves the module's route, the others are *inactive*
//! (kept, as Koupleless keeps deactivated biz versions, for a quick switch
//! back). The route belongs to the active version's record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use berth_api::{ModuleInfo, ModuleState, Route, TrafficRules};
use berth_runtime::LoadedModule;

use crate::logs::{LogHub, ModuleLogs};
use crate::metrics::Metrics;
use crate::router::{RouteTable, Rules, Target};
use crate::rules::CompiledRules;
use crate::state::{InstallRecord, ModuleMeta};
pub use crate::stats::VersionStats;

/// One installed version.
pub(crate) struct Installed {
    pub record: InstallRecord,
    pub stats: Arc<VersionStats>,
    /// `None` when the version could not be loaded at start-up.
    pub module: Option<LoadedModule>,
    /// Why it could not be loaded.
    pub error: Option<String>,
}

impl Installed {
    /// A version that loaded (`Ok`) or could not be loaded (`Err(why)`),
    /// reporting into `metrics`, its lines kept for `hub`'s followers.
    pub fn new(
        record: InstallRecord,
        module: Result<LoadedModule, String>,
        metrics: &Metrics,
        hub: &LogHub,
        observed: bool,
    ) -> Self {
        let stats = Arc::new(VersionStats::new(
            metrics.version(&record.name, &record.version),
            Arc::new(ModuleLogs::new(&record.name, &record.version, hub)),
            observed,
        ));
        let (module, error) = match module {
            Ok(module) if !observed => (Some(module), None),
            Ok(module) => {
                let histogram = stats.metrics.instantiation.clone();
                let observe: Arc<dyn Fn(Duration) + Send + Sync> =
                    Arc::new(move |took: Duration| histogram.observe(took.as_secs_f64()));
                let module = module
                    .with_instantiation_observer(observe)
                    .with_log_sink(stats.logs.clone());
                (Some(module), None)
            }
            Err(error) => (None, Some(error)),
        };
        Self {
            record,
            stats,
            module,
            error,
        }
    }

    pub fn info(&self) -> ModuleInfo {
        let r = &self.record;
        let state = match (&self.module, r.active) {
            (None, _) => ModuleState::Failed,
            (Some(_), true) => ModuleState::Active,
            (Some(_), false) => ModuleState::Inactive,
        };
        ModuleInfo {
            name: r.name.clone(),
            version: r.version.clone(),
            digest: r.digest.clone(),
            route: r.route.clone(),
            state,
            installed_at: humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(r.installed_at_ms),
            )
            .to_string(),
            install_duration_ms: r.install_duration_ms,
            compile_cache: r.compile_cache,
            tier: self.module.as_ref().map(|m| match m.tier() {
                berth_runtime::Tier::Winch => berth_api::CodeTier::Winch,
                berth_runtime::Tier::Cranelift => berth_api::CodeTier::Cranelift,
            }),
            size_bytes: r.size_bytes,
            requests: self.stats.requests.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            in_flight: self.module.as_ref().map_or(0, LoadedModule::in_flight),
            limits: self.module.as_ref().map_or(r.limits, |m| {
                let l = m.settings().limits;
                berth_api::Limits {
                    memory_mib: Some((l.max_memory_bytes >> 20) as u64),
                    timeout_ms: Some(l.timeout.as_millis() as u64),
                    max_concurrency: Some(l.max_concurrency),
                    max_request_bytes: Some(l.max_request_bytes),
                    max_response_bytes: Some(l.max_response_bytes),
                    cpu: l.cpu_millis.map(|millis| berth_api::CpuCores { millis }),
                    cpu_queue_wait_ms: Some(l.cpu_queue_wait.as_millis() as u64),
                    policy: Some(match m.settings().policy {
                        berth_runtime::InstancePolicy::Fresh => berth_api::InstancePolicy::Fresh,
                        berth_runtime::InstancePolicy::Pooled {
                            max_requests,
                            max_idle,
                        } => berth_api::InstancePolicy::Pooled(berth_api::PooledPolicy {
                            max_requests,
                            max_idle_ms: max_idle.as_millis() as u64,
                        }),
                    }),
                }
            }),
            allowed_hosts: r.allowed_hosts.clone(),
            config_keys: r.config.keys().cloned().collect(),
            memory_in_use_bytes: self.module.as_ref().map_or(0, LoadedModule::memory_in_use),
            recent: self.stats.recent(),
            recent_traps: self
                .stats
                .traps
                .lock()
                .expect("traps lock")
                .iter()
                .cloned()
                .collect(),
            error: self.error.clone(),
        }
    }
}

/// A module: its installed versions, traffic rules and switch history.
#[derive(Default)]
pub(crate) struct Module {
    pub versions: BTreeMap<String, Installed>,
    /// The rules as set (empty when none).
    pub rules: TrafficRules,
    /// The compiled rules, when there are any.
    pub compiled: Option<Arc<CompiledRules>>,
    /// The default before the last switch (what rollback returns to).
    pub previous_default: Option<String>,
}

impl Module {
    /// The default version.
    pub fn default_version(&self) -> Option<&Installed> {
        self.versions.values().find(|v| v.record.active)
    }

    /// Versions that are loaded and can serve.
    pub fn loaded_versions(&self) -> Vec<&str> {
        self.versions
            .values()
            .filter(|v| v.module.is_some())
            .map(|v| v.record.version.as_str())
            .collect()
    }

    /// What is persisted besides the install records.
    pub fn meta(&self) -> ModuleMeta {
        ModuleMeta {
            rules: self.rules.clone(),
            previous_default: self.previous_default.clone(),
        }
    }

    /// Makes `version` the default (the others inactive); returns the old default.
    pub fn set_default(&mut self, version: &str) -> Option<String> {
        let old = self.default_version().map(|v| v.record.version.clone());
        for v in self.versions.values_mut() {
            v.record.active = v.record.version == version;
        }
        old
    }
}

/// name → module.
#[derive(Default)]
pub(crate) struct Registry {
    modules: BTreeMap<String, Module>,
}

impl Registry {
    /// The installed version `name@version`.
    pub fn get(&self, name: &str, version: &str) -> Option<&Installed> {
        self.modules.get(name)?.versions.get(version)
    }

    /// The module `name`, if installed.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.get(name)
    }

    /// The module `name`, for changes.
    pub fn module_mut(&mut self, name: &str) -> Option<&mut Module> {
        self.modules.get_mut(name)
    }

    /// The default version of `name`.
    pub fn active(&self, name: &str) -> Option<&Installed> {
        self.modules.get(name)?.default_version()
    }

    /// The module other than `except` whose route is exactly `route`.
    pub fn route_owner(&self, route: &Route, except: &str) -> Option<&str> {
        self.modules
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .find(|(_, module)| {
                module.default_version().is_some_and(|v| {
                    v.record.route.host == route.host && v.record.route.prefix() == route.prefix()
                })
            })
            .map(|(name, _)| name.as_str())
    }

    /// Adds a version; when it is active, the module's other versions become inactive.
    pub fn insert(&mut self, installed: Installed) {
        let module = self
            .modules
            .entry(installed.record.name.clone())
            .or_default();
        if installed.record.active {
            for other in module.versions.values_mut() {
                other.record.active = false;
            }
        }
        module
            .versions
            .insert(installed.record.version.clone(), installed);
    }

    /// Restores a module's rules and history (at start-up).
    pub fn restore_meta(&mut self, name: &str, meta: ModuleMeta) -> Result<(), String> {
        let Some(module) = self.modules.get_mut(name) else {
            return Ok(());
        };
        module.previous_default = meta.previous_default;
        if !meta.rules.rules.is_empty() || !meta.rules.traffic_units.is_empty() {
            let compiled = CompiledRules::compile(&meta.rules, &module.loaded_versions())?;
            module.compiled = Some(Arc::new(compiled));
        }
        module.rules = meta.rules;
        Ok(())
    }

    /// Removes one version, or all versions when `version` is `None`.
    pub fn remove(&mut self, name: &str, version: Option<&str>) -> Vec<Installed> {
        let Some(module) = self.modules.get_mut(name) else {
            return Vec::new();
        };
        let removed = match version {
            Some(v) => module.versions.remove(v).into_iter().collect(),
            None => std::mem::take(&mut module.versions).into_values().collect(),
        };
        if module.versions.is_empty() {
            self.modules.remove(name);
        }
        removed
    }

    /// Infos of every version (of `name` only, when given).
    pub fn infos(&self, name: Option<&str>) -> Vec<ModuleInfo> {
        self.modules
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .flat_map(|(_, module)| module.versions.values().map(Installed::info))
            .collect()
    }

    /// The log rings of `name`'s versions (only `version`, when given).
    pub fn logs(&self, name: &str, version: Option<&str>) -> Vec<Arc<ModuleLogs>> {
        self.modules.get(name).map_or_else(Vec::new, |module| {
            module
                .versions
                .values()
                .filter(|v| version.is_none_or(|want| want == v.record.version))
                .map(|v| v.stats.logs.clone())
                .collect()
        })
    }

    /// Every loaded version: (name, version, module).
    pub fn loaded(&self) -> impl Iterator<Item = (&str, &str, &LoadedModule)> {
        self.modules.iter().flat_map(|(name, module)| {
            module.versions.iter().filter_map(move |(version, v)| {
                Some((name.as_str(), version.as_str(), v.module.as_ref()?))
            })
        })
    }

    /// Number of installed versions.
    pub fn len(&self) -> usize {
        self.modules.values().map(|m| m.versions.len()).sum()
    }

    /// Names of installed modules.
    pub fn names(&self) -> Vec<&str> {
        self.modules.keys().map(String::as_str).collect()
    }

    /// The routing snapshot: each module's default version, plus the
    /// versions its rules can choose and every loaded one (for pins).
    pub fn route_table(&self) -> RouteTable {
        RouteTable::new(self.modules.iter().filter_map(|(name, module)| {
            let default = module.default_version()?;
            let target = |v: &Installed| {
                let label = v.record.key();
                Some(Target {
                    label_header: http::HeaderValue::from_str(&label).ok(),
                    label: Arc::from(label),
                    module: v.module.clone()?,
                    stats: v.stats.clone(),
                })
            };
            let rules = module.compiled.as_ref().and_then(|compiled| {
                let targets = compiled
                    .versions()
                    .iter()
                    .map(|version| module.versions.get(version).and_then(target))
                    .collect::<Option<Vec<_>>>()?;
                Some(Rules {
                    compiled: compiled.clone(),
                    targets,
                })
            });
            let versions = module.versions.values().filter_map(target).collect();
            Some((
                name.clone(),
                default.record.route.clone(),
                target(default)?,
                rules,
                versions,
            ))
        }))
    }
}
