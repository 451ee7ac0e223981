//! [`Base`]: the installed set, the routing table and the install/uninstall
//! logic the ops API calls.
//!
//! An install runs in three steps so that it never blocks serving and a bad
//! artifact never disturbs what runs:
//!
//! 1. *check*: validate the request, fail fast on a route or version clash;
//! 2. *prepare* (no lock held): fetch the bytes, verify the digest, compile
//!    or map from cache, link — on a blocking thread;
//! 3. *commit* (under the registry lock, no awaits): re-check clashes, write
//!    the records to redb, then swap in a new routing table.
//!
//! Requests in flight keep the `LoadedModule` they started with, so an
//! uninstalled or replaced version is freed when its last request finishes.

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_api::{
    ArtifactSource, CacheOutcome, Health, InstallRequest, InstallResponse, ModuleInfo, ModuleList,
    Route, SwitchResponse, TrafficRules, UninstallResponse,
};
use berth_runtime::{Digest, Runtime};
use bytes::Bytes;

use crate::config::BaseConfig;
use crate::error::{BaseError, OpsError};
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::otlp::Exporter;
use crate::registry::{Installed, Module, Registry};
use crate::router::{self, RouteTable};
use crate::rules::CompiledRules;
use crate::source::Source;
use crate::state::{InstallRecord, StateStore};

/// A base: runtime, installed set and routes. Cheap to clone.
#[derive(Clone)]
pub struct Base {
    inner: Arc<Inner>,
}

struct Inner {
    config: BaseConfig,
    runtime: Runtime,
    store: StateStore,
    registry: Mutex<Registry>,
    routes: RwLock<Arc<RouteTable>>,
    http: reqwest::Client,
    started: Instant,
    ingress_addr: OnceLock<std::net::SocketAddr>,
    metrics: Metrics,
    logs: LogHub,
    otlp: Option<Exporter>,
}

impl Base {
    /// Opens the data directory, starts the runtime and reinstalls every
    /// recorded module from the compile cache. Listeners are not bound here;
    /// see [`Base::start`].
    pub async fn open(config: BaseConfig) -> Result<Self, BaseError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| BaseError::DataDir {
            path: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let store = StateStore::open(&config.data_dir)?;
        let runtime = Runtime::new(config.runtime.clone())?;
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("berth-base/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BaseError::DataDir {
                path: config.data_dir.display().to_string(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let metrics = Metrics::new();
        let otlp = match &config.otlp_endpoint {
            Some(endpoint) => Some(
                Exporter::start(
                    endpoint,
                    config.controller.as_ref().map(|link| link.name.as_str()),
                    metrics.otlp_counters(),
                )
                .map_err(BaseError::Otlp)?,
            ),
            None => None,
        };
        let base = Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                store,
                registry: Mutex::default(),
                routes: RwLock::default(),
                http,
                started: Instant::now(),
                metrics,
                logs: LogHub::default(),
                otlp,
                ingress_addr: OnceLock::new(),
            }),
        };
        base.restore().await;
        Ok(base)
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The settings.
    pub fn config(&self) -> &BaseConfig {
        &self.inner.config
    }

    /// The current routing snapshot (what the ingress uses per request).
    pub fn routes(&self) -> Arc<RouteTable> {
        self.inner.routes.read().expect("routes lock").clone()
    }

    /// The span exporter, when an OTLP endpoint is configured.
    pub(crate) fn otlp(&self) -> Option<&Exporter> {
        self.inner.otlp.as_ref()
    }

    pub(crate) fn set_ingress_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.inner.ingress_addr.set(addr);
    }

    /// Reloads every recorded version; one that fails stays listed as `failed`.
    async fn restore(&self) {
        let records = match self.inner.store.load_all() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the installed set; starting empty");
                return;
            }
        };
        let started = Instant::now();
        let count = records.len();
        let runtime = self.inner.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            records
                .into_iter()
                .map(|record| {
                    let result = record
                        .digest
                        .parse::<Digest>()
                        .map_err(|e| e.to_string())
                        .and_then(|d| runtime.load(d, None).map_err(|e| e.to_string()))
                        .and_then(|(module, outcome)| {
                            let settings = record.settings(runtime.config().limits);
                            module
                                .with_settings(settings)
                                .map(|module| (module, outcome))
                                .map_err(|e| e.to_string())
                        });
                    (record, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("restore task");
        let mut registry = self.inner.registry.lock().expect("registry lock");
        for (record, result) in loaded {
            if let Err(error) = &result {
                tracing::error!(module = %record.key(), %error, "cannot reinstall module");
            }
            registry.insert(Installed::new(
                record,
                result.map(|(module, _)| module),
                &self.inner.metrics,
                &self.inner.logs,
                self.inner.config.observability,
            ));
        }
        match self.inner.store.load_meta() {
            Ok(metas) => {
                for (name, meta) in metas {
                    if let Err(error) = registry.restore_meta(&name, meta) {
                        tracing::error!(module = %name, %error, "traffic rules no longer apply; serving the default version only");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read traffic rules; serving default versions only")
            }
        }
        self.publish(&registry);
        tracing::info!(
            modules = count,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "reinstalled recorded modules"
        );
    }

    /// Swaps in the routing table for `registry`.
    fn publish(&self, registry: &Registry) {
        *self.inner.routes.write().expect("routes lock") = Arc::new(registry.route_table());
    }

    /// Installs one version of a module; `upload` is the artifact when it came
    /// as the request body. Unless `activate` is false, the new version
    /// becomes the module's default.
    pub async fn install(
        &self,
        request: InstallRequest,
        upload: Option<Bytes>,
    ) -> Result<InstallResponse, OpsError> {
        let result = self.install_inner(request, upload).await;
        if result.is_err() {
            self.inner.metrics.install(Err(()));
        }
        result
    }

    async fn install_inner(
        &self,
        request: InstallRequest,
        upload: Option<Bytes>,
    ) -> Result<InstallResponse, OpsError> {
        let started = Instant::now();
        validate_name(&request.name)?;
        validate_version(&request.version)?;
        let expected = request
            .digest
            .as_deref()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| OpsError::InvalidRequest(format!("digest: {e}")))
            })
            .transpose()?;
        let source = match (request.artifact, upload) {
            (Some(_), Some(_)) => {
                return Err(OpsError::InvalidRequest(
                    "give the artifact either as `artifact` or as the uploaded body, not both"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(OpsError::InvalidRequest(
                    "no artifact: set `artifact` to {\"path\": …} or {\"url\": …}, or upload the .wasm \
                     as the body with Content-Type: application/wasm"
                        .into(),
                ));
            }
            (Some(ArtifactSource::Path(p)), None) => Source::Path(p),
            (Some(ArtifactSource::Url(u)), None) => Source::Url(u),
            (None, Some(bytes)) => Source::Upload(bytes),
        };
        let name = request.name;
        let version = request.version;
        let wants_default = request.activate.unwrap_or(true);
        let (limits, allowed_hosts, config) = (
            request.limits.unwrap_or_default(),
            request.allowed_hosts,
            request.config,
        );
        validate_limits(&limits)?;
        let route = {
            let registry = self.inner.registry.lock().expect("registry lock");
            let current = registry.active(&name).map(|a| a.record.route.clone());
            let route = match request.route {
                Some(route) => router::normalize(route).map_err(OpsError::InvalidRequest)?,
                None => current.clone().unwrap_or_else(|| Route {
                    host: None,
                    path_prefix: Some(format!("/{name}")),
                }),
            };
            if !wants_default && current.as_ref().is_some_and(|c| *c != route) {
                return Err(OpsError::InvalidRequest(format!(
                    "route `{route}` differs from `{name}`'s route; a version installed with activate=false \
                     serves the module's route: drop `route`, or install with activate=true"
                )));
            }
            check_route(&registry, &name, &route)?;
            route
        };

        // Prepare: nothing below holds a lock or touches what serves.
        let source_desc = source.describe();
        let bytes = source
            .fetch(&self.inner.http, self.inner.config.max_artifact_bytes)
            .await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(OpsError::DigestMismatch {
                source_desc,
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        if let Some(existing) = self.unchanged(&name, &version, digest)? {
            return Ok(InstallResponse {
                module: existing,
                unchanged: true,
            });
        }
        let runtime = self.inner.runtime.clone();
        let size_bytes = bytes.len() as u64;
        let (module, outcome) =
            tokio::task::spawn_blocking(move || runtime.load(digest, Some(&bytes)))
                .await
                .expect("load task")?;

        // Commit.
        let mut registry = self.inner.registry.lock().expect("registry lock");
        check_route(&registry, &name, &route)?;
        if let Some(existing) = registry.get(&name, &version) {
            return version_clash(existing, digest);
        }
        // The first version of a module is its default whatever was asked.
        let previous = registry.active(&name).map(|a| a.record.clone());
        let activate = wants_default || previous.is_none();
        let record = InstallRecord {
            name: name.clone(),
            version: version.clone(),
            digest: digest.to_string(),
            route,
            active: activate,
            installed_at_ms: unix_ms(),
            install_duration_ms: started.elapsed().as_secs_f64() * 1e3,
            compile_cache: match outcome {
                berth_runtime::CacheOutcome::Hit => CacheOutcome::Hit,
                berth_runtime::CacheOutcome::Miss => CacheOutcome::Miss,
            },
            size_bytes,
            limits,
            allowed_hosts,
            config,
        };
        let module = module.with_settings(record.settings(self.inner.runtime.config().limits))?;
        match previous.filter(|_| activate) {
            Some(previous) => {
                let module = registry
                    .module_mut(&name)
                    .expect("a module with a default exists");
                let mut meta = module.meta();
                meta.previous_default = Some(previous.version.clone());
                let demoted = InstallRecord {
                    active: false,
                    ..previous
                };
                self.inner.store.apply_with_meta(
                    &[&demoted, &record],
                    &[],
                    Some((&name, Some(&meta))),
                )?;
                module.previous_default = meta.previous_default;
            }
            None => self.inner.store.apply(&[&record], &[])?,
        }
        let installed = Installed::new(
            record,
            Ok(module),
            &self.inner.metrics,
            &self.inner.logs,
            self.inner.config.observability,
        );
        self.inner.metrics.install(Ok((
            started.elapsed(),
            outcome == berth_runtime::CacheOutcome::Hit,
        )));
        let info = installed.info();
        registry.insert(installed);
        self.publish(&registry);
        tracing::info!(
            module = %format!("{name}@{version}"),
            %digest,
            route = %info.route,
            cache = ?outcome,
            ms = info.install_duration_ms,
            "installed module"
        );
        Ok(InstallResponse {
            module: info,
            unchanged: false,
        })
    }

    /// `Some(info)` when `name@version` is installed with `digest` already.
    fn unchanged(
        &self,
        name: &str,
        version: &str,
        digest: Digest,
    ) -> Result<Option<ModuleInfo>, OpsError> {
        let registry = self.inner.registry.lock().expect("registry lock");
        match registry.get(name, version) {
            None => Ok(None),
            Some(existing) => version_clash(existing, digest).map(|r| Some(r.module)),
        }
    }

    /// Uninstalls one version of `name`, or all of them. A version the
    /// module's traffic rules still send traffic to is refused. When the
    /// default version goes and others stay, the most recently installed one
    /// becomes the default.
    pub async fn uninstall(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<UninstallResponse, OpsError> {
        let mut registry = self.inner.registry.lock().expect("registry lock");
        let module = find_module(&registry, name)?;
        let (removed_keys, promote, meta) = match version {
            None => (
                module
                    .versions
                    .values()
                    .map(|v| v.record.key())
                    .collect::<Vec<_>>(),
                None,
                Some((name, None)),
            ),
            Some(v) => {
                let Some(gone) = module.versions.get(v) else {
                    return Err(no_such_version(name, module, v));
                };
                if let Some(user) = rule_using(&module.rules, v) {
                    return Err(OpsError::VersionInUse(format!(
                        "`{name}@{v}` still gets traffic from {user}; change the rules first \
                         (PUT /v1/modules/{name}/rules, or `berth rules set`), then uninstall it"
                    )));
                }
                // If the default goes, promote the newest remaining version.
                let promote = gone
                    .record
                    .active
                    .then(|| {
                        module
                            .versions
                            .values()
                            .filter(|other| other.record.version != v && other.module.is_some())
                            .max_by_key(|other| other.record.installed_at_ms)
                            .map(|other| InstallRecord {
                                active: true,
                                route: gone.record.route.clone(),
                                ..other.record.clone()
                            })
                    })
                    .flatten();
                (vec![gone.record.key()], promote, None)
            }
        };
        let mut meta_after = module.meta();
        if version.is_some() && meta_after.previous_default.as_deref() == version {
            meta_after.previous_default = None;
        }
        let meta = meta.or(Some((name, Some(&meta_after))));
        self.inner.store.apply_with_meta(
            &promote.iter().collect::<Vec<_>>(),
            &removed_keys,
            meta,
        )?;
        let removed = registry.remove(name, version);
        if let Some(module) = registry.module_mut(name) {
            module.previous_default = meta_after.previous_default.clone();
            if let Some(p) = &promote {
                module.set_default(&p.version);
                if let Some(entry) = module.versions.get_mut(&p.version) {
                    entry.record.route = p.route.clone();
                }
            }
        }
        self.publish(&registry);
        drop(registry);
        for gone in &removed {
            self.inner.metrics.remove_version(&gone.stats.metrics);
        }
        let removed: Vec<ModuleInfo> = removed.iter().map(Installed::info).collect();
        for info in &removed {
            tracing::info!(module = %format!("{}@{}", info.name, info.version), "uninstalled module");
        }
        Ok(UninstallResponse { removed })
    }

    /// Makes `version` the default of `name`, atomically: requests already
    /// running finish on the version they started on, new ones go to
    /// `version`. The old default stays installed, ready for a rollback.
    pub async fn switch(&self, name: &str, version: &str) -> Result<SwitchResponse, OpsError> {
        let mut registry = self.inner.registry.lock().expect("registry lock");
        let module = find_module(&registry, name)?;
        let Some(target) = module.versions.get(version) else {
            return Err(no_such_version(name, module, version));
        };
        if let Some(error) = &target.error {
            return Err(OpsError::VersionInUse(format!(
                "`{name}@{version}` could not be loaded ({error}); reinstall it before switching to it"
            )));
        }
        let Some(old) = module.default_version().map(|d| d.record.clone()) else {
            return Err(OpsError::NotFound(format!(
                "module `{name}` has no default version"
            )));
        };
        if old.version == version {
            return Ok(SwitchResponse {
                name: name.into(),
                previous: old.version.clone(),
                current: old.version,
            });
        }
        // The module keeps its route; the new default takes it over.
        let promoted = InstallRecord {
            active: true,
            route: old.route.clone(),
            ..target.record.clone()
        };
        let demoted = InstallRecord {
            active: false,
            ..old.clone()
        };
        let mut meta = module.meta();
        meta.previous_default = Some(old.version.clone());
        self.inner
            .store
            .apply_with_meta(&[&demoted, &promoted], &[], Some((name, Some(&meta))))?;
        let module = registry.module_mut(name).expect("checked above");
        module.set_default(version);
        module.previous_default = meta.previous_default;
        if let Some(entry) = module.versions.get_mut(version) {
            entry.record.route = promoted.route;
        }
        self.publish(&registry);
        tracing::info!(module = %name, from = %old.version, to = %version, "switched default version");
        Ok(SwitchResponse {
            name: name.into(),
            previous: old.version,
            current: version.into(),
        })
    }

    /// Switches `name` back to the default it had before the last switch.
    pub async fn rollback(&self, name: &str) -> Result<SwitchResponse, OpsError> {
        let previous = {
            let registry = self.inner.registry.lock().expect("registry lock");
            let module = find_module(&registry, name)?;
            module
                .previous_default
                .clone()
                .filter(|v| module.versions.contains_key(v))
                .ok_or_else(|| {
                    OpsError::NothingToRollBack(format!(
                        "`{name}` has no previous default version installed to roll back to; \
                         install one and `switch` to it instead"
                    ))
                })?
        };
        self.switch(name, &previous).await
    }

    /// The traffic rules of `name`.
    pub fn rules(&self, name: &str) -> Result<TrafficRules, OpsError> {
        let registry = self.inner.registry.lock().expect("registry lock");
        Ok(find_module(&registry, name)?.rules.clone())
    }

    /// Replaces the traffic rules of `name`, whole. An invalid set is refused
    /// naming the offending rule; the rules in force then stay as they were.
    pub async fn set_rules(
        &self,
        name: &str,
        rules: TrafficRules,
    ) -> Result<TrafficRules, OpsError> {
        let mut registry = self.inner.registry.lock().expect("registry lock");
        let module = find_module(&registry, name)?;
        let compiled = if rules.rules.is_empty() && rules.traffic_units.is_empty() {
            None
        } else {
            let compiled =
                CompiledRules::compile(&rules, &module.loaded_versions()).map_err(|e| {
                    OpsError::InvalidRules(format!(
                        "rules for `{name}` refused, the old ones stay: {e}"
                    ))
                })?;
            Some(Arc::new(compiled))
        };
        let mut meta = module.meta();
        meta.rules = rules.clone();
        self.inner
            .store
            .apply_with_meta(&[], &[], Some((name, Some(&meta))))?;
        let module = registry.module_mut(name).expect("checked above");
        module.rules = rules.clone();
        module.compiled = compiled;
        self.publish(&registry);
        tracing::info!(module = %name, rules = rules.rules.len(), units = rules.traffic_units.len(), "set traffic rules");
        Ok(rules)
    }

    /// Every installed version, or those of `name`.
    pub fn list(&self, name: Option<&str>) -> Result<ModuleList, OpsError> {
        let registry = self.inner.registry.lock().expect("registry lock");
        let modules = registry.infos(name);
        if let Some(name) = name
            && modules.is_empty()
        {
            return Err(OpsError::NotFound(format!(
                "no module named `{name}` is installed"
            )));
        }
        Ok(ModuleList {
            modules,
            capabilities: self.inner.runtime.interfaces(),
        })
    }

    /// The lines module `name` (one `version`, or all) wrote since `since`,
    /// oldest first, from its bounded ring.
    pub fn logs(
        &self,
        name: &str,
        version: Option<&str>,
        since: Option<std::time::SystemTime>,
    ) -> Result<Vec<berth_api::LogEntry>, OpsError> {
        let rings = {
            let registry = self.inner.registry.lock().expect("registry lock");
            let module = find_module(&registry, name)?;
            if let Some(v) = version
                && !module.versions.contains_key(v)
            {
                return Err(no_such_version(name, module, v));
            }
            registry.logs(name, version)
        };
        let mut lines: Vec<_> = rings.iter().flat_map(|ring| ring.lines(since)).collect();
        lines.sort_by_key(|(at, _)| *at);
        Ok(lines.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Every line any module writes from now on.
    pub fn follow_logs(
        &self,
    ) -> tokio::sync::broadcast::Receiver<
        std::sync::Arc<(std::time::SystemTime, berth_api::LogEntry)>,
    > {
        self.inner.logs.subscribe()
    }

    /// The Prometheus text exposition of this base's metrics.
    pub fn metrics_text(&self) -> String {
        let memory: Vec<(String, String, u64)> = {
            let registry = self.inner.registry.lock().expect("registry lock");
            registry
                .loaded()
                .map(|(name, version, module)| {
                    (
                        name.to_string(),
                        version.to_string(),
                        module.memory_in_use(),
                    )
                })
                .collect()
        };
        self.inner.metrics.encode(memory)
    }

    /// Liveness and a summary.
    pub fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.inner.started.elapsed().as_secs_f64(),
            modules: self.inner.registry.lock().expect("registry lock").len(),
            ingress: self
                .inner
                .ingress_addr
                .get()
                .map(ToString::to_string)
                .unwrap_or_default(),
            capabilities: self.inner.runtime.interfaces(),
        }
    }
}

fn find_module<'r>(registry: &'r Registry, name: &str) -> Result<&'r Module, OpsError> {
    registry.module(name).ok_or_else(|| {
        let installed = registry.names();
        OpsError::NotFound(format!(
            "no module named `{name}` is installed{}",
            if installed.is_empty() {
                String::from(" (this base has no modules)")
            } else {
                format!("; installed modules: {}", installed.join(", "))
            }
        ))
    })
}

fn no_such_version(name: &str, module: &Module, version: &str) -> OpsError {
    OpsError::NotFound(format!(
        "module `{name}` has no version `{version}`; installed versions: {}",
        module
            .versions
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The first rule (or traffic unit) of `rules` that sends traffic to `version`.
fn rule_using(rules: &TrafficRules, version: &str) -> Option<String> {
    for (i, rule) in rules.rules.iter().enumerate() {
        let uses = rule.version.as_deref() == Some(version)
            || rule
                .split
                .iter()
                .flatten()
                .any(|w| w.version == version && w.weight > 0);
        if uses {
            return Some(match &rule.name {
                Some(n) => format!("rule #{} \"{n}\"", i + 1),
                None => format!("rule #{}", i + 1),
            });
        }
    }
    rules
        .traffic_units
        .iter()
        .find(|(_, v)| *v == version)
        .map(|(unit, _)| format!("traffic unit `{unit}`"))
}

fn check_route(registry: &Registry, name: &str, route: &Route) -> Result<(), OpsError> {
    match registry.route_owner(route, name) {
        Some(owner) => Err(OpsError::RouteConflict(format!(
            "route `{route}` is already served by module `{owner}`; choose another route.pathPrefix \
             or route.host for `{name}`, or uninstall `{owner}` first"
        ))),
        None => Ok(()),
    }
}

/// Same name and version installed: fine if the bytes are the same.
fn version_clash(existing: &Installed, digest: Digest) -> Result<InstallResponse, OpsError> {
    if existing.record.digest == digest.to_string() {
        Ok(InstallResponse {
            module: existing.info(),
            unchanged: true,
        })
    } else {
        Err(OpsError::VersionConflict(format!(
            "`{}` is already installed with digest {}, and these bytes are {digest}; versions are immutable: \
             give the new build a new version, or uninstall `{}` first",
            existing.record.key(),
            existing.record.digest,
            existing.record.key(),
        )))
    }
}

fn validate_limits(limits: &berth_api::Limits) -> Result<(), OpsError> {
    let zero = [
        ("memoryMib", limits.memory_mib == Some(0)),
        ("timeoutMs", limits.timeout_ms == Some(0)),
        ("maxConcurrency", limits.max_concurrency == Some(0)),
    ];
    match zero.iter().find(|(_, is_zero)| *is_zero) {
        Some((field, _)) => Err(OpsError::InvalidRequest(format!(
            "limits.{field} must be at least 1; leave it out to take the base's default"
        ))),
        None => Ok(()),
    }
}

fn validate_name(name: &str) -> Result<(), OpsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(OpsError::InvalidRequest(format!(
            "name `{name}` is not a module name: use 1-63 lowercase letters, digits and `-`, \
             starting and ending with a letter or digit (e.g. `orders`)"
        )))
    }
}

fn validate_version(version: &str) -> Result<(), OpsError> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
    if ok {
        Ok(())
    } else {
        Err(OpsError::InvalidRequest(format!(
            "version `{version}` is not a version: use 1-64 letters, digits, `.`, `-`, `+` or `_` (e.g. `1.4.0`)"
        )))
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
