//! Runtime settings, with defaults that suit one base on one machine.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of the module cache (artifacts and precompiled code).
    pub cache_dir: PathBuf,
    /// Use wasmtime's pooling allocator (pre-reserved instance slots: fast
    /// instantiation, copy-on-write memory images). On by default.
    pub pooling: bool,
    /// Concurrent instances across all modules (pool slots). Requests beyond
    /// it get 503 until a slot frees.
    pub max_instances: u32,
    /// Linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock deadline of one request's guest execution.
    pub request_timeout: Duration,
    /// How much of a freed linear memory the pool keeps resident (zeroed with
    /// `memset` instead of `madvise`) to speed up the next instantiation.
    pub memory_keep_resident: usize,
}

impl RuntimeConfig {
    /// Defaults with the cache under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            pooling: true,
            max_instances: 1000,
            max_memory_bytes: 128 << 20,
            request_timeout: Duration::from_secs(30),
            memory_keep_resident: 1 << 20,
        }
    }
}

/// How often the epoch ticks: the granularity of CPU deadlines, and how often
/// a busy guest yields its tokio worker thread to other requests.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
