//! CPU time per module version, and its share of the cores.
//!
//! Every poll of a request's guest future (instantiation, the handler, and
//! the host calls it makes while polled) is timed and added to its
//! version's [`CpuAccount`]: that wall time inside guest polls is the CPU
//! measure, shown as `berth_module_cpu_seconds_total`. Guests yield every
//! epoch tick (1 ms), so one poll costs at most about one quantum.
//!
//! A version with a share (`cpu` in its limits, in cores) runs a leaky
//! bucket: the time its polls take fills it, it drains at the share (half
//! a core drains 0.5 s per second). Past [`BURST`] of CPU in the bucket the
//! version is over its share, and its runnable requests are delayed: a
//! request already running is not polled again until the bucket is back
//! under [`BURST`] (so it loses its worker thread for that long, and other
//! modules' requests run), and a new request waits in the queue while the
//! version uses its share. A new request that would wait longer than its
//! queue wait is turned away at once: 503 with `Retry-After`
//! ([`HandleError::CpuThrottled`]).
//!
//! **Long requests leave the thread they started on.** A request starts on
//! the thread that took its connection (an ingress thread) and, while it
//! is short, finishes there: that is what makes a fresh instance per
//! request cheap. A request whose polls have taken one quantum
//! ([`LONG_AFTER`]) is moved to the long-request workers ([`Demotable`]),
//! threads at a lower OS priority, and finishes there. Why: every runnable
//! guest on an ingress thread adds up to a quantum to the wait of each
//! short request behind it on that thread, and the OS gave a spinning
//! thread as much of a core as one that serves many short requests. With
//! a module spinning to its deadline and another hogging memory beside
//! hello on 2 cores, hello kept 3% of its requests/s alone; with the move
//! it keeps most of them (bench/README.md, "Long requests move off the
//! ingress threads"). Nothing is configured: a module is not marked slow,
//! each of its requests earns the move by running long, the way a
//! multilevel feedback queue demotes a process that uses its whole slice.
//! A version most of whose recent requests ran long starts its requests
//! on the workers, so their first quanta do not run on the ingress threads
//! either; one request that only looked long (the OS preempted it mid-poll)
//! does not do that, as the average needs about six in a row.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::HandleError;

/// CPU a version may use past its share before its requests are delayed.
pub(crate) const BURST: Duration = Duration::from_millis(20);

/// A version's CPU time and, if it has one, its share.
#[derive(Debug)]
pub(crate) struct CpuAccount {
    used_ns: AtomicU64,
    /// Requests that ran on the long-request workers ([`Demotable`]).
    long_requests: AtomicU64,
    /// How many of the recent requests ran long, in 1/1024: a moving
    /// average over about the last 8.
    recently_long: AtomicU32,
    share: Option<Share>,
}

#[derive(Debug)]
struct Share {
    /// Thousandths of a core.
    millis: u32,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// CPU used and not yet drained, ns.
    level_ns: f64,
    at: Instant,
}

impl Share {
    /// Drains the bucket up to now and returns its level, ns.
    fn level(&self, bucket: &mut Bucket, now: Instant) -> f64 {
        let drained = now.saturating_duration_since(bucket.at).as_nanos() as f64
            * f64::from(self.millis)
            / 1000.0;
        bucket.level_ns = (bucket.level_ns - drained).max(0.0);
        bucket.at = now;
        bucket.level_ns
    }

    /// How long until the bucket drains to `to_ns`.
    fn time_to(&self, level_ns: f64, to_ns: f64) -> Duration {
        let excess = (level_ns - to_ns).max(0.0);
        Duration::from_nanos((excess * 1000.0 / f64::from(self.millis.max(1))) as u64)
    }
}

impl CpuAccount {
    /// An account with a share of `millis` thousandths of a core, if any.
    pub(crate) fn new(millis: Option<u32>) -> Self {
        Self {
            used_ns: AtomicU64::new(0),
            long_requests: AtomicU64::new(0),
            recently_long: AtomicU32::new(0),
            share: millis.map(|millis| Share {
                millis: millis.max(1),
                bucket: Mutex::new(Bucket {
                    level_ns: 0.0,
                    at: Instant::now(),
                }),
            }),
        }
    }

    /// CPU time used so far.
    pub(crate) fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// Requests that ran on the long-request workers.
    pub(crate) fn long_requests(&self) -> u64 {
        self.long_requests.load(Ordering::Relaxed)
    }

    /// Records whether a request's guest ran past [`LONG_AFTER`].
    fn ran(&self, long: bool) {
        let sample = if long { 1024 } else { 0 };
        let _ = self
            .recently_long
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
                Some(average - average / 8 + sample / 8)
            });
    }

    /// Whether most of the version's recent requests ran long, so its next
    /// one starts on the long-request workers. A short module whose request
    /// the OS happened to preempt mid-poll (and so looked long) needs about
    /// six such requests in a row to get there; one that starts there and
    /// runs short comes back after about six.
    fn starts_long(&self) -> bool {
        self.recently_long.load(Ordering::Relaxed) >= 512
    }

    fn charge(&self, took: Duration) {
        let ns = took.as_nanos() as u64;
        self.used_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(share) = &self.share {
            let mut bucket = share.bucket.lock().expect("cpu bucket lock");
            let now = Instant::now();
            share.level(&mut bucket, now);
            bucket.level_ns += ns as f64;
        }
    }

    /// How long a running request must wait before its next poll (zero:
    /// under its share).
    fn throttle(&self) -> Duration {
        let Some(share) = &self.share else {
            return Duration::ZERO;
        };
        let mut bucket = share.bucket.lock().expect("cpu bucket lock");
        let level = share.level(&mut bucket, Instant::now());
        share.time_to(level, BURST.as_nanos() as f64)
    }

    /// Waits for a new request's turn: while the version uses its share
    /// (its bucket is past half of [`BURST`]), the request waits; if its
    /// turn is further away than `queue_wait`, it is refused with the time
    /// to retry after.
    pub(crate) async fn admit(&self, queue_wait: Duration) -> Result<(), HandleError> {
        let Some(share) = &self.share else {
            return Ok(());
        };
        let deadline = Instant::now() + queue_wait;
        loop {
            let wait = {
                let mut bucket = share.bucket.lock().expect("cpu bucket lock");
                let level = share.level(&mut bucket, Instant::now());
                share.time_to(level, BURST.as_nanos() as f64 / 2.0)
            };
            if wait.is_zero() {
                return Ok(());
            }
            let now = Instant::now();
            if now + wait > deadline {
                let retry_after = wait.max(queue_wait).as_secs_f64().ceil().max(1.0) as u64;
                return Err(HandleError::CpuThrottled {
                    share_millis: share.millis,
                    retry_after_secs: retry_after,
                });
            }
            // Wake a little after the bucket drains; running requests may
            // have filled it again by then, so look again.
            tokio::time::sleep(wait.max(Duration::from_micros(200))).await;
        }
    }
}

/// Guest time after which a request counts as long and leaves the thread
/// it started on for the long-request workers: one quantum (the epoch
/// tick), so a request that yields once for running too long moves.
pub(crate) const LONG_AFTER: Duration = Duration::from_millis(1);

/// The niceness of the long-request workers: weight 335 against a normal
/// thread's 1024, so the OS runs a waking ingress thread first, while a
/// long request still gets about a quarter of a busy core.
///
/// Why 5 (bench/README.md, "Long-request workers at nice 5"): not every
/// request that runs past a quantum belongs to a long module. A pooled
/// Python module saturated by short requests has a few hundred a second
/// that do (a new warm instance, a garbage collection, a poll the OS
/// preempted); at nice 10 (a tenth of a core) they queued there for
/// 330–455 ms, its p99, against 19–35 ms at nice 5 and 10 ms at nice 0.
/// Beside `spin` and `hog`, hello keeps about as much at nice 5 as at 10
/// (74% against 73% of its requests/s alone), its p99 4.7 against 3.6 ms;
/// at nice 0 it keeps 58% at 7.7 ms. A lower priority class, `SCHED_IDLE`,
/// starved the workers entirely, and a lock held by a starved thread then
/// stalled an ingress thread for 300 ms.
const LONG_WORKER_NICE: i32 = 5;

/// The long-request workers: one per core, at [`LONG_WORKER_NICE`], shared
/// by every base in the process (as the epoch ticker is). Built on first use.
fn long_workers() -> &'static tokio::runtime::Handle {
    static WORKERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    WORKERS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores)
                .thread_name("long-requests")
                .on_thread_start(lower_this_threads_priority)
                .enable_all()
                .build()
                .expect("the long-request worker threads could not start")
        })
        .handle()
}

/// Sets the calling thread's niceness to [`LONG_WORKER_NICE`] (Linux: the
/// niceness is per thread).
#[allow(unsafe_code)]
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority changes only this thread's scheduling weight.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // SAFETY: as above; a failure leaves the priority as it was.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, LONG_WORKER_NICE) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "long-request worker keeps its priority"
            );
        }
    }
}

/// A request's guest future: polled where it was spawned (an ingress
/// thread) until its polls have taken [`LONG_AFTER`], then moved to the
/// long-request workers, where it runs to the end. A version most of whose
/// recent requests ran long ([`CpuAccount::starts_long`]) starts its
/// requests on the workers: its first quanta would otherwise still run on
/// the ingress threads, ahead of the requests it already moved there.
pub(crate) struct Demotable<F: Future> {
    state: Lane<F>,
    account: std::sync::Arc<CpuAccount>,
}

enum Lane<F: Future> {
    /// On the thread it started on.
    Here(Pin<Box<Metered<F>>>),
    /// On the long-request workers.
    Long(tokio::task::JoinHandle<(F::Output, Duration)>),
    Done,
}

impl<F> Demotable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// `future`, metered in `account` ([`Metered`]).
    pub(crate) fn new(future: F, account: std::sync::Arc<CpuAccount>) -> Self {
        // Boxed: it may move to the workers after its first polls.
        let metered = Box::pin(Metered::new(future, account.clone()));
        let state = if account.starts_long() {
            Lane::Long(to_long_workers(metered, &account))
        } else {
            Lane::Here(metered)
        };
        Self { state, account }
    }
}

impl<F: Future> Drop for Demotable<F> {
    fn drop(&mut self) {
        if let Lane::Long(handle) = &self.state {
            handle.abort();
        }
    }
}

impl<F> Future for Demotable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let (out, spent) = match &mut this.state {
            Lane::Here(metered) => match metered.as_mut().poll(cx) {
                Poll::Ready(out) => out,
                Poll::Pending if metered.spent >= LONG_AFTER => {
                    let Lane::Here(metered) = std::mem::replace(&mut this.state, Lane::Done) else {
                        unreachable!("matched above")
                    };
                    // Spawned tasks are scheduled at once; polling the
                    // handle registers this task to be woken at the end.
                    let mut handle = to_long_workers(metered, &this.account);
                    match Pin::new(&mut handle).poll(cx) {
                        Poll::Ready(joined) => joined_output(joined),
                        Poll::Pending => {
                            this.state = Lane::Long(handle);
                            return Poll::Pending;
                        }
                    }
                }
                Poll::Pending => return Poll::Pending,
            },
            Lane::Long(handle) => match Pin::new(handle).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(joined) => joined_output(joined),
            },
            Lane::Done => panic!("a request's guest future was polled after it completed"),
        };
        this.state = Lane::Done;
        this.account.ran(spent >= LONG_AFTER);
        Poll::Ready(out)
    }
}

/// Runs `metered` on the long-request workers, counted in `account`.
fn to_long_workers<F>(
    metered: Pin<Box<Metered<F>>>,
    account: &CpuAccount,
) -> tokio::task::JoinHandle<(F::Output, Duration)>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    account.long_requests.fetch_add(1, Ordering::Relaxed);
    long_workers().spawn(metered)
}

/// The output of a guest future that ran on the long-request workers; its
/// panic goes on in the task that waits for it.
fn joined_output<T>(joined: Result<T, tokio::task::JoinError>) -> T {
    match joined {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the long-request workers dropped a request: {e}"),
    }
}

pin_project_lite::pin_project! {
    /// `future`, with the time of each poll charged to `account`, and not
    /// polled while the account is over its share. Its output comes with
    /// the time all its polls took.
    pub(crate) struct Metered<F> {
        #[pin]
        inner: F,
        account: std::sync::Arc<CpuAccount>,
        delay: Option<Pin<Box<tokio::time::Sleep>>>,
        // The time its polls have taken so far.
        spent: Duration,
    }
}

impl<F: Future> Metered<F> {
    pub(crate) fn new(future: F, account: std::sync::Arc<CpuAccount>) -> Self {
        Self {
            inner: future,
            account,
            delay: None,
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = (F::Output, Duration);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        loop {
            if let Some(delay) = this.delay.as_mut() {
                if delay.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.delay = None;
            }
            let wait = this.account.throttle();
            if wait.is_zero() {
                break;
            }
            *this.delay = Some(Box::pin(tokio::time::sleep(wait)));
        }
        let started = Instant::now();
        let result = this.inner.poll(cx);
        let took = started.elapsed();
        this.account.charge(took);
        *this.spent += took;
        result.map(|out| (out, *this.spent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the thread a future finished on, after spinning for
    /// `spin` and yielding once.
    async fn finishes_on(spin: Duration, account: std::sync::Arc<CpuAccount>) -> String {
        Demotable::new(
            async move {
                let started = Instant::now();
                while started.elapsed() < spin {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
                std::thread::current().name().unwrap_or("").to_string()
            },
            account,
        )
        .await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_that_runs_a_quantum_moves_to_the_long_request_workers() {
        let account = std::sync::Arc::new(CpuAccount::new(None));
        let here = std::thread::current().name().map(str::to_string);
        let short = finishes_on(Duration::ZERO, account.clone()).await;
        assert_eq!(Some(short), here, "a short request stays where it started");
        assert_eq!(account.long_requests(), 0);

        let long = finishes_on(LONG_AFTER * 3, account.clone()).await;
        assert_eq!(long, "long-requests");
        assert_eq!(account.long_requests(), 1);

        // A version whose requests keep running long starts them on the
        // workers, even a short one; short ones bring it back.
        for _ in 0..7 {
            finishes_on(LONG_AFTER * 2, account.clone()).await;
        }
        let short = finishes_on(Duration::ZERO, account.clone()).await;
        assert_eq!(short, "long-requests", "started on the workers");
        for _ in 0..8 {
            finishes_on(Duration::ZERO, account.clone()).await;
        }
        let short = finishes_on(Duration::ZERO, account.clone()).await;
        assert_eq!(Some(short), here, "back where it started");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_on_the_long_request_workers_reaches_the_task_that_waits() {
        let account = std::sync::Arc::new(CpuAccount::new(None));
        let waiting = tokio::spawn(Demotable::new(
            async {
                std::thread::sleep(LONG_AFTER * 2);
                tokio::task::yield_now().await;
                panic!("guest host code panicked");
            },
            account.clone(),
        ));
        let error = waiting.await.expect_err("the panic went on");
        assert!(error.is_panic());
        assert_eq!(account.long_requests(), 1);
    }

    #[test]
    fn a_share_drains_at_its_rate() {
        let account = CpuAccount::new(Some(500));
        account.charge(Duration::from_millis(100));
        assert_eq!(account.used(), Duration::from_millis(100));
        let wait = account.throttle();
        // 80 ms over the burst, drained at half a core: ~160 ms.
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(160),
            "{wait:?}"
        );
        assert!(CpuAccount::new(None).throttle().is_zero());
    }
}
