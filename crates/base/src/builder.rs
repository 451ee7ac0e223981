//! [`BaseBuilder`]: berth as a library for base teams.
//!
//! A base team builds its own base binary around [`Base`], adding the
//! capabilities it shares with its modules (a SQL pool, a message bus
//! client) through the same [`Capability`] trait the built-in
//! `berth:base` config, kv and log use:
//!
//! ```no_run
//! # async fn run(my_capability: impl berth_runtime::Capability) -> Result<(), berth_base::BaseError> {
//! let running = berth_base::Base::builder()
//!     .data_dir("/var/lib/my-base")
//!     .capability(my_capability)
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The builder only assembles a [`BaseConfig`]; opening and serving are
//! [`Base::open`] and [`Base::start`], so a custom base behaves exactly like
//! `berth base`: same ops API, same controller agent, and it reports the
//! interfaces its capabilities add in health, the module list and its
//! heartbeats (the controller places modules importing them only on it).

use std::path::PathBuf;

use berth_runtime::Capability;

use crate::base::Base;
use crate::config::BaseConfig;
use crate::error::BaseError;
use crate::server::RunningBase;

/// Assembles a base with capabilities of the team's own; see the module docs.
#[must_use]
pub struct BaseBuilder {
    config: BaseConfig,
}

impl Base {
    /// A builder with [`BaseConfig::new`] defaults in `./berth-data`.
    pub fn builder() -> BaseBuilder {
        BaseBuilder {
            config: BaseConfig::new("berth-data"),
        }
    }
}

impl BaseBuilder {
    /// Starts from `config` (capabilities added so far are kept, and those
    /// already in `config` too).
    pub fn config(mut self, mut config: BaseConfig) -> Self {
        let added = std::mem::take(&mut self.config.runtime.capabilities);
        for c in added.iter() {
            config.runtime.capabilities.add(c.clone());
        }
        self.config = config;
        self
    }

    /// Keeps state, cache and key-value store in `dir` (the runtime's paths
    /// follow it).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.config.runtime.cache_dir = dir.join("cache");
        self.config.runtime.kv_path = dir.join("kv.redb");
        self.config.data_dir = dir;
        self
    }

    /// Shares `capability` with modules; one named like a built-in
    /// (`berth:base/kv`, …) replaces it.
    pub fn capability(mut self, capability: impl Capability) -> Self {
        self.config.runtime.capabilities =
            std::mem::take(&mut self.config.runtime.capabilities).with(capability);
        self
    }

    /// Changes any other setting.
    pub fn tweak(mut self, tweak: impl FnOnce(&mut BaseConfig)) -> Self {
        tweak(&mut self.config);
        self
    }

    /// The assembled settings.
    pub fn into_config(self) -> BaseConfig {
        self.config
    }

    /// Opens the base ([`Base::open`]): runtime, capabilities, and the
    /// recorded modules reinstalled; no listener bound.
    pub async fn build(self) -> Result<Base, BaseError> {
        Base::open(self.config).await
    }

    /// Opens the base and serves it ([`Base::start`]): ingress, ops API and,
    /// when configured, the controller agent.
    pub async fn start(self) -> Result<RunningBase, BaseError> {
        Base::start(self.config).await
    }
}
