//! The Winch engine's trampoline cache: Cranelift code for the host ↔ wasm
//! trampolines, compiled once per shape and reused by every Winch compile in
//! the process.
//!
//! Why: Winch compiles a module's functions, but wasmtime still has
//! Cranelift compile one *array-to-wasm trampoline* per function that
//! escapes (is exported or sits in a table). An interpreter like CPython or
//! StarlingMonkey puts thousands of functions in its tables, so on a cold
//! install those tiny trampolines took ~40% of the compile (bench/README.md,
//! "Cold install"). They differ only in their signature and in the name of
//! the function they call, and Cranelift's incremental cache keys a
//! function by its body *without* the names it refers to: every trampoline
//! of one signature is one cache entry, compiled once. wasmtime's Winch
//! builder refuses an incremental cache; berth's vendored copy of it
//! (`vendor/wasmtime-internal-winch`, one function changed) hands the
//! store to the Cranelift compiler it keeps for the trampolines.
//!
//! Policy: the store lives for the process and is shared by every Winch
//! engine in it (the key covers the target and every compiler setting, so
//! engines with different settings never share an entry). It is held in
//! memory only — a few hundred distinct shapes, tens of KiB each at most —
//! and bounded by [`BUDGET`]: once full it stops taking new entries rather
//! than evicting, and compiles go on uncached. The optimizing (Cranelift)
//! engine does not use it: there every function body would be cached,
//! which is memory without reuse.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// At most this many bytes of keys and code are kept.
pub const BUDGET: usize = 64 << 20;

/// An in-memory, bounded [`wasmtime::CacheStore`].
#[derive(Debug)]
pub struct TrampolineCache {
    entries: Mutex<Entries>,
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Arc<[u8]>>,
    bytes: usize,
}

impl TrampolineCache {
    /// An empty cache holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: Mutex::default(),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache every Winch engine of this process shares.
    pub fn shared() -> Arc<Self> {
        static SHARED: OnceLock<Arc<TrampolineCache>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(Self::new(BUDGET))).clone()
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that had to compile so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Bytes of keys and code held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Entries are whole values: a panic elsewhere cannot leave one torn.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl wasmtime::CacheStore for TrampolineCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let found = self.lock().map.get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found.map(|code| Cow::Owned(code.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut entries = self.lock();
        let size = key.len() + value.len();
        if entries.map.contains_key(key) {
            return true;
        }
        if entries.bytes + size > self.budget {
            return false;
        }
        entries.bytes += size;
        entries.map.insert(key.to_vec(), value.into());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore as _;

    #[test]
    fn answers_what_it_holds_and_counts_hits_and_misses() {
        let cache = TrampolineCache::new(1024);
        assert!(cache.get(b"k").is_none());
        assert!(cache.insert(b"k", vec![1, 2, 3]));
        assert_eq!(cache.get(b"k").as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert_eq!(cache.bytes(), 4);
    }

    #[test]
    fn stops_taking_entries_at_its_budget_and_keeps_what_it_has() {
        let cache = TrampolineCache::new(100);
        assert!(cache.insert(b"a", vec![0; 60]));
        assert!(!cache.insert(b"b", vec![0; 60]), "over the budget");
        assert!(cache.get(b"b").is_none());
        assert_eq!(cache.get(b"a").map(|v| v.len()), Some(60));
        assert_eq!(cache.bytes(), 61);
        // The same key again costs nothing.
        assert!(cache.insert(b"a", vec![0; 60]));
        assert_eq!(cache.bytes(), 61);
    }
}
