//! The built-in capabilities: `berth:base` config, kv and log (`wit/base.wit`).
//!
//! They are what a base shares with its modules on purpose (SOFAArk's
//! shared beans), written as [`Capability`] plug-ins like any a base team
//! adds. Every call is scoped by what [`Capability::configure`] built from
//! the module's settings, never by an argument the guest passes: a module
//! reads only its own config, reaches only its own kv namespace, and its log
//! lines carry its name, version and request id.
//!
//! Host calls are async (`imports: { default: async | trappable }`): a kv
//! call awaits its [`KvBackend`] instead of committing on the worker thread
//! that runs the guest.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Capability, InstanceContext};
use crate::host::HostState;
use crate::kv::{KvBackend, KvError};
use crate::logs::{LogLine, LogSink, LogSource};
use crate::settings::ModuleSettings;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "berth:base/host",
    imports: { default: async | trappable },
});

/// The version of the `berth:base` WIT package (`wit/base.wit`).
pub const BASE_WIT_VERSION: &str = "0.1.0";

/// `berth:base/NAME@version`: what a module importing `NAME` imports.
fn base_interface(name: &str) -> Vec<String> {
    vec![format!("berth:base/{name}@{BASE_WIT_VERSION}")]
}

use berth::base::log::Level;

/// `berth:base/config`: the string values set at install.
pub struct ConfigCapability;

/// One instance's view of its module's config.
pub struct ConfigData(Arc<BTreeMap<String, String>>);

impl Capability for ConfigCapability {
    type Module = Arc<BTreeMap<String, String>>;
    type Instance = ConfigData;

    fn name(&self) -> &str {
        "berth:base/config"
    }

    fn interfaces(&self) -> Vec<String> {
        base_interface("config")
    }

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        berth::base::config::add_to_linker::<HostState, HasSelf<ConfigData>>(linker, |s| {
            s.capability::<ConfigData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Self::Module> {
        Ok(Arc::new(module.config.clone()))
    }

    fn prepare(&self, module: &Self::Module, _: &InstanceContext<'_>) -> ConfigData {
        ConfigData(module.clone())
    }
}

impl berth::base::config::Host for ConfigData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.0.get(&key).cloned())
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// `berth:base/kv`: a key-value namespace per module over a [`KvBackend`]
/// (the base's redb file by default; `None`: calls fail, saying the base
/// has no store).
pub struct KvCapability(Option<Arc<dyn KvBackend>>);

impl KvCapability {
    /// kv over `backend`: how a base team puts its own store behind the
    /// built-in interface (list it in the runtime's capabilities; it
    /// replaces the built-in by name).
    pub fn new(backend: Arc<dyn KvBackend>) -> Self {
        Self(Some(backend))
    }

    /// kv over `backend`, or failing every call when `None`.
    pub fn from_backend(backend: Option<Arc<dyn KvBackend>>) -> Self {
        Self(backend)
    }
}

/// One instance's kv: the backend and its module's namespace.
pub struct KvData {
    backend: Option<Arc<dyn KvBackend>>,
    namespace: Arc<str>,
}

impl KvData {
    fn backend(&self) -> Result<&dyn KvBackend, KvError> {
        self.backend.as_deref().ok_or(KvError::Unavailable)
    }
}

/// A kv result as the guest sees it: the error's message.
fn guest<T>(result: Result<T, KvError>) -> wasmtime::Result<Result<T, String>> {
    Ok(result.map_err(|e| e.to_string()))
}

impl Capability for KvCapability {
    type Module = Arc<str>;
    type Instance = KvData;

    fn name(&self) -> &str {
        "berth:base/kv"
    }

    fn interfaces(&self) -> Vec<String> {
        base_interface("kv")
    }

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        berth::base::kv::add_to_linker::<HostState, HasSelf<KvData>>(linker, |s| {
            s.capability::<KvData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Arc<str>> {
        Ok(module.name.as_str().into())
    }

    fn prepare(&self, module: &Arc<str>, _: &InstanceContext<'_>) -> KvData {
        KvData {
            backend: self.0.clone(),
            namespace: module.clone(),
        }
    }
}

impl berth::base::kv::Host for KvData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        guest(match self.backend() {
            Ok(b) => b.get(&self.namespace, &key).await,
            Err(e) => Err(e),
        })
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        guest(match self.backend() {
            Ok(b) => b.set(&self.namespace, &key, value).await,
            Err(e) => Err(e),
        })
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        guest(match self.backend() {
            Ok(b) => b.delete(&self.namespace, &key).await,
            Err(e) => Err(e),
        })
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, String>> {
        guest(match self.backend() {
            Ok(b) => b.increment(&self.namespace, &key, delta).await,
            Err(e) => Err(e),
        })
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, String>> {
        guest(match self.backend() {
            Ok(b) => b.list_keys(&self.namespace, &prefix).await,
            Err(e) => Err(e),
        })
    }
}

/// `berth:base/log`: structured lines, tagged with module, version and
/// request id, into the module's log ring and the base's own log.
pub struct LogCapability;

/// One instance's logger.
pub struct LogData {
    module: Arc<(String, String)>,
    sink: Option<Arc<dyn LogSink>>,
    request_id: Option<String>,
}

impl Capability for LogCapability {
    type Module = Arc<(String, String)>;
    type Instance = LogData;

    fn name(&self) -> &str {
        "berth:base/log"
    }

    fn interfaces(&self) -> Vec<String> {
        base_interface("log")
    }

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        berth::base::log::add_to_linker::<HostState, HasSelf<LogData>>(linker, |s| {
            s.capability::<LogData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Self::Module> {
        Ok(Arc::new((module.name.clone(), module.version.clone())))
    }

    fn prepare(&self, module: &Self::Module, instance: &InstanceContext<'_>) -> LogData {
        LogData {
            module: module.clone(),
            sink: instance.log_sink.cloned(),
            request_id: instance.request_id.map(str::to_owned),
        }
    }
}

impl berth::base::log::Host for LogData {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if let Some(sink) = &self.sink {
            let name = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            sink.line(LogLine {
                source: LogSource::Log(name),
                message: message.clone(),
                request_id: self.request_id.clone(),
            });
        }
        let (module, version) = (&*self.module.0, &*self.module.1);
        let request_id = self.request_id.as_deref().unwrap_or("-");
        match level {
            Level::Trace => {
                tracing::trace!(target: "berth::module", module, version, request_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "berth::module", module, version, request_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "berth::module", module, version, request_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "berth::module", module, version, request_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "berth::module", module, version, request_id, "{message}")
            }
        }
        Ok(())
    }
}
