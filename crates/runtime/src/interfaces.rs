//! The `berth:base` host interfaces (`wit/base.wit`): config, kv and log.
//!
//! They are what a base shares with its modules on purpose (SOFAArk's
//! shared beans). Every call is scoped by the instance's
//! [`ModuleSettings`](crate::ModuleSettings), never by an argument the guest
//! passes: a module reads only its own config, reaches only its own kv
//! namespace, and its log lines carry its name, version and request id.

use wasmtime::component::{HasSelf, Linker};

use crate::host::HostState;
use crate::logs::{LogLine, LogSource};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "berth:base/host",
});

use berth::base::log::Level;

/// Adds the `berth:base` interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    berth::base::config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    berth::base::kv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    berth::base::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

impl berth::base::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.config.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.settings
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl HostState {
    fn kv_store(&self) -> Result<&crate::kv::KvStore, String> {
        self.kv
            .as_ref()
            .ok_or_else(|| "this base runs without a key-value store".to_string())
    }
}

impl berth::base::kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.kv_store()?.get(&self.settings.name, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.kv_store()?.set(&self.settings.name, &key, &value)
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        self.kv_store()?.delete(&self.settings.name, &key)
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, String> {
        self.kv_store()?.increment(&self.settings.name, &key, delta)
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, String> {
        self.kv_store()?.list_keys(&self.settings.name, &prefix)
    }
}

impl berth::base::log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if let Some(sink) = &self.log_sink {
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
                request_id: self
                    .context
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
        }
        let module = &*self.settings.name;
        let version = &*self.settings.version;
        let request_id = self
            .context
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
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
