//! [`Base`]: the public facade of a base. It wires the three parts that do
//! the work and forwards to them:
//!
//! - the [`Lifecycle`] (validate → prepare → commit; the only writer of the
//!   installed set and its redb records);
//! - the [`Dispatcher`] (the route snapshot, dispatch, module calls);
//! - the [`Instrumentation`] (metrics, logs, spans, response headers).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use berth_api::{
    Health, InstallRequest, InstallResponse, ModuleList, SwitchResponse, TrafficRules,
    UninstallResponse,
};
use berth_runtime::Runtime;
use bytes::Bytes;

use crate::admission::Admission;
use crate::config::BaseConfig;
use crate::dispatcher::Dispatcher;
use crate::error::{BaseError, OpsError};
use crate::instrument::Instrumentation;
use crate::lifecycle::{Lifecycle, find_module, no_such_version};
use crate::metrics::Metrics;
use crate::otlp::Exporter;
use crate::router::RouteTable;
use crate::state::StateStore;

/// A base: runtime, installed set and routes. Cheap to clone.
#[derive(Clone)]
pub struct Base {
    inner: Arc<Inner>,
}

struct Inner {
    config: BaseConfig,
    runtime: Runtime,
    lifecycle: Lifecycle,
    admission: Admission,
    dispatcher: Arc<Dispatcher>,
    instrumentation: Arc<Instrumentation>,
    started: Instant,
    ingress_addr: OnceLock<std::net::SocketAddr>,
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
        let sources = crate::source::Sources::new(&config)?;
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
        let instrumentation = Arc::new(Instrumentation::new(
            metrics,
            otlp,
            config.version_header,
            config.observability,
        ));
        let dispatcher = Dispatcher::new(instrumentation.clone(), config.gateway_secret.clone());
        let lifecycle = Lifecycle::new(
            runtime.clone(),
            store,
            sources,
            config.trust_keys.clone(),
            instrumentation.clone(),
            dispatcher.clone(),
        );
        let admission = Admission::new(config.max_pending_installs);
        let base = Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                lifecycle,
                admission,
                dispatcher,
                instrumentation,
                started: Instant::now(),
                ingress_addr: OnceLock::new(),
            }),
        };
        base.inner.lifecycle.restore().await;
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

    /// The connection limits of both listeners.
    pub(crate) fn listener_limits(&self) -> crate::listener::Limits {
        let max_connections = self.inner.config.max_connections.max(1);
        crate::listener::Limits {
            max_connections,
            connections: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            header_read_timeout: self.inner.config.header_read_timeout,
            tls: self.inner.config.tls.clone(),
        }
    }

    /// The current routing snapshot (what the ingress uses per request).
    pub fn routes(&self) -> Arc<RouteTable> {
        self.inner.dispatcher.routes()
    }

    /// The dispatcher requests go through.
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    /// The span exporter, when an OTLP endpoint is configured.
    pub(crate) fn otlp(&self) -> Option<&Exporter> {
        self.inner.instrumentation.otlp.as_ref()
    }

    pub(crate) fn set_ingress_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.inner.ingress_addr.set(addr);
    }

    /// Installs one version of a module; `upload` is the artifact when it came
    /// as the request body. Unless `activate` is false, the new version
    /// becomes the module's default.
    pub async fn install(
        &self,
        request: InstallRequest,
        upload: Option<Bytes>,
    ) -> Result<InstallResponse, OpsError> {
        let _admitted = self.inner.admission.admit().await?;
        self.inner.lifecycle.install(request, upload).await
    }

    /// Compiles the artifact of `digest` into the cache without installing
    /// it, so that a later install of it is a cache hit; `Ok(false)` when it
    /// was cached already.
    pub async fn warm(
        &self,
        artifact: berth_api::ArtifactSource,
        digest: berth_runtime::Digest,
    ) -> Result<bool, OpsError> {
        self.inner.lifecycle.warm(artifact, digest).await
    }

    /// Uninstalls one version of `name`, or all of them. A version the
    /// module's traffic rules still send traffic to is refused. When the
    /// default version goes, the newest remaining loaded version becomes the
    /// default.
    pub async fn uninstall(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<UninstallResponse, OpsError> {
        self.inner.lifecycle.uninstall(name, version).await
    }

    /// Makes `version` the default of `name`, atomically: requests already
    /// running finish on the version they started on, new ones go to
    /// `version`. The old default stays installed, ready for a rollback.
    pub async fn switch(&self, name: &str, version: &str) -> Result<SwitchResponse, OpsError> {
        self.inner.lifecycle.switch(name, version).await
    }

    /// Switches `name` back to the default it had before the last switch.
    pub async fn rollback(&self, name: &str) -> Result<SwitchResponse, OpsError> {
        self.inner.lifecycle.rollback(name).await
    }

    /// The traffic rules of `name`.
    pub fn rules(&self, name: &str) -> Result<TrafficRules, OpsError> {
        let registry = self.inner.lifecycle.registry();
        Ok(find_module(&registry, name)?.rules.clone())
    }

    /// Replaces the traffic rules of `name`, whole. An invalid set is refused
    /// naming the offending rule; the rules in force then stay as they were.
    pub async fn set_rules(
        &self,
        name: &str,
        rules: TrafficRules,
    ) -> Result<TrafficRules, OpsError> {
        self.inner.lifecycle.set_rules(name, rules).await
    }

    /// Every installed version, or those of `name`.
    pub fn list(&self, name: Option<&str>) -> Result<ModuleList, OpsError> {
        let registry = self.inner.lifecycle.registry();
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
            let registry = self.inner.lifecycle.registry();
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
        self.inner.instrumentation.logs.subscribe()
    }

    /// The Prometheus text exposition of this base's metrics.
    pub fn metrics_text(&self) -> String {
        let versions: Vec<crate::metrics::VersionState> = {
            let registry = self.inner.lifecycle.registry();
            registry
                .loaded()
                .map(|(name, version, module)| crate::metrics::VersionState {
                    module: name.to_string(),
                    version: version.to_string(),
                    memory_bytes: module.memory_in_use(),
                    cpu_seconds: module.cpu_time().as_secs_f64(),
                    long_requests: module.long_requests(),
                    tier: module.tier().as_str(),
                })
                .collect()
        };
        self.inner
            .instrumentation
            .metrics
            .encode(versions, self.inner.runtime.pool_stats())
    }

    /// Liveness and a summary.
    pub fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.inner.started.elapsed().as_secs_f64(),
            modules: self.inner.lifecycle.registry().len(),
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
