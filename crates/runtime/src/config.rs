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
    /// Bytes of a freed instance's linear memory the pool keeps resident
    /// and resets in place for the next instance (with `pagemap_scan`, only
    /// the pages the instance really wrote), instead of returning them with
    /// `madvise` and faulting them in again. Default 64 MiB (a Python or
    /// JavaScript hello writes MiBs, a Rust hello 20 KiB, and a slot keeps
    /// only what was written). See [`crate::pool`] for the bound and the
    /// trade.
    pub memory_keep_resident: usize,
    /// The same for a freed instance's tables. Default 64 KiB.
    pub table_keep_resident: usize,
    /// Find the pages a freed instance wrote with Linux's `PAGEMAP_SCAN`
    /// (kernel ≥ 6.7) and reset only those; ignored where unsupported. On
    /// by default.
    pub pagemap_scan: bool,
    /// Freed pool slots the allocator keeps warm (with their resident
    /// pages) for modules that used them before it recycles the least
    /// recently used one; see [`crate::pool`]. Default 16.
    pub max_unused_warm_slots: u32,
    /// Capabilities a base team adds to the built-in `berth:base` config,
    /// kv and log ([`crate::capability`]); one named like a built-in
    /// replaces it.
    pub capabilities: Capabilities,
    /// Which compilers make a module's code: Winch first and Cranelift in
    /// the background (default), Cranelift only, or Winch only.
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
            memory_keep_resident: crate::pool::DEFAULT_MEMORY_KEEP_RESIDENT,
            table_keep_resident: crate::pool::DEFAULT_TABLE_KEEP_RESIDENT,
            pagemap_scan: true,
            max_unused_warm_slots: crate::pool::DEFAULT_MAX_UNUSED_WARM_SLOTS,
            capabilities: Capabilities::new(),
            tiers: Tiers::default(),
            force_winch_failure: false,
            tier_up_gate: None,
        }
    }
}

/// How often the epoch ticks: the granularity of CPU deadlines, and the
/// quantum after which a busy guest yields its tokio worker thread to other
/// requests (an async yield, not a trap). 1 ms: a neighbour's short request
/// waits about one quantum per busy guest ahead of it on its worker, not ten.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);
