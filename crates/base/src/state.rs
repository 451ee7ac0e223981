//! The installed set, persisted in `<data dir>/base.redb`.
//!
//! One redb table maps `name@version` to an [`InstallRecord`] (JSON). Every
//! ops change writes its records in one transaction *before* the in-memory
//! routing table changes, so what a restarted base reinstalls is exactly what
//! the ops API last reported. The artifacts themselves live in the runtime's
//! content-addressed cache; a record only names them by digest.

use std::path::Path;

use std::collections::BTreeMap;

use berth_api::{CacheOutcome, Limits, Route, TrafficRules};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{BaseError, OpsError};

const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("module_meta");

/// Per-module state besides the versions: traffic rules and switch history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleMeta {
    /// The module's traffic rules.
    #[serde(default)]
    pub rules: TrafficRules,
    /// The default before the last switch.
    #[serde(default)]
    pub previous_default: Option<String>,
}

/// One installed module version as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallRecord {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    /// The module's route when this version was installed.
    pub route: Route,
    /// Whether this version is the one serving the route.
    pub active: bool,
    /// Install time, milliseconds since the Unix epoch.
    pub installed_at_ms: u64,
    /// How long the original install took, ms.
    pub install_duration_ms: f64,
    /// Whether the original install hit the compile cache.
    pub compile_cache: CacheOutcome,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Limits asked for at install (unset fields: the base's defaults at load).
    #[serde(default)]
    pub limits: Limits,
    /// Outgoing HTTP grants.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Config values.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl InstallRecord {
    /// The settings this version runs under: its own limits over `defaults`.
    pub fn settings(&self, defaults: berth_runtime::Limits) -> berth_runtime::ModuleSettings {
        let l = &self.limits;
        berth_runtime::ModuleSettings {
            name: self.name.clone(),
            version: self.version.clone(),
            limits: berth_runtime::Limits {
                max_memory_bytes: l
                    .memory_mib
                    .map_or(defaults.max_memory_bytes, |m| (m as usize) << 20),
                timeout: l
                    .timeout_ms
                    .map_or(defaults.timeout, std::time::Duration::from_millis),
                max_concurrency: l.max_concurrency.unwrap_or(defaults.max_concurrency),
                max_request_bytes: l.max_request_bytes.unwrap_or(defaults.max_request_bytes),
                max_response_bytes: l.max_response_bytes.unwrap_or(defaults.max_response_bytes),
                cpu_millis: l.cpu.map(|c| c.millis).or(defaults.cpu_millis),
                cpu_queue_wait: l
                    .cpu_queue_wait_ms
                    .map_or(defaults.cpu_queue_wait, std::time::Duration::from_millis),
            },
            allowed_hosts: self.allowed_hosts.clone(),
            config: self.config.clone(),
            policy: match l.policy.unwrap_or_default() {
                berth_api::InstancePolicy::Fresh => berth_runtime::InstancePolicy::Fresh,
                berth_api::InstancePolicy::Pooled(p) => berth_runtime::InstancePolicy::Pooled {
                    max_requests: p.max_requests,
                    max_idle: std::time::Duration::from_millis(p.max_idle_ms),
                },
            },
        }
    }

    /// The database key, `name@version`.
    pub fn key(&self) -> String {
        berth_api::ModuleRef::label(&self.name, &self.version)
    }
}

/// The redb-backed installed set.
pub struct StateStore {
    db: Database,
}

impl StateStore {
    /// Opens (creating if needed) `<data_dir>/base.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, BaseError> {
        let path = data_dir.join("base.redb");
        let db = Database::create(&path).map_err(|e| BaseError::DataDir {
            path: data_dir.display().to_string(),
            reason: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "base.redb is open in another process: another base uses this data directory; \
                     stop it or pass a different --data-dir"
                        .to_string()
                }
                other => format!("cannot open {}: {other}", path.display()),
            },
        })?;
        let tx = db.begin_write().map_err(|e| store_err(e.into()))?;
        tx.open_table(MODULES).map_err(|e| store_err(e.into()))?;
        tx.open_table(META).map_err(|e| store_err(e.into()))?;
        tx.commit().map_err(|e| store_err(e.into()))?;
        Ok(Self { db })
    }

    /// Every record, ordered by key.
    pub fn load_all(&self) -> Result<Vec<InstallRecord>, OpsError> {
        let tx = self.db.begin_read().map_err(redb::Error::from)?;
        let table = tx.open_table(MODULES).map_err(redb::Error::from)?;
        let mut records = Vec::new();
        for item in table.iter().map_err(redb::Error::from)? {
            let (key, value) = item.map_err(redb::Error::from)?;
            match serde_json::from_slice::<InstallRecord>(value.value()) {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::error!(key = key.value(), error = %e, "skipping unreadable install record")
                }
            }
        }
        Ok(records)
    }

    /// Every module's meta, by module name.
    pub fn load_meta(&self) -> Result<Vec<(String, ModuleMeta)>, OpsError> {
        let tx = self.db.begin_read().map_err(redb::Error::from)?;
        let table = tx.open_table(META).map_err(redb::Error::from)?;
        let mut metas = Vec::new();
        for item in table.iter().map_err(redb::Error::from)? {
            let (key, value) = item.map_err(redb::Error::from)?;
            match serde_json::from_slice::<ModuleMeta>(value.value()) {
                Ok(meta) => metas.push((key.value().to_string(), meta)),
                Err(e) => {
                    tracing::error!(module = key.value(), error = %e, "skipping unreadable module rules")
                }
            }
        }
        Ok(metas)
    }

    /// Writes `put` and removes `delete` (keys) in one transaction.
    pub fn apply(&self, put: &[&InstallRecord], delete: &[String]) -> Result<(), OpsError> {
        self.apply_with_meta(put, delete, None)
    }

    /// Like [`StateStore::apply`], also setting (`Some(meta)`) or deleting
    /// (`None`) the meta of module `name`.
    pub fn apply_with_meta(
        &self,
        put: &[&InstallRecord],
        delete: &[String],
        meta: Option<(&str, Option<&ModuleMeta>)>,
    ) -> Result<(), OpsError> {
        let tx = self.db.begin_write().map_err(redb::Error::from)?;
        if let Some((name, meta)) = meta {
            let mut table = tx.open_table(META).map_err(redb::Error::from)?;
            match meta {
                Some(meta) => {
                    let json = serde_json::to_vec(meta).expect("meta serializes");
                    table
                        .insert(name, json.as_slice())
                        .map_err(redb::Error::from)?;
                }
                None => {
                    table.remove(name).map_err(redb::Error::from)?;
                }
            }
        }
        {
            let mut table = tx.open_table(MODULES).map_err(redb::Error::from)?;
            for record in put {
                let json = serde_json::to_vec(record).expect("records serialize");
                table
                    .insert(record.key().as_str(), json.as_slice())
                    .map_err(redb::Error::from)?;
            }
            for key in delete {
                table.remove(key.as_str()).map_err(redb::Error::from)?;
            }
        }
        tx.commit().map_err(redb::Error::from)?;
        Ok(())
    }
}

fn store_err(e: redb::Error) -> BaseError {
    BaseError::DataDir {
        path: "base.redb".into(),
        reason: e.to_string(),
    }
}
