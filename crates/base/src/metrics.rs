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
pub const FAILURE_KINDS: [&str; 7] = [
    "trap",
    "memory",
    "deadline",
    "concurrency",
    "request_body",
    "instantiate",
    "no_response",
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
    code_tier: Family<TierLabels, Gauge>,
    installs: Family<OutcomeLabels, Counter>,
    install_duration: Histogram,
    uninstalls: Counter,
    compile_cache: Family<OutcomeLabels, Counter>,
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
    /// `concurrency` and `request_body` are the limit hits.
    pub failures: [Counter; 7],
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
            "Requests a module failed: traps and limit hits (memory, deadline, concurrency, request_body)",
            failures.clone(),
        );
        let memory_in_use = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "module_memory_bytes",
            "Linear memory held by a module version's live instances",
            memory_in_use.clone(),
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
            code_tier,
            installs,
            install_duration,
            uninstalls,
            compile_cache,
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
        for tier in TIERS {
            self.code_tier.remove(&TierLabels {
                module: l.module.clone(),
                version: l.version.clone(),
                tier: tier.into(),
            });
        }
        self.uninstalls.inc();
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

    /// The text exposition, with state gauges read now (`loaded` gives each
    /// loaded version's labels, bytes in use and code tier).
    pub fn encode(
        &self,
        loaded: impl IntoIterator<Item = (String, String, u64, &'static str)>,
    ) -> String {
        if let Some(rss) = resident_bytes() {
            self.rss.set(rss as i64);
        }
        for (module, version, bytes, running) in loaded {
            for tier in TIERS {
                self.code_tier
                    .get_or_create(&TierLabels {
                        module: module.clone(),
                        version: version.clone(),
                        tier: tier.into(),
                    })
                    .set(i64::from(tier == running));
            }
            self.memory_in_use
                .get_or_create(&ModuleLabels { module, version })
                .set(bytes as i64);
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

/// Resident memory of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
