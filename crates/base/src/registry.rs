//! The in-memory installed set: every module version, loaded or failed.
//!
//! A module (by name) has one or more installed versions; exactly one of them
//! is *active* and serves the module's route, the others are *inactive*
//! (kept, as Koupleless keeps deactivated biz versions, for a quick switch
//! back). The route belongs to the active version's record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use berth_api::{ModuleInfo, ModuleState, Route};
use berth_runtime::LoadedModule;

use crate::router::{RouteTable, Target};
use crate::state::InstallRecord;

/// Request counters of one installed version (since the base started).
#[derive(Debug, Default)]
pub struct VersionStats {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl VersionStats {
    /// Counts one request, and whether the module failed it.
    pub fn record(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

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
    /// A version that loaded (`Ok`) or could not be loaded (`Err(why)`).
    pub fn new(record: InstallRecord, module: Result<LoadedModule, String>) -> Self {
        let (module, error) = match module {
            Ok(module) => (Some(module), None),
            Err(error) => (None, Some(error)),
        };
        Self {
            record,
            stats: Arc::default(),
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
            size_bytes: r.size_bytes,
            requests: self.stats.requests.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            error: self.error.clone(),
        }
    }
}

/// name → version → installed version.
#[derive(Default)]
pub(crate) struct Registry {
    modules: BTreeMap<String, BTreeMap<String, Installed>>,
}

impl Registry {
    /// The installed version `name@version`.
    pub fn get(&self, name: &str, version: &str) -> Option<&Installed> {
        self.modules.get(name)?.get(version)
    }

    /// The versions of `name`, if installed.
    pub fn versions(&self, name: &str) -> Option<&BTreeMap<String, Installed>> {
        self.modules.get(name)
    }

    /// The active version of `name`.
    pub fn active(&self, name: &str) -> Option<&Installed> {
        self.modules.get(name)?.values().find(|v| v.record.active)
    }

    /// The module other than `except` whose active route is exactly `route`.
    pub fn route_owner(&self, route: &Route, except: &str) -> Option<&str> {
        self.modules
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .find(|(_, versions)| {
                versions.values().any(|v| {
                    v.record.active
                        && v.record.route.host == route.host
                        && v.record.route.prefix() == route.prefix()
                })
            })
            .map(|(name, _)| name.as_str())
    }

    /// Adds a version; when it is active, the module's other versions become inactive.
    pub fn insert(&mut self, installed: Installed) {
        let versions = self
            .modules
            .entry(installed.record.name.clone())
            .or_default();
        if installed.record.active {
            for other in versions.values_mut() {
                other.record.active = false;
            }
        }
        versions.insert(installed.record.version.clone(), installed);
    }

    /// Mutable access to one version (to flip `active`).
    pub fn get_mut(&mut self, name: &str, version: &str) -> Option<&mut Installed> {
        self.modules.get_mut(name)?.get_mut(version)
    }

    /// Removes one version, or all versions when `version` is `None`.
    pub fn remove(&mut self, name: &str, version: Option<&str>) -> Vec<Installed> {
        let Some(versions) = self.modules.get_mut(name) else {
            return Vec::new();
        };
        let removed = match version {
            Some(v) => versions.remove(v).into_iter().collect(),
            None => std::mem::take(versions).into_values().collect(),
        };
        if versions.is_empty() {
            self.modules.remove(name);
        }
        removed
    }

    /// Infos of every version (of `name` only, when given).
    pub fn infos(&self, name: Option<&str>) -> Vec<ModuleInfo> {
        self.modules
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .flat_map(|(_, versions)| versions.values().map(Installed::info))
            .collect()
    }

    /// Number of installed versions.
    pub fn len(&self) -> usize {
        self.modules.values().map(BTreeMap::len).sum()
    }

    /// Names of installed modules.
    pub fn names(&self) -> Vec<&str> {
        self.modules.keys().map(String::as_str).collect()
    }

    /// The routing snapshot: every active, loaded version.
    pub fn route_table(&self) -> RouteTable {
        RouteTable::new(self.modules.values().flat_map(|versions| {
            versions
                .values()
                .filter(|v| v.record.active)
                .filter_map(|v| {
                    let module = v.module.clone()?;
                    Some((
                        v.record.route.clone(),
                        Target {
                            label: Arc::from(v.record.key()),
                            module,
                            stats: v.stats.clone(),
                        },
                    ))
                })
        }))
    }
}
