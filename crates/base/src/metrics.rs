//! Prometheus metrics of a base, served as text at `GET /metrics` on the
//! ops address.
//!
//! Every per-module series carries `module` and `version` labels. The
//! handles of one version's series are created once, at install, and kept in
//! its [`VersionStats`](crate::registry::VersionStats), so the request path
//! only touches atomics; an uninstall removes the version's series. Gauges
//! that describe state (resident memory, memory held by each module's
//! instances) are read when the metrics are scraped.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `module`, `version`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
}

/// `module`, `version`, `status` (`2xx` … `5xx`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// Status class.
    pub status: String,
}

/// `module`, `version`, `kind` (trap, memory, deadline, concurrency, body, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// What happened.
    pub kind: String,
}

/// `reason` a span was dropped (`queue_full`, `export_failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// `module`, `version`, `tier` (`winch`, `cranelift`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// The compiler of the code it runs on.
    pub tier: String,
}

/// `result` (`ok`, `error`) or `outcome` (`hit`, `miss`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome.
    pub outcome: String,
}

/// The `tier` values of `berth_module_code_tier`.
const TIERS: [&str; 2] = ["winch", "cranelift"];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Status classes in the order of [`VersionMetrics::requests`].
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Failure kinds in the order of [`VersionMetrics::failures`].
pub const FAILURE_KINDS: [&str; 9] = [
    "trap",
    "memory",
    "deadline",
    "concurrency",
    "request_body",
    "instantiate",
    "no_response",
    "cpu",
    "response_body",
];

/// Every metric family of a base.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<StatusLabels, Counter>,
    duration: HistogramFamily<ModuleLabels>,
    in_flight: Family<ModuleLabels, Gauge>,
    instantiation: HistogramFamily<ModuleLabels>,
    failures: Family<KindLabels, Counter>,
    memory_in_use: Family<ModuleLabels, Gauge>,
    cpu: Family<ModuleLabels, Counter<f64, AtomicU64>>,
    long_requests: Family<ModuleLabels, Counter>,
    pool_resident: Gauge,
    pool_resident_bound: Gauge,
    pool_warm_slots: Gauge,
    pool_instances: Gauge,
    code_tier: Family<TierLabels, Gauge>,
    installs: Family<OutcomeLabels, Counter>,
    install_duration: Histogram,
    uninstalls: Counter,
    compile_cache: Family<OutcomeLabels, Counter>,
    warmed: Family<OutcomeLabels, Counter>,
    rss: Gauge,
    otlp_exported: Counter,
    otlp_dropped: Family<ReasonLabels, Counter>,
}

/// The handles of one version's series.
#[derive(Clone)]
pub struct VersionMetrics {
    labels: ModuleLabels,
    /// Requests by status class ([`STATUS_CLASSES`]).
    pub requests: [Counter; 5],
    /// Request duration, seconds.
    pub duration: Histogram,
    /// Requests running now.
    pub in_flight: Gauge,
    /// Instantiation time, seconds.
    pub instantiation: Histogram,
    /// Failures by kind ([`FAILURE_KINDS`]); `memory`, `deadline`,
    /// `concurrency`, `request_body` and `response_body` are the limit hits.
    pub failures: [Counter; 9],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served by modules, by status class",
            requests.clone(),
        );
        let duration = HistogramFamily::<ModuleLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, per module version",
            duration.clone(),
        );
        let in_flight = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "requests_in_flight",
            "Requests running in a module version now",
            in_flight.clone(),
        );
        let instantiation = HistogramFamily::<ModuleLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "instantiation_seconds",
            "Time to instantiate a module for one request",
            instantiation.clone(),
        );
        let failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "module_failures",
            "Requests a module failed: traps and limit hits (memory, deadline, concurrency, request_body, response_body)",
            failures.clone(),
        );
        let memory_in_use = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "module_memory_bytes",
            "Linear memory held by a module version's live instances",
            memory_in_use.clone(),
        );
        let cpu = Family::<ModuleLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "module_cpu_seconds",
            "Time a module version's requests spent inside guest code (every poll of instantiation and handler)",
            cpu.clone(),
        );
        let long_requests = Family::<ModuleLabels, Counter>::default();
        registry.register(
            "module_long_requests",
            "Requests of a module version that ran on the long-request workers (at a lower OS priority than the ingress threads): moved there after one quantum (1 ms) of guest time, or started there because most of its recent requests ran that long",
            long_requests.clone(),
        );
        let pool_resident = Gauge::default();
        registry.register(
            "pool_resident_bytes",
            "Memory freed instance slots keep resident for the next instance (keep-resident)",
            pool_resident.clone(),
        );
        let pool_resident_bound = Gauge::default();
        registry.register(
            "pool_resident_bytes_bound",
            "The most freed instance slots may keep resident: warm slots times their keep-resident bytes",
            pool_resident_bound.clone(),
        );
        let pool_warm_slots = Gauge::default();
        registry.register(
            "pool_warm_memory_slots",
            "Freed memory slots that keep pages of their last instance",
            pool_warm_slots.clone(),
        );
        let pool_instances = Gauge::default();
        registry.register(
            "pool_instances",
            "Instances alive in the pool (serving, or warm under the pooled policy)",
            pool_instances.clone(),
        );
        let installs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "installs",
            "Install requests, by outcome (ok, error)",
            installs.clone(),
        );
        let install_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        registry.register(
            "install_duration_seconds",
            "Time a successful install took",
            install_duration.clone(),
        );
        let uninstalls = Counter::default();
        registry.register(
            "uninstalls",
            "Module versions uninstalled",
            uninstalls.clone(),
        );
        let compile_cache = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "compile_cache_lookups",
            "Compile cache lookups at install (hit, miss)",
            compile_cache.clone(),
        );
        let warmed = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "code_warmed",
            "Modules compiled into the cache ahead of an install, as a buffer base does (compiled, cached)",
            warmed.clone(),
        );
        let code_tier = Family::<TierLabels, Gauge>::default();
        registry.register(
            "module_code_tier",
            "1 for the compiler tier (winch, cranelift) a module version's new requests run on, 0 for the other",
            code_tier.clone(),
        );
        let rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the base process",
            rss.clone(),
        );
        let otlp_exported = Counter::default();
        registry.register(
            "otlp_spans_exported",
            "Spans an OTLP collector accepted",
            otlp_exported.clone(),
        );
        let otlp_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "otlp_spans_dropped",
            "Spans not exported, by reason (queue_full, export_failed)",
            otlp_dropped.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            duration,
            in_flight,
            instantiation,
            failures,
            memory_in_use,
            cpu,
            long_requests,
            pool_resident,
            pool_resident_bound,
            pool_warm_slots,
            pool_instances,
            code_tier,
            installs,
            install_duration,
            uninstalls,
            compile_cache,
            warmed,
            rss,
            otlp_exported,
            otlp_dropped,
        }
    }

    /// The handles the OTLP exporter counts into (creating the series, so
    /// they show as 0 from the start when export is on).
    pub(crate) fn otlp_counters(&self) -> crate::otlp::ExportCounters {
        let reason = |r: &str| {
            self.otlp_dropped
                .get_or_create(&ReasonLabels { reason: r.into() })
                .clone()
        };
        crate::otlp::ExportCounters {
            exported: self.otlp_exported.clone(),
            dropped_queue_full: reason("queue_full"),
            dropped_export_failed: reason("export_failed"),
        }
    }

    /// The series handles of `module@version` (created on first use).
    pub fn version(&self, module: &str, version: &str) -> VersionMetrics {
        let labels = ModuleLabels {
            module: module.into(),
            version: version.into(),
        };
        let with = |extra: &str| StatusLabels {
            module: module.into(),
            version: version.into(),
            status: extra.into(),
        };
        let kind = |kind: &str| KindLabels {
            module: module.into(),
            version: version.into(),
            kind: kind.into(),
        };
        VersionMetrics {
            requests: STATUS_CLASSES.map(|class| self.requests.get_or_create(&with(class)).clone()),
            duration: self.duration.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            instantiation: self.instantiation.get_or_create(&labels).clone(),
            failures: FAILURE_KINDS.map(|k| self.failures.get_or_create(&kind(k)).clone()),
            labels,
        }
    }

    /// Drops the series of an uninstalled version.
    pub fn remove_version(&self, version: &VersionMetrics) {
        let l = &version.labels;
        for class in STATUS_CLASSES {
            self.requests.remove(&StatusLabels {
                module: l.module.clone(),
                version: l.version.clone(),
                status: class.into(),
            });
        }
        for kind in FAILURE_KINDS {
            self.failures.remove(&KindLabels {
                module: l.module.clone(),
                version: l.version.clone(),
                kind: kind.into(),
            });
        }
        self.duration.remove(l);
        self.in_flight.remove(l);
        self.instantiation.remove(l);
        self.memory_in_use.remove(l);
        self.cpu.remove(l);
        for tier in TIERS {
            self.code_tier.remove(&TierLabels {
                module: l.module.clone(),
                version: l.version.clone(),
                tier: tier.into(),
            });
        }
        self.uninstalls.inc();
    }

    /// Counts code warmed into the cache: `compiled` here, or found cached.
    pub fn warmed(&self, compiled: bool) {
        let outcome = OutcomeLabels {
            outcome: if compiled { "compiled" } else { "cached" }.into(),
        };
        self.warmed.get_or_create(&outcome).inc();
    }

    /// Counts an install attempt.
    pub fn install(&self, result: Result<(std::time::Duration, bool), ()>) {
        let outcome = |o: &str| OutcomeLabels { outcome: o.into() };
        match result {
            Ok((took, cache_hit)) => {
                self.installs.get_or_create(&outcome("ok")).inc();
                self.install_duration.observe(took.as_secs_f64());
                self.compile_cache
                    .get_or_create(&outcome(if cache_hit { "hit" } else { "miss" }))
                    .inc();
            }
            Err(()) => {
                self.installs.get_or_create(&outcome("error")).inc();
            }
        }
    }

    /// The text exposition, with state read now: each loaded version's
    /// gauges, and the instance pool's (`None`: no pooling allocator).
    pub fn encode(
        &self,
        versions: impl IntoIterator<Item = VersionState>,
        pool: Option<berth_runtime::PoolStats>,
    ) -> String {
        if let Some(rss) = resident_bytes() {
            self.rss.set(rss as i64);
        }
        for v in versions {
            let labels = ModuleLabels {
                module: v.module,
                version: v.version,
            };
            for tier in TIERS {
                self.code_tier
                    .get_or_create(&TierLabels {
                        module: labels.module.clone(),
                        version: labels.version.clone(),
                        tier: tier.into(),
                    })
                    .set(i64::from(tier == v.tier));
            }
            self.memory_in_use
                .get_or_create(&labels)
                .set(v.memory_bytes as i64);
            // A counter only goes up: add what was used since the last scrape.
            let cpu = self.cpu.get_or_create(&labels);
            let seen = cpu.get();
            if v.cpu_seconds > seen {
                cpu.inc_by(v.cpu_seconds - seen);
            }
            let long = self.long_requests.get_or_create(&labels);
            let seen = long.get();
            if v.long_requests > seen {
                long.inc_by(v.long_requests - seen);
            }
        }
        if let Some(pool) = pool {
            self.pool_resident.set(pool.resident_bytes as i64);
            self.pool_resident_bound
                .set(pool.resident_bytes_bound as i64);
            self.pool_warm_slots.set(i64::from(pool.warm_memories));
            self.pool_instances.set(pool.instances as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &self.registry.lock().expect("registry lock"),
        )
        .expect("writing to a String cannot fail");
        text
    }
}

impl VersionMetrics {
    /// Counts a response with `status`.
    pub fn response(&self, status: u16) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.requests[class].inc();
    }

    /// Counts a failure of `kind` (one of [`FAILURE_KINDS`]).
    pub fn failure(&self, kind: berth_api::FailureKind) {
        self.failures[kind.index()].inc();
    }
}

/// What a loaded version reports when metrics are scraped.
#[derive(Debug, Clone)]
pub struct VersionState {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// Linear memory its live instances hold.
    pub memory_bytes: u64,
    /// CPU its requests have used since it loaded, seconds.
    pub cpu_seconds: f64,
    /// Its requests that ran on the long-request workers.
    pub long_requests: u64,
    /// The compiler tier its new requests run on (`winch`, `cranelift`).
    pub tier: &'static str,
}

/// Resident memory of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
