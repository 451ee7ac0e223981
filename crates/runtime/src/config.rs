//! Runtime settings, with defaults that suit one base on one machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::capability::Capabilities;
use crate::settings::Limits;
use crate::tier::{TierUpGate, Tiers};

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of the module cache (artifacts and precompiled code).
    pub cache_dir: PathBuf,
    /// Use wasmtime's pooling allocator (pre-reserved instance slots: fast
    /// instantiation, copy-on-write memory images). On by default.
    pub pooling: bool,
    /// Concurrent instances across all modules (pool slots). Requests beyond
    /// it get 503 until a slot frees. With [`Tiers::WinchThenCranelift`]
    /// each tier's engine has a pool of this size (modules on Winch code use
    /// the one, modules on Cranelift's the other).
    pub max_instances: u32,
    /// Limits of modules installed without their own (and the ceiling of
    /// the pool's per-instance memory).
    pub limits: Limits,
    /// The key-value database behind `berth:base/kv`.
    pub kv_path: PathBuf,
    /// How much of a freed linear memory (and table) the pool keeps resident,
    /// zeroed with `memset` instead of returned with `madvise`. Default 0:
    /// a pool slot keeps what it was given for as long as the pool lives, so
    /// anything above 0 turns into resident memory that uninstalling a
    /// module does not give back (measured: 69 → 139 MB over 500 install /
    /// uninstall cycles with 1 MiB, 39 → 40 MB with 0; see
    /// `crates/cli/tests/all/reclaim.rs`), for a throughput gain measured in
    /// `bench/README.md`.
    pub memory_keep_resident: usize,
    /// Capabilities a base team adds to the built-in `berth:base` config,
    /// kv and log ([`crate::capability`]); one named like a built-in
    /// replaces it.
    pub capabilities: Capabilities,
    /// Which compilers make a module's code: Winch first and Cranelift in
    /// the background (default), or Cranelift only.
    pub tiers: Tiers,
    /// Test support: every Winch compile fails, so modules take the
    /// Cranelift fallback. Off by default.
    pub force_winch_failure: bool,
    /// Test support: background Cranelift compiles wait until this gate
    /// opens (unset: they start at once).
    pub tier_up_gate: Option<Arc<TierUpGate>>,
}

impl RuntimeConfig {
    /// Defaults with the cache in `<data_dir>/cache` and the key-value
    /// store in `<data_dir>/kv.redb`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            cache_dir: data_dir.join("cache"),
            kv_path: data_dir.join("kv.redb"),
            pooling: true,
            max_instances: 1000,
            limits: Limits::default(),
            memory_keep_resident: 0,
            capabilities: Capabilities::new(),
            tiers: Tiers::default(),
            force_winch_failure: false,
            tier_up_gate: None,
        }
    }
}

/// How often the epoch ticks: the granularity of CPU deadlines, and how often
/// a busy guest yields its tokio worker thread to other requests.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
