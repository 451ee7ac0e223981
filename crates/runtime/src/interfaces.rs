//! The built-in capabilities: `berth:base` config, kv and log (`wit/base.wit`).
//!
//! They are what a base shares with its modules on purpose (SOFAArk's
//! shared beans), written as [`Capability`] plug-ins like any a base team
//! adds. Every call is scoped by what [`Capability::configure`] built from
//! the module's settings, never by an argument the guest passes: a module
//! reads only its own config, reaches only its own kv namespace, and its log
//! lines carry its name, version and request id.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Capability, InstanceContext};
use crate::host::HostState;
use crate::kv::KvStore;
use crate::logs::{LogLine, LogSink, LogSource};
use crate::settings::ModuleSettings;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "berth:base/host",
});

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

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        berth::base::config::add_to_linker::<HostState, HasSelf<ConfigData>>(linker, |s| {
            s.capability::<ConfigData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> Result<Self::Module, String> {
        Ok(Arc::new(module.config.clone()))
    }

    fn prepare(&self, module: &Self::Module, _: &InstanceContext<'_>) -> ConfigData {
        ConfigData(module.clone())
    }
}

impl berth::base::config::Host for ConfigData {
    fn get(&mut self, key: String) -> Option<String> {
        self.0.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// `berth:base/kv`: a durable key-value namespace per module, in the
/// base's redb file (`None`: calls fail, saying the base has no store).
pub struct KvCapability(pub Option<KvStore>);

/// One instance's kv: the store and its module's namespace.
pub struct KvData {
    store: Option<KvStore>,
    namespace: Arc<str>,
}

impl KvData {
    fn store(&self) -> Result<&KvStore, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "this base runs without a key-value store".to_string())
    }
}

impl Capability for KvCapability {
    type Module = Arc<str>;
    type Instance = KvData;

    fn name(&self) -> &str {
        "berth:base/kv"
    }

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        berth::base::kv::add_to_linker::<HostState, HasSelf<KvData>>(linker, |s| {
            s.capability::<KvData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> Result<Arc<str>, String> {
        Ok(module.name.as_str().into())
    }

    fn prepare(&self, module: &Arc<str>, _: &InstanceContext<'_>) -> KvData {
        KvData {
            store: self.0.clone(),
            namespace: module.clone(),
        }
    }
}

impl berth::base::kv::Host for KvData {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.store()?.get(&self.namespace, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.store()?.set(&self.namespace, &key, &value)
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        self.store()?.delete(&self.namespace, &key)
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, String> {
        self.store()?.increment(&self.namespace, &key, delta)
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, String> {
        self.store()?.list_keys(&self.namespace, &prefix)
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

    fn init(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        berth::base::log::add_to_linker::<HostState, HasSelf<LogData>>(linker, |s| {
            s.capability::<LogData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> Result<Self::Module, String> {
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
    fn log(&mut self, level: Level, message: String) {
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
    }
}
