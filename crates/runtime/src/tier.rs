//! Tiered code: a module first serves on code from wasmtime's baseline
//! compiler (Winch), and Cranelift's optimized code takes over once a
//! background compile is done.
//!
//! A module version holds its code in a [`TieredCode`]: an [`ArcSwap`] of the
//! current [`Code`] (engine, linked `InstancePre`, tier). Each request loads
//! the current code once, so a swap is atomic: new requests run on the new
//! code, requests in flight finish on the code they started on (their
//! `Arc` keeps it alive). The [`Optimizer`] is one background thread per
//! runtime that compiles queued modules with Cranelift, caches the result
//! and swaps it in; a version uninstalled before its turn is skipped.
//!
//! The optimizer stays out of the way of serving and of the next install:
//! it writes a module's Winch code to the cache (which an install no longer
//! waits for), and runs Cranelift on a thread pool of its own that leaves
//! one core free (on a 2-core machine Cranelift would otherwise hold both
//! cores while a fresh module answers its first requests or another module
//! compiles with Winch). Code another party is bringing (a controller's, see
//! [`ExpectedCode`]) is waited for instead of compiled here: the module's
//! job is parked until that code is in the cache or will not come.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::artifact::Digest;
use crate::host::HostState;
use crate::module::ModuleEnv;

/// Which compiler made the code a module version runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// wasmtime's baseline compiler: compiles in a fraction of Cranelift's
    /// time, runs slower. The first tier of a freshly compiled module.
    Winch,
    /// wasmtime's optimizing compiler: the code a module ends up on.
    Cranelift,
}

impl Tier {
    /// `winch` or `cranelift`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Winch => "winch",
            Tier::Cranelift => "cranelift",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tiers a runtime compiles modules with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiers {
    /// Winch first (the module serves as soon as it is compiled), Cranelift
    /// in the background, swapped in when done. Written `winch,cranelift`.
    #[default]
    WinchThenCranelift,
    /// Cranelift only: an install returns once the optimized code is ready.
    /// Written `cranelift`.
    CraneliftOnly,
    /// Winch only: a module serves on Winch code and is never compiled with
    /// Cranelift here (nor mapped from Cranelift code in the cache), so the
    /// tier it runs on is fixed. For quick edit loops on heavy modules, and
    /// to measure the baseline tier on its own (`bench/throughput.py`).
    /// Written `winch`.
    WinchOnly,
}

impl Tiers {
    /// Whether a module starts on Winch code (`winch,cranelift`, `winch`).
    pub fn uses_winch(self) -> bool {
        self != Tiers::CraneliftOnly
    }

    /// Whether Cranelift's code takes over from Winch's (`winch,cranelift`).
    pub fn tiers_up(self) -> bool {
        self == Tiers::WinchThenCranelift
    }
}

impl fmt::Display for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tiers::WinchThenCranelift => "winch,cranelift",
            Tiers::CraneliftOnly => "cranelift",
            Tiers::WinchOnly => "winch",
        })
    }
}

/// Why a string is not a tier list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a tier list: use `winch,cranelift` (serve on Winch code first, Cranelift's when ready), `cranelift` (Cranelift only) or `winch` (Winch only)"
)]
pub struct ParseTiersError {
    input: String,
}

impl FromStr for Tiers {
    type Err = ParseTiersError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let tiers: Vec<String> = s
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        match tiers.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["winch", "cranelift"] => Ok(Tiers::WinchThenCranelift),
            ["cranelift"] => Ok(Tiers::CraneliftOnly),
            ["winch"] => Ok(Tiers::WinchOnly),
            _ => Err(ParseTiersError { input: s.into() }),
        }
    }
}

/// Test support: holds background Cranelift compiles until opened, so a
/// test can watch a module serve on Winch code for as long as it needs.
#[derive(Debug, Default)]
pub struct TierUpGate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl TierUpGate {
    /// A closed gate.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Lets every held and future compile through.
    pub fn open(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().expect("gate lock");
        while !*open {
            open = self.opened.wait(open).expect("gate lock");
        }
    }
}

/// Compiled, linked code of one module on one tier.
pub(crate) struct Code {
    pub(crate) env: ModuleEnv,
    pub(crate) pre: ProxyPre<HostState>,
    pub(crate) tier: Tier,
}

/// A module version's current code, swapped atomically when a better tier
/// is ready.
pub(crate) struct TieredCode {
    pub(crate) digest: Digest,
    current: ArcSwap<Code>,
}

impl TieredCode {
    pub(crate) fn new(digest: Digest, code: Code) -> Arc<Self> {
        Arc::new(Self {
            digest,
            current: ArcSwap::from_pointee(code),
        })
    }

    /// The code new requests run on.
    pub(crate) fn current(&self) -> Arc<Code> {
        self.current.load_full()
    }

    /// The tier new requests run on.
    pub(crate) fn tier(&self) -> Tier {
        self.current.load().tier
    }

    /// Makes `code` the code of every request from now on.
    pub(crate) fn promote(&self, code: Code) {
        self.current.store(Arc::new(code));
    }
}

/// A module waiting for its optimized code.
pub(crate) struct Job {
    pub(crate) target: Weak<TieredCode>,
    pub(crate) bytes: bytes::Bytes,
    /// Winch code compiled by the install, still to be written to the cache
    /// (off the install's critical path).
    pub(crate) unsaved: Option<Save>,
}

/// Writes a module's Winch code to the cache.
pub(crate) type Save = Box<dyn FnOnce() + Send>;

/// Compiles `bytes` with Cranelift (and caches the code); makes it the code
/// of a module with the environment (capabilities, limits) the last
/// argument gives, or `None` when that gives none (the module is gone).
pub(crate) type Compile = dyn Fn(Digest, &[u8], &dyn Fn() -> Option<ModuleEnv>) -> Result<Option<Code>, crate::LoadError>
    + Send
    + Sync;

/// The background thread that moves modules up to Cranelift code, one at a
/// time (Cranelift itself compiles a module's functions in parallel, on the
/// optimizer's own pool). It stops when its runtime is dropped.
pub(crate) struct Optimizer {
    queue: Mutex<std::sync::mpsc::Sender<Job>>,
    /// Digests whose optimized code someone else brings, with the jobs
    /// parked until it is there.
    expected: Arc<Mutex<HashMap<Digest, Expected>>>,
}

/// The holders of one expected digest and the jobs waiting for it.
#[derive(Default)]
struct Expected {
    holders: usize,
    parked: Vec<Job>,
}

/// Code someone else is bringing into the cache (a controller's compile):
/// while this handle lives, the optimizer does not compile the digest
/// itself; modules of that digest wait on their Winch code. Dropping it
/// (the code is stored, or will not come) lets their jobs run: each maps
/// the optimized code from the cache when it is there, or compiles it.
pub struct ExpectedCode {
    digest: Digest,
    expected: Arc<Mutex<HashMap<Digest, Expected>>>,
    queue: std::sync::mpsc::Sender<Job>,
}

impl Drop for ExpectedCode {
    fn drop(&mut self) {
        let mut expected = self.expected.lock().expect("expected lock");
        let Some(entry) = expected.get_mut(&self.digest) else {
            return;
        };
        entry.holders -= 1;
        if entry.holders == 0 {
            let entry = expected.remove(&self.digest).expect("present");
            for job in entry.parked {
                let _ = self.queue.send(job);
            }
        }
    }
}

/// Lowers the calling thread's CPU priority to the least (nice 19): the
/// optimizer's compiles then run on CPU that serving leaves idle. Without
/// it, a compile thread sharing a core with an ingress thread (one
/// single-threaded runtime per core, see the base's `server` module)
/// delayed that thread's requests by hundreds of milliseconds while a
/// new version tiered up (bench/README.md, "Ingress threads").
#[allow(unsafe_code)] // one FFI call with no pointers; rustix's safe wrapper is not built here
fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; on Linux, `who` 0 with
    // PRIO_PROCESS is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Threads of the optimizer's Cranelift pool: every core but one (at least
/// one), so serving and Winch compiles always have a core.
fn optimizer_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Optimizer {
    /// Starts the thread; `compile` makes optimized code, `gate` (tests)
    /// holds every job until it opens.
    pub(crate) fn start(compile: Arc<Compile>, gate: Option<Arc<TierUpGate>>) -> Self {
        let (queue, jobs) = std::sync::mpsc::channel::<Job>();
        let expected: Arc<Mutex<HashMap<Digest, Expected>>> = Arc::default();
        let parking = expected.clone();
        let threads = optimizer_threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("berth-cranelift-{i}"))
            .start_handler(|_| background_priority())
            .build()
            .ok();
        std::thread::Builder::new()
            .name("berth-optimizer".into())
            .spawn(move || {
                for mut job in jobs {
                    // The install's Winch code first: a restart before
                    // Cranelift is done then maps it instead of compiling.
                    if let Some(save) = job.unsaved.take() {
                        save();
                    }
                    if let Some(gate) = &gate {
                        gate.wait();
                    }
                    // Uninstalled while waiting: nothing to do.
                    let Some(target) = job.target.upgrade() else {
                        continue;
                    };
                    let digest = target.digest;
                    drop(target);
                    // Someone else brings this code: wait for it.
                    {
                        let mut expected = parking.lock().expect("expected lock");
                        if let Some(entry) = expected.get_mut(&digest) {
                            tracing::debug!(%digest, "waiting for optimized code from elsewhere");
                            entry.parked.push(job);
                            continue;
                        }
                    }
                    let started = Instant::now();
                    // The module's capabilities and limits, read only once
                    // the code is ready: nothing of the module is held while
                    // Cranelift runs.
                    let env = || job.target.upgrade().map(|t| t.current().env.clone());
                    let run = || compile(digest, &job.bytes, &env);
                    let compiled = match &pool {
                        Some(pool) => pool.install(run),
                        None => run(),
                    };
                    match compiled {
                        Ok(Some(code)) => {
                            if let Some(target) = job.target.upgrade() {
                                target.promote(code);
                                tracing::info!(%digest, ms = started.elapsed().as_secs_f64() * 1e3, "module moved up to Cranelift code");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "Cranelift cannot compile this module; it stays on Winch code")
                        }
                    }
                }
            })
            .expect("spawn the optimizer thread");
        tracing::debug!(threads, "optimizer started");
        Self {
            queue: Mutex::new(queue),
            expected,
        }
    }

    /// Marks `digest`'s optimized code as coming from elsewhere until the
    /// handle is dropped.
    pub(crate) fn expect(&self, digest: Digest) -> ExpectedCode {
        self.expected
            .lock()
            .expect("expected lock")
            .entry(digest)
            .or_default()
            .holders += 1;
        ExpectedCode {
            digest,
            expected: self.expected.clone(),
            queue: self.queue.lock().expect("queue lock").clone(),
        }
    }

    /// Modules waiting for optimized code from elsewhere.
    pub(crate) fn awaiting(&self) -> usize {
        let expected = self.expected.lock().expect("expected lock");
        expected.values().map(|e| e.parked.len()).sum()
    }

    /// Queues `job`.
    pub(crate) fn queue(&self, job: Job) {
        // The thread only ends when the sender is dropped.
        let _ = self.queue.lock().expect("queue lock").send(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_lists_parse_and_print_back() {
        for text in ["winch,cranelift", "cranelift", "winch"] {
            assert_eq!(text.parse::<Tiers>().unwrap().to_string(), text);
        }
        assert_eq!(
            " Winch , Cranelift".parse::<Tiers>().unwrap(),
            Tiers::WinchThenCranelift
        );
        for bad in ["winch,winch", "cranelift,winch", "", "llvm"] {
            let e = bad.parse::<Tiers>().unwrap_err().to_string();
            assert!(e.contains("winch,cranelift") && e.contains(bad), "{e}");
        }
    }
}
