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

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::HandleError;

/// CPU a version may use past its share before its requests are delayed.
pub(crate) const BURST: Duration = Duration::from_millis(20);

/// A version's CPU time and, if it has one, its share.
#[derive(Debug)]
pub(crate) struct CpuAccount {
    used_ns: AtomicU64,
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

pin_project_lite::pin_project! {
    /// `future`, with the time of each poll charged to `account`, and not
    /// polled while the account is over its share.
    pub(crate) struct Metered<F> {
        // In place (the task that runs it is one allocation already).
        #[pin]
        inner: F,
        account: std::sync::Arc<CpuAccount>,
        delay: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future> Metered<F> {
    pub(crate) fn new(future: F, account: std::sync::Arc<CpuAccount>) -> Self {
        Self {
            inner: future,
            account,
            delay: None,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
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
        this.account.charge(started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
