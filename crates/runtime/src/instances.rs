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
//! An instance goes back when the guest's handler returns, a moment after
//! it finished writing its body. So that a client's next request always
//! finds it there, a pooled response's body ([`Settled`]) holds its end
//! (the end of the stream, its trailers, or the bytes that complete a
//! declared length) until the instance is back in the pool (or dropped):
//! the response is complete for the client only once the instance is
//! free for the next request.
//!
//! A module that cannot be reused shows it by returning without a response
//! from a reused instance (componentize-js components do that on their
//! second request). That request gets its error, and the version stops
//! reusing instances: [`WarmPool::give_up`], one warning, fresh instances
//! from then on, so it fails once instead of on every other request.
//!
//! The trade: what a request leaves in the instance's memory and globals is
//! seen by the next request of the same version. `fresh` (the default)
//! never allows that.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::body::ResponseBody;
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
    /// Reuse was given up ([`WarmPool::give_up`]): nothing is kept.
    given_up: AtomicBool,
}

impl WarmPool {
    pub(crate) fn new(max_requests: u32, max_idle: Duration) -> Self {
        Self {
            max_requests: max_requests.max(1),
            max_idle,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
        }
    }

    /// Stops reusing instances of this version (it showed it cannot be
    /// reused): idle ones are dropped and none is kept again. True the
    /// first time, so the caller logs it once.
    pub(crate) fn give_up(&self) -> bool {
        let first = !self.given_up.swap(true, Ordering::AcqRel);
        self.discard();
        first
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
        if warm.served >= self.max_requests || self.given_up.load(Ordering::Acquire) {
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

/// A pooled response's body, ending only once the instance that wrote it
/// has gone back to its pool (or been dropped): see the module docs.
pub(crate) struct Settled {
    inner: ResponseBody,
    /// Resolves (or fails: the sender is dropped) when the guest's task
    /// has returned its instance; `None` once it has.
    settled: Option<oneshot::Receiver<()>>,
    /// Bytes left of a declared length: the frame that completes it ends
    /// the response for the client, so it is held too.
    remaining: Option<u64>,
    /// The last frame (`Some(None)`: the end of the stream), held until
    /// settled.
    held: Option<Option<Frame<Bytes>>>,
    done: bool,
}

impl Settled {
    /// `inner`, whose response declared `length` bytes (a `content-length`
    /// or an exact size hint), ending after `settled` resolves.
    pub(crate) fn new(
        inner: ResponseBody,
        length: Option<u64>,
        settled: oneshot::Receiver<()>,
    ) -> Self {
        Self {
            inner,
            settled: Some(settled),
            remaining: length,
            held: None,
            done: false,
        }
    }
}

impl Body for Settled {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.held.is_none() {
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.held = Some(None);
                    return this.release(cx);
                }
            };
            let last = match (frame.data_ref(), this.remaining.as_mut()) {
                (Some(data), Some(left)) => {
                    *left = left.saturating_sub(data.len() as u64);
                    *left == 0
                }
                (Some(_), None) => false,
                // Trailers are the last frame of a body.
                (None, _) => true,
            };
            if !last || this.settled.is_none() {
                return Poll::Ready(Some(Ok(frame)));
            }
            this.held = Some(Some(frame));
        }
        this.release(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Settled {
    /// The held frame once the instance is settled.
    fn release(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>> {
        if let Some(settled) = self.settled.as_mut() {
            // An error means the task dropped its sender: settled all the same.
            let _ = ready!(Pin::new(settled).poll(cx));
            self.settled = None;
        }
        match self.held.take() {
            Some(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            _ => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}
