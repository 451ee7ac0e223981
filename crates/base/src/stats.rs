//! [`VersionStats`]: the counters, metrics, recent-traffic window and trap
//! reports of one installed version. The registry creates them, route
//! targets carry them, and the instrumentation records into them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::{RecentStats, TrapReport};

use crate::logs::ModuleLogs;
use crate::metrics::VersionMetrics;

/// How long the recent-traffic window is.
const WINDOW: Duration = Duration::from_secs(60);
/// Most samples the window keeps (enough for ~800 requests/s per version).
const WINDOW_SAMPLES: usize = 50_000;
/// Failures kept with their backtraces.
const TRAPS_KEPT: usize = 10;

/// Counters, metrics and recent history of one installed version.
pub struct VersionStats {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    started: Instant,
    /// Its Prometheus series.
    pub metrics: VersionMetrics,
    /// The lines it wrote.
    pub logs: Arc<ModuleLogs>,
    /// Whether metrics, the recent window and log capture are on.
    pub observed: bool,
    window: Mutex<VecDeque<(Instant, f32, bool)>>,
    pub(crate) traps: Mutex<VecDeque<TrapReport>>,
}

impl VersionStats {
    /// Stats reporting into `metrics`, lines kept in `logs`; with
    /// `observed` false only the plain counters run.
    pub fn new(metrics: VersionMetrics, logs: Arc<ModuleLogs>, observed: bool) -> Self {
        Self {
            logs,
            observed,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started: Instant::now(),
            metrics,
            window: Mutex::default(),
            traps: Mutex::default(),
        }
    }

    /// Counts one request: its status, whether the module failed it, and
    /// the time to the response head.
    pub fn record(&self, status: u16, failed: bool, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if !self.observed {
            return;
        }
        self.metrics.response(status);
        self.metrics.duration.observe(took.as_secs_f64());
        let now = Instant::now();
        let mut window = self.window.lock().expect("window lock");
        while window
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > WINDOW)
            || window.len() >= WINDOW_SAMPLES
        {
            window.pop_front();
        }
        window.push_back((now, took.as_secs_f32() * 1e3, failed));
    }

    /// Keeps a failure with its backtrace for `berth status`.
    pub fn record_trap(&self, request_id: &str, message: String, detail: String) {
        let mut traps = self.traps.lock().expect("traps lock");
        if traps.len() >= TRAPS_KEPT {
            traps.pop_front();
        }
        traps.push_back(TrapReport {
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: request_id.to_string(),
            message,
            detail,
        });
    }

    /// Rate, error rate and latency percentiles over the last minute.
    pub fn recent(&self) -> RecentStats {
        let now = Instant::now();
        let window = self.window.lock().expect("window lock");
        let mut latencies: Vec<f32> = Vec::with_capacity(window.len());
        let mut failed = 0usize;
        for (at, ms, f) in window.iter() {
            if now.duration_since(*at) <= WINDOW {
                latencies.push(*ms);
                failed += usize::from(*f);
            }
        }
        drop(window);
        let seconds = self.started.elapsed().min(WINDOW).as_secs_f64().max(1.0);
        latencies.sort_by(f32::total_cmp);
        let pct = |p: f64| {
            (!latencies.is_empty()).then(|| {
                let i =
                    ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
                f64::from(latencies[i])
            })
        };
        RecentStats {
            window_seconds: seconds,
            requests_per_second: latencies.len() as f64 / seconds,
            error_rate: if latencies.is_empty() {
                0.0
            } else {
                failed as f64 / latencies.len() as f64
            },
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}
