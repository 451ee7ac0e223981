//! How the pooling allocator resets memory between instances, and what it
//! keeps resident: the settings of wasmtime's [`PoolingAllocationConfig`]
//! and the [`PoolStats`] the base shows in `/metrics`.
//!
//! # Memory reset
//!
//! Every request runs in a fresh instance, so every request frees a
//! linear memory. wasmtime's default resets a freed memory with `madvise`:
//! the pages go back to the kernel, and the next instance faults them in
//! again (a copy-on-write fault per page the guest writes, each flushing
//! TLBs on the other cores). Profiled at ~11k requests/s, `madvise` alone
//! took 19% of the CPU and guest page faults another 17% (issue #16).
//!
//! So the pool keeps up to [`RuntimeConfig::memory_keep_resident`] bytes
//! of each freed memory (and [`RuntimeConfig::table_keep_resident`] of each
//! table) resident and resets them in place. With
//! [`RuntimeConfig::pagemap_scan`] the reset asks the kernel (`PAGEMAP_SCAN`,
//! Linux ≥ 6.7) which pages the instance really wrote and restores only
//! those; without it, it would `memset` the whole kept range every time.
//! With the scan, what a slot keeps is what its last instance wrote, up
//! to the keep-resident bytes, so the default memory budget is large
//! (64 MiB) and costs a small module nothing: a Rust hello's slot keeps
//! the 20 KiB (5 pages) it writes, and its instances run without a fault
//! or an `madvise`. Heavy components (Python, JavaScript) write MiBs per
//! instance, scattered over hundreds of runs of pages; with 64 MiB kept
//! their hellos serve 3.6× and 6.5× a tuned `wasmtime serve`
//! (`bench/README.md`), where 64 KiB left them at 0.73× and 0.53×. That
//! needs the patched wasmtime in `vendor/wasmtime`: upstream's scan stops
//! after 32 runs and decommits the rest, so the next instance faulted most
//! of an interpreter's heap in again, with a TLB shootdown per page; the
//! patched scan resumes until the budget is spent. Tables keep 64 KiB.
//!
//! A module that is uninstalled gives its kept pages back at once: when
//! its last reference goes, wasmtime purges the slots affine to it, and
//! the patched purge decommits their pages as well as unmapping the image
//! (upstream left the heap pages resident until the slot was reused,
//! which is why the default used to be 64 KiB). So the reclaim test
//! (`crates/cli/tests/all/reclaim.rs`) stays flat with the large default,
//! and the memory of a hot module is held only while it is installed.
//!
//! # What stays resident, and the bound
//!
//! Kept pages belong to a pool *slot*, not to a module. The allocator gives
//! a module the most recently used free slot that last held the same module
//! (*slot affinity*: its image is still mapped and its pages are warm), and
//! otherwise picks among the other free slots. [`RuntimeConfig::max_unused_warm_slots`]
//! (wasmtime's `max_unused_warm_slots`, default 100 there, **16 here**) is
//! how many used-but-free slots it keeps before it recycles the least
//! recently used warm slot instead of touching a never-used one. That is
//! the knob on resident memory: slots ever touched stay at most
//! *peak instances alive* (serving, or idle under `pooled`) + `max_unused_warm_slots`, and each holds at
//! most the keep-resident bytes while free. 16 is room for every hot
//! module's recent instances on a small machine (a slot of each of 16 hot
//! modules stays warm), while a base with 1,000 installed modules does not
//! grow 1,000 warm slots: cold modules' slots are the least recently used
//! and are the first recycled for hot ones, their pages reset to the hot
//! module's.
//!
//! An uninstalled module's slots lose their affinity at once (wasmtime
//! purges a dropped module's slots and unmaps its image), so they are the
//! first to be recycled; `berth_pool_resident_bytes` in `/metrics` shows what
//! free slots hold right now, `berth_pool_resident_bytes_bound` the most
//! they may hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{Enabled, Engine, PoolingAllocationConfig};

use crate::config::RuntimeConfig;

/// Default of [`RuntimeConfig::memory_keep_resident`]: 64 MiB, room for
/// what a Python or JavaScript hello instance writes. A slot keeps only
/// the pages its last instance wrote (a Rust hello: 20 KiB, measured by
/// `crates/runtime/tests/all/memory.rs`), and gives them back when its
/// module is uninstalled (see the module docs).
pub const DEFAULT_MEMORY_KEEP_RESIDENT: usize = 64 << 20;
/// Default of [`RuntimeConfig::table_keep_resident`]: 64 KiB.
pub const DEFAULT_TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Default of [`RuntimeConfig::max_unused_warm_slots`]: 16.
pub const DEFAULT_MAX_UNUSED_WARM_SLOTS: u32 = 16;

/// Memories per component instance the pool is sized for: a Rust wasip2
/// component holds a few core instances (the module, the WASI adapter,
/// shims), and up to two memories.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// The pooling allocator's settings for a runtime with `config`.
pub(crate) fn pooling_config(config: &RuntimeConfig) -> PoolingAllocationConfig {
    let n = config.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(MEMORIES_PER_INSTANCE))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(config.limits.max_memory_bytes)
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(config.table_keep_resident)
        .max_unused_warm_slots(config.max_unused_warm_slots)
        .pagemap_scan(if config.pagemap_scan {
            Enabled::Auto
        } else {
            Enabled::No
        });
    pool
}

/// What the instance pool holds now (read when metrics are scraped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Component instances alive now.
    pub instances: u64,
    /// Freed memory slots that keep pages of their last instance.
    pub warm_memories: u32,
    /// Bytes those freed memory and table slots keep resident.
    pub resident_bytes: u64,
    /// The most freed slots may keep resident: every slot the pool may
    /// have warm (`max_unused_warm_slots`, plus the slots of the most
    /// instances alive at once since the start, serving or idle under the
    /// `pooled` policy) times its keep-resident bytes.
    pub resident_bytes_bound: u64,
}

impl PoolStats {
    /// Two pools together (each engine of a tiered runtime has its own).
    pub(crate) fn plus(self, other: Self) -> Self {
        Self {
            instances: self.instances + other.instances,
            warm_memories: self.warm_memories + other.warm_memories,
            resident_bytes: self.resident_bytes + other.resident_bytes,
            resident_bytes_bound: self.resident_bytes_bound + other.resident_bytes_bound,
        }
    }
}

/// Instances alive now (serving, or idle in a `pooled` version's pool: both
/// hold pool slots) and the most alive at once, across a runtime.
#[derive(Debug, Default)]
pub(crate) struct InstanceCount {
    live: AtomicU64,
    peak: AtomicU64,
}

impl InstanceCount {
    /// One more instance alive; hold the guard while it lives.
    pub(crate) fn enter(self: &Arc<Self>) -> InstanceGuard {
        let now = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        InstanceGuard(self.clone())
    }
}

/// Counts one live instance until dropped.
pub(crate) struct InstanceGuard(Arc<InstanceCount>);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pool's state, or `None` when the engine does not pool.
pub(crate) fn stats(
    engine: &Engine,
    config: &RuntimeConfig,
    count: &InstanceCount,
) -> Option<PoolStats> {
    let metrics = engine.pooling_allocator_metrics()?;
    let resident = metrics.unused_memory_bytes_resident() as u64
        + metrics.unused_table_bytes_resident() as u64;
    let warm = u64::from(config.max_unused_warm_slots);
    let peak = count.peak.load(Ordering::Relaxed);
    let memories = (warm + peak * u64::from(MEMORIES_PER_INSTANCE))
        .min(u64::from(config.max_instances) * u64::from(MEMORIES_PER_INSTANCE));
    let tables = (warm + peak * 4).min(u64::from(config.max_instances) * 4);
    let bound =
        memories * config.memory_keep_resident as u64 + tables * config.table_keep_resident as u64;
    Some(PoolStats {
        instances: metrics.component_instances(),
        warm_memories: metrics.unused_warm_memories(),
        resident_bytes: resident,
        resident_bytes_bound: bound,
    })
}
