//! The lifecycle: the only writer of the installed set.
//!
//! Every change runs *validate → prepare → commit*, so that it never blocks
//! serving and a bad artifact never disturbs what runs:
//!
//! 1. *validate*: check the request, fail fast on a route or version clash;
//! 2. *prepare* (no lock held): fetch the bytes, verify the digest, compile
//!    or map from cache, link — on a blocking thread;
//! 3. *commit*: under the writer lock (a `tokio` mutex, so writers queue
//!    without blocking a worker thread), re-check clashes, write the records
//!    to redb on a blocking thread, then change the in-memory set and hand
//!    the dispatcher a new route snapshot.
//!
//! The in-memory [`Registry`] sits behind a `std` mutex that is only ever
//! held for a few lines of plain code, never across an `.await`.
//! [`Change::set_default`] and [`apply_default`] are the one place where a
//! module's default version changes: install, switch, rollback and the
//! promotion after an uninstall all go through them.
//!
//! Requests in flight keep the `LoadedModule` they started with, so an
//! uninstalled or replaced version is freed when its last request finishes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_api::{
    ArtifactSource, CacheOutcome, InstallRequest, InstallResponse, ModuleInfo, ModuleName,
    ModuleRef, Route, SwitchResponse, TrafficRules, UninstallResponse, Version,
};
use berth_runtime::{Digest, LoadedModule, Runtime};
use bytes::Bytes;

use crate::dispatcher::Dispatcher;
use crate::error::OpsError;
use crate::instrument::Instrumentation;
use crate::registry::{Installed, Module, Registry};
use crate::router;
use crate::rules::CompiledRules;
use crate::source::{Source, Sources};
use crate::state::{InstallRecord, ModuleMeta, StateStore};

/// Owns the installed set: validates, prepares and commits every change.
pub(crate) struct Lifecycle {
    runtime: Runtime,
    store: Arc<StateStore>,
    registry: Mutex<Registry>,
    /// Serialises writers across their awaits (prepare runs outside it).
    writer: tokio::sync::Mutex<()>,
    sources: Sources,
    trust_keys: berth_runtime::TrustKeys,
    instrumentation: Arc<Instrumentation>,
    dispatcher: Arc<Dispatcher>,
}

/// One change of the persisted set, written in one redb transaction.
#[derive(Default)]
struct Change {
    put: Vec<InstallRecord>,
    delete: Vec<String>,
    /// Set (`Some`) or delete (`None`) the meta of the named module.
    meta: Option<(String, Option<ModuleMeta>)>,
}

impl Change {
    /// The default-version step: `promote` becomes the default of its module
    /// and takes over `route`; `demote`, the old default when it stays
    /// installed, turns inactive and becomes the previous default (what a
    /// rollback returns to). `meta` is the module's meta before the change.
    fn set_default(
        mut meta: ModuleMeta,
        promote: &InstallRecord,
        route: &Route,
        demote: Option<&InstallRecord>,
    ) -> Self {
        let mut put = Vec::with_capacity(2);
        if let Some(old) = demote {
            meta.previous_default = Some(old.version.clone());
            put.push(InstallRecord {
                active: false,
                ..old.clone()
            });
        }
        put.push(InstallRecord {
            active: true,
            route: route.clone(),
            ..promote.clone()
        });
        Self {
            put,
            delete: Vec::new(),
            meta: Some((promote.name.clone(), Some(meta))),
        }
    }

    /// The module's meta as this change leaves it, if it sets one.
    fn meta_after(&self) -> Option<&ModuleMeta> {
        self.meta.as_ref().and_then(|(_, meta)| meta.as_ref())
    }
}

/// The in-memory half of [`Change::set_default`]: `version` serves `name`'s
/// `route` as its default, `previous_default` is what a rollback returns to.
fn apply_default(
    registry: &mut Registry,
    name: &str,
    version: &str,
    route: &Route,
    previous_default: Option<String>,
) {
    if let Some(module) = registry.module_mut(name) {
        module.set_default(version);
        module.previous_default = previous_default;
        if let Some(entry) = module.versions.get_mut(version) {
            entry.record.route = route.clone();
        }
    }
}

/// An install request that passed validation.
struct Checked {
    name: String,
    version: String,
    expected: Option<Digest>,
    wants_default: bool,
    route: Route,
    limits: berth_api::Limits,
    allowed_hosts: Vec<String>,
    config: std::collections::BTreeMap<String, String>,
    /// The detached signature sent with the request, if any.
    signature: Option<String>,
}

/// An install whose code is compiled and linked, ready to commit.
struct Prepared {
    checked: Checked,
    digest: Digest,
    module: LoadedModule,
    outcome: berth_runtime::CacheOutcome,
    size_bytes: u64,
}

impl Lifecycle {
    /// A lifecycle over `store`, publishing routes to `dispatcher`.
    pub(crate) fn new(
        runtime: Runtime,
        store: StateStore,
        sources: Sources,
        trust_keys: berth_runtime::TrustKeys,
        instrumentation: Arc<Instrumentation>,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        Self {
            runtime,
            store: Arc::new(store),
            registry: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
            sources,
            trust_keys,
            instrumentation,
            dispatcher,
        }
    }

    /// The installed set, for reading (hold it briefly, never across an await).
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock")
    }

    /// Hands the dispatcher the routing table for `registry`.
    fn publish(&self, registry: &Registry) {
        self.dispatcher.publish(registry.route_table());
    }

    /// Writes `change` in one transaction, on a blocking thread. `op`
    /// names the operation for the test failpoints around the write
    /// (`<op>:before-persist`, `<op>:persisted`; see
    /// [`berth_runtime::failpoint`]).
    async fn persist(&self, op: &str, change: &Change) -> Result<(), OpsError> {
        berth_runtime::failpoint::hit(&format!("{op}:before-persist"));
        let result = self.write(change).await;
        berth_runtime::failpoint::hit(&format!("{op}:persisted"));
        result
    }

    async fn write(&self, change: &Change) -> Result<(), OpsError> {
        let store = self.store.clone();
        let put = change.put.clone();
        let delete = change.delete.clone();
        let meta = change.meta.clone();
        tokio::task::spawn_blocking(move || {
            store.apply_with_meta(
                &put.iter().collect::<Vec<_>>(),
                &delete,
                meta.as_ref()
                    .map(|(name, meta)| (name.as_str(), meta.as_ref())),
            )
        })
        .await
        .map_err(|e| OpsError::Store(format!("the commit task failed: {e}")))?
    }

    /// Reloads every recorded version; one that fails stays listed as `failed`.
    pub(crate) async fn restore(&self) {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || (store.load_all(), store.load_meta()))
            .await
            .expect("restore read task");
        let (records, metas) = match read {
            (Ok(records), metas) => (records, metas),
            (Err(e), _) => {
                tracing::error!(error = %e, "cannot read the installed set; starting empty");
                return;
            }
        };
        let started = Instant::now();
        let count = records.len();
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            records
                .into_iter()
                .map(|record| {
                    let result = record
                        .digest
                        .parse::<Digest>()
                        .map_err(|e| e.to_string())
                        .and_then(|d| runtime.load(d, None).map_err(|e| e.to_string()))
                        .and_then(|(module, _)| {
                            let settings = record.settings(runtime.config().limits);
                            module.with_settings(settings).map_err(|e| e.to_string())
                        });
                    (record, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("restore task");
        let mut registry = self.registry();
        for (record, result) in loaded {
            if let Err(error) = &result {
                tracing::error!(module = %record.key(), %error, "cannot reinstall module");
            }
            registry.insert(self.instrumentation.installed(record, result));
        }
        match metas {
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

    /// Installs one version of a module (see [`crate::Base::install`]).
    pub(crate) async fn install(
        &self,
        request: InstallRequest,
        upload: Option<Bytes>,
    ) -> Result<InstallResponse, OpsError> {
        let started = Instant::now();
        let result = async {
            let (checked, source) = self.validate(request, upload)?;
            match self.prepare(checked, source).await? {
                Ok(prepared) => self.commit_install(prepared, started).await,
                Err(unchanged) => Ok(unchanged),
            }
        }
        .await;
        if result.is_err() {
            self.instrumentation.metrics.install(Err(()));
        }
        result
    }

    /// Step 1: the request is well formed and clashes with nothing.
    fn validate(
        &self,
        request: InstallRequest,
        upload: Option<Bytes>,
    ) -> Result<(Checked, Source), OpsError> {
        ModuleName::parse(&request.name).map_err(|e| OpsError::InvalidRequest(e.to_string()))?;
        Version::parse(&request.version).map_err(|e| OpsError::InvalidRequest(e.to_string()))?;
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
                    "no artifact: give the artifact's path or URL, or upload the file: \
                     `berth deploy FILE.wasm`"
                        .into(),
                ));
            }
            (Some(ArtifactSource::Path(p)), None) => Source::Path(p),
            (Some(ArtifactSource::Url(u)), None) => Source::Url(u),
            (None, Some(bytes)) => Source::Upload(bytes),
        };
        let name = request.name;
        let wants_default = request.activate.unwrap_or(true);
        let limits = request.limits.unwrap_or_default();
        validate_limits(&limits)?;
        let route = {
            let registry = self.registry();
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
                    "route `{route}` differs from `{name}`'s route; a version deployed with \
                     `berth deploy --no-activate` serves the module's route: drop the route, \
                     or deploy it as the default"
                )));
            }
            check_route(&registry, &name, &route)?;
            route
        };
        let checked = Checked {
            name,
            version: request.version,
            expected,
            wants_default,
            route,
            limits,
            allowed_hosts: request.allowed_hosts,
            config: request.config,
            signature: request.signature,
        };
        Ok((checked, source))
    }

    /// Fetches `artifact`, checks it is `digest` and compiles it into the
    /// runtime's cache without installing anything (a buffer base warming
    /// the code of a deployment it may be given). `Ok(false)` when the code
    /// was cached already.
    pub(crate) async fn warm(
        &self,
        artifact: ArtifactSource,
        digest: Digest,
    ) -> Result<bool, OpsError> {
        if self.runtime.cache().has_compiled(&digest) {
            return Ok(false);
        }
        let source = match artifact {
            ArtifactSource::Path(p) => Source::Path(p),
            ArtifactSource::Url(u) => Source::Url(u),
        };
        let source_desc = source.describe();
        // The same checks as an install: the allowed sources, the digest and,
        // where keys are trusted, the signature (nothing unsigned is compiled).
        let enforced = self.trust_keys.is_enforced();
        let fetched = self.sources.fetch(source, enforced).await?;
        let bytes = fetched.bytes;
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(OpsError::DigestMismatch {
                source_desc,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        self.trust_keys
            .check(&digest, fetched.signature.as_deref(), &source_desc, "base")?;
        let runtime = self.runtime.clone();
        let outcome = tokio::task::spawn_blocking(move || runtime.precompile(digest, &bytes))
            .await
            .expect("precompile task")?;
        let compiled = outcome == berth_runtime::CacheOutcome::Miss;
        self.instrumentation.metrics.warmed(compiled);
        Ok(compiled)
    }

    /// Step 2, no lock held: fetch, verify, compile (or map from cache) and
    /// link. `Err(response)` when these exact bytes are installed already.
    async fn prepare(
        &self,
        checked: Checked,
        source: Source,
    ) -> Result<Result<Prepared, InstallResponse>, OpsError> {
        let source_desc = source.describe();
        let enforced = self.trust_keys.is_enforced();
        let fetched = self.sources.fetch(source, enforced).await?;
        let bytes = fetched.bytes;
        berth_runtime::failpoint::hit("install:fetched");
        let digest = Digest::of(&bytes);
        if let Some(expected) = checked.expected
            && expected != digest
        {
            return Err(OpsError::DigestMismatch {
                source_desc,
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        // A signature given with the request wins over one found beside the artifact.
        let signature = checked.signature.clone().or(fetched.signature);
        self.trust_keys
            .check(&digest, signature.as_deref(), &source_desc, "base")?;
        if let Some(existing) = self
            .registry()
            .get(&checked.name, &checked.version)
            .map(|existing| version_clash(existing, digest))
        {
            return existing.map(Err);
        }
        let runtime = self.runtime.clone();
        let size_bytes = bytes.len() as u64;
        let (module, outcome) =
            tokio::task::spawn_blocking(move || runtime.load(digest, Some(bytes)))
                .await
                .expect("load task")?;
        berth_runtime::failpoint::hit("install:compiled");
        Ok(Ok(Prepared {
            checked,
            digest,
            module,
            outcome,
            size_bytes,
        }))
    }

    /// Step 3: re-check under the writer lock, persist, swap in.
    async fn commit_install(
        &self,
        prepared: Prepared,
        started: Instant,
    ) -> Result<InstallResponse, OpsError> {
        let Prepared {
            checked,
            digest,
            module,
            outcome,
            size_bytes,
        } = prepared;
        let Checked {
            name,
            version,
            route,
            wants_default,
            limits,
            allowed_hosts,
            config,
            ..
        } = checked;
        let _writer = self.writer.lock().await;
        let (record, change) = {
            let registry = self.registry();
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
            let change = match previous.filter(|_| activate) {
                Some(previous) => Change::set_default(
                    registry.module(&name).map(Module::meta).unwrap_or_default(),
                    &record,
                    &record.route,
                    Some(&previous),
                ),
                None => Change {
                    put: vec![record.clone()],
                    ..Change::default()
                },
            };
            (record, change)
        };
        let module = module.with_settings(record.settings(self.runtime.config().limits))?;
        self.persist("install", &change).await?;
        let installed = self.instrumentation.installed(record, Ok(module));
        self.instrumentation.metrics.install(Ok((
            started.elapsed(),
            outcome == berth_runtime::CacheOutcome::Hit,
        )));
        let info = installed.info();
        {
            let mut registry = self.registry();
            let route = installed.record.route.clone();
            let active = installed.record.active;
            registry.insert(installed);
            if active && let Some(meta) = change.meta_after() {
                apply_default(
                    &mut registry,
                    &name,
                    &version,
                    &route,
                    meta.previous_default.clone(),
                );
            }
            self.publish(&registry);
        }
        tracing::info!(
            module = %ModuleRef::label(&name, &version),
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

    /// Uninstalls one version of `name`, or all of them (see [`crate::Base::uninstall`]).
    pub(crate) async fn uninstall(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<UninstallResponse, OpsError> {
        let _writer = self.writer.lock().await;
        let (change, promote) = {
            let registry = self.registry();
            let module = find_module(&registry, name)?;
            match version {
                None => (
                    Change {
                        delete: module.versions.values().map(|v| v.record.key()).collect(),
                        meta: Some((name.to_string(), None)),
                        ..Change::default()
                    },
                    None,
                ),
                Some(v) => {
                    let Some(gone) = module.versions.get(v) else {
                        return Err(no_such_version(name, module, v));
                    };
                    if let Some(user) = rule_using(&module.rules, v) {
                        return Err(OpsError::VersionInUse(format!(
                            "`{}` still gets traffic from {user}; change the rules first \
                             (`berth rules set {name}`), then uninstall it",
                            ModuleRef::label(name, v)
                        )));
                    }
                    let mut meta = module.meta();
                    if meta.previous_default.as_deref() == Some(v) {
                        meta.previous_default = None;
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
                        })
                        .flatten();
                    let mut change = match promote {
                        Some(promote) => {
                            Change::set_default(meta, &promote.record, &gone.record.route, None)
                        }
                        None => Change {
                            meta: Some((name.to_string(), Some(meta))),
                            ..Change::default()
                        },
                    };
                    change.delete.push(gone.record.key());
                    let promote =
                        promote.map(|p| (p.record.version.clone(), gone.record.route.clone()));
                    (change, promote)
                }
            }
        };
        self.persist("uninstall", &change).await?;
        let removed = {
            let mut registry = self.registry();
            let removed = registry.remove(name, version);
            let previous_default = change.meta_after().and_then(|m| m.previous_default.clone());
            match &promote {
                Some((promoted, route)) => {
                    apply_default(&mut registry, name, promoted, route, previous_default)
                }
                None => {
                    if let Some(module) = registry.module_mut(name) {
                        module.previous_default = previous_default;
                    }
                }
            }
            self.publish(&registry);
            removed
        };
        for gone in &removed {
            // Warm instances (`pooled`) go with their version, even while
            // a request still holds a clone of it.
            if let Some(module) = &gone.module {
                module.discard_instances();
            }
            self.instrumentation
                .metrics
                .remove_version(&gone.stats.metrics);
        }
        let removed: Vec<ModuleInfo> = removed.iter().map(Installed::info).collect();
        for info in &removed {
            tracing::info!(module = %ModuleRef::label(&info.name, &info.version), "uninstalled module");
        }
        Ok(UninstallResponse { removed })
    }

    /// Makes `version` the default of `name` (see [`crate::Base::switch`]).
    pub(crate) async fn switch(
        &self,
        name: &str,
        version: &str,
    ) -> Result<SwitchResponse, OpsError> {
        let _writer = self.writer.lock().await;
        self.switch_locked(name, version).await
    }

    /// [`Lifecycle::switch`] with the writer lock already held.
    async fn switch_locked(&self, name: &str, version: &str) -> Result<SwitchResponse, OpsError> {
        let (old, change) = {
            let registry = self.registry();
            let module = find_module(&registry, name)?;
            let Some(target) = module.versions.get(version) else {
                return Err(no_such_version(name, module, version));
            };
            if let Some(error) = &target.error {
                return Err(OpsError::VersionInUse(format!(
                    "`{}` could not be loaded ({error}); reinstall it before switching to it",
                    ModuleRef::label(name, version)
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
            let change = Change::set_default(module.meta(), &target.record, &old.route, Some(&old));
            (old, change)
        };
        self.persist("switch", &change).await?;
        {
            let mut registry = self.registry();
            let previous_default = change.meta_after().and_then(|m| m.previous_default.clone());
            apply_default(&mut registry, name, version, &old.route, previous_default);
            // A switch discards the warm instances (`pooled`) of both
            // versions: none carries state across a change of version.
            if let Some(module) = registry.module(name) {
                for v in [old.version.as_str(), version] {
                    if let Some(loaded) = module.versions.get(v).and_then(|e| e.module.as_ref()) {
                        loaded.discard_instances();
                    }
                }
            }
            self.publish(&registry);
        }
        tracing::info!(module = %name, from = %old.version, to = %version, "switched default version");
        Ok(SwitchResponse {
            name: name.into(),
            previous: old.version,
            current: version.into(),
        })
    }

    /// Switches `name` back to the default it had before the last switch.
    pub(crate) async fn rollback(&self, name: &str) -> Result<SwitchResponse, OpsError> {
        let _writer = self.writer.lock().await;
        let previous = {
            let registry = self.registry();
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
        self.switch_locked(name, &previous).await
    }

    /// Replaces the traffic rules of `name` (see [`crate::Base::set_rules`]).
    pub(crate) async fn set_rules(
        &self,
        name: &str,
        rules: TrafficRules,
    ) -> Result<TrafficRules, OpsError> {
        let _writer = self.writer.lock().await;
        let (compiled, change) = {
            let registry = self.registry();
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
            let change = Change {
                meta: Some((name.to_string(), Some(meta))),
                ..Change::default()
            };
            (compiled, change)
        };
        self.persist("rules", &change).await?;
        {
            let mut registry = self.registry();
            if let Some(module) = registry.module_mut(name) {
                module.rules = rules.clone();
                module.compiled = compiled;
            }
            self.publish(&registry);
        }
        tracing::info!(module = %name, rules = rules.rules.len(), units = rules.traffic_units.len(), "set traffic rules");
        Ok(rules)
    }
}

/// The module `name`, or a not-found error naming what is installed.
pub(crate) fn find_module<'r>(registry: &'r Registry, name: &str) -> Result<&'r Module, OpsError> {
    registry
        .module(name)
        .ok_or_else(|| OpsError::ModuleNotFound {
            name: name.to_string(),
            installed: registry.names().into_iter().map(String::from).collect(),
        })
}

/// A not-found error naming the versions of `module` that are installed.
pub(crate) fn no_such_version(name: &str, module: &Module, version: &str) -> OpsError {
    OpsError::VersionNotFound {
        name: name.to_string(),
        version: version.to_string(),
        installed: module.versions.keys().cloned().collect(),
    }
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
        Some(owner) => Err(OpsError::RouteConflict {
            route: route.to_string(),
            owner: owner.to_string(),
            name: name.to_string(),
        }),
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
        Err(OpsError::VersionConflict {
            module: existing.record.key(),
            installed: existing.record.digest.clone(),
            given: digest.to_string(),
        })
    }
}

fn validate_limits(limits: &berth_api::Limits) -> Result<(), OpsError> {
    let zero = [
        ("memoryMib", limits.memory_mib == Some(0)),
        ("timeoutMs", limits.timeout_ms == Some(0)),
        ("maxConcurrency", limits.max_concurrency == Some(0)),
        ("cpuQueueWaitMs", limits.cpu_queue_wait_ms == Some(0)),
        (
            "policy.pooled.maxRequests",
            matches!(limits.policy, Some(berth_api::InstancePolicy::Pooled(p)) if p.max_requests == 0),
        ),
        (
            "policy.pooled.maxIdleMs",
            matches!(limits.policy, Some(berth_api::InstancePolicy::Pooled(p)) if p.max_idle_ms == 0),
        ),
    ];
    match zero.iter().find(|(_, is_zero)| *is_zero) {
        Some((field, _)) => Err(OpsError::InvalidRequest(format!(
            "limits.{field} must be at least 1; leave it out to take the base's default"
        ))),
        None => Ok(()),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
