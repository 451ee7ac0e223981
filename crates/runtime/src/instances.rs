//! The `pooled` instance policy: warm instances of one module version,
//! reused one request at a time.
//!
//! Under [`InstancePolicy::Pooled`](crate::InstancePolicy::Pooled) a request
//! takes the most recently returned idle instance of its version (or
//! instantiates one), and gives it back when the guest's handler returned
//! normally. An instance is never shared by two requests at once: it is
//! out of the pool while it serves. It is dropped instead of returned
//! after `max_requests` requests, after a trap, a deadline or a memory
//! limit hit; an idle one is dropped after `max_idle`; and
//! [`WarmPool::discard`] (a version switch, an uninstall) drops them all,
//! and those still serving when they finish.
//!
//! The trade: what a request leaves in the instance's memory and globals is
//! seen by the next request of the same version. `fresh` (the default)
//! never allows that.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::host::HostState;
use crate::pool::InstanceGuard;

/// One warm instance: its store and its bound exports.
pub(crate) struct Warm {
    pub(crate) store: Store<HostState>,
    pub(crate) proxy: Proxy,
    /// Requests it has served.
    pub(crate) served: u32,
    /// When it was last returned.
    idle_since: Instant,
    /// The pool generation it belongs to (see [`WarmPool::discard`]).
    pub(crate) generation: u64,
    /// Counts it as a live instance (it holds its pool slots) while idle too.
    pub(crate) live: InstanceGuard,
}

impl Warm {
    pub(crate) fn new(
        store: Store<HostState>,
        proxy: Proxy,
        served: u32,
        generation: u64,
        live: InstanceGuard,
    ) -> Self {
        Self {
            store,
            proxy,
            served,
            idle_since: Instant::now(),
            generation,
            live,
        }
    }
}

/// The idle instances of one version.
pub(crate) struct WarmPool {
    max_requests: u32,
    max_idle: Duration,
    idle: Mutex<Vec<Warm>>,
    /// Bumped by [`WarmPool::discard`]: instances of an older generation
    /// (serving while it happened) are dropped instead of returned.
    generation: AtomicU64,
    /// A sweeper task is scheduled.
    sweeping: AtomicBool,
}

impl WarmPool {
    pub(crate) fn new(max_requests: u32, max_idle: Duration) -> Self {
        Self {
            max_requests: max_requests.max(1),
            max_idle,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently returned idle instance that has not expired.
    pub(crate) fn take(&self) -> Option<Warm> {
        let mut expired = Vec::new();
        let found = {
            let mut idle = self.idle.lock().expect("warm pool lock");
            loop {
                match idle.pop() {
                    Some(warm) if warm.idle_since.elapsed() < self.max_idle => break Some(warm),
                    Some(warm) => expired.push(warm),
                    None => break None,
                }
            }
        };
        drop(expired); // stores are dropped outside the lock
        found
    }

    /// The generation a new instance belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Returns an instance that served a request normally; dropped instead
    /// if it has served its requests or was discarded while it served.
    pub(crate) fn put(self: &Arc<Self>, mut warm: Warm) {
        if warm.served >= self.max_requests {
            return;
        }
        warm.idle_since = Instant::now();
        {
            // Checked under the lock `discard` empties the pool with, so an
            // instance is either discarded by it or seen as stale here.
            let mut idle = self.idle.lock().expect("warm pool lock");
            if warm.generation != self.generation() {
                drop(idle);
                drop(warm);
                return;
            }
            idle.push(warm);
        }
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self), self.max_idle));
        }
    }

    /// Drops every idle instance, and those serving now when they finish;
    /// later requests start new ones.
    pub(crate) fn discard(&self) {
        let idle = {
            let mut idle = self.idle.lock().expect("warm pool lock");
            self.generation.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *idle)
        };
        drop(idle);
    }

    /// Idle instances now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().expect("warm pool lock").len()
    }

    /// Drops the expired idle instances; whether any are left.
    fn expire(&self) -> bool {
        let expired: Vec<Warm> = {
            let mut idle = self.idle.lock().expect("warm pool lock");
            let (keep, expired) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|w| w.idle_since.elapsed() < self.max_idle);
            *idle = keep;
            expired
        };
        drop(expired);
        !self.idle.lock().expect("warm pool lock").is_empty()
    }
}

/// Drops idle instances once they pass `max_idle`, so a module that goes
/// cold gives its instances (and their pool slots) back; ends when the pool
/// is empty or gone.
async fn sweep(pool: Weak<WarmPool>, max_idle: Duration) {
    loop {
        tokio::time::sleep(max_idle / 2 + Duration::from_millis(1)).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.expire() {
            pool.sweeping.store(false, Ordering::Release);
            // An instance returned between the check and the flag would have
            // found the flag set: look once more.
            if pool.idle() == 0 || pool.sweeping.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}
