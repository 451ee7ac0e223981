//! Prometheus metrics of the gateway, served at `/metrics` on its listener.
//!
//! Per module: requests by status code, latency to the response head,
//! retries, ejections, requests in flight, requests held in a queue
//! (queue depth), and the replicas the gateway may send new requests to.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-module series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    /// The module.
    pub module: String,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The module (`none` for a request no route matched).
    pub module: String,
    /// The status code answered.
    pub code: u16,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests answered, by module and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response head, by module.
    pub latency: Family<ModuleLabels, Histogram>,
    /// Requests retried on another replica.
    pub retries: Family<ModuleLabels, Counter>,
    /// Replicas ejected after a failure.
    pub ejections: Family<ModuleLabels, Counter>,
    /// Requests forwarded and not answered yet.
    pub in_flight: Family<ModuleLabels, Gauge>,
    /// Requests held waiting for a replica.
    pub queue_depth: Family<ModuleLabels, Gauge>,
    /// Replicas of each module ready and not draining, in the endpoint
    /// table the gateway routes by now.
    pub replicas: Family<ModuleLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 100 µs … ~6.5 s.
                Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
            }),
            retries: Family::default(),
            ejections: Family::default(),
            in_flight: Family::default(),
            queue_depth: Family::default(),
            replicas: Family::default(),
        };
        {
            let mut r = m.registry.lock().expect("metrics registry");
            let r = r.sub_registry_with_prefix("berth_gateway");
            r.register(
                "requests",
                "Requests answered, by module and status code",
                m.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Time from a request's arrival to its response head",
                m.latency.clone(),
            );
            r.register(
                "retries",
                "Requests retried on another replica after a connect error, a reset, or a base that no longer hosts the module",
                m.retries.clone(),
            );
            r.register(
                "ejections",
                "Replicas ejected after failing",
                m.ejections.clone(),
            );
            r.register(
                "in_flight",
                "Requests forwarded and not answered yet",
                m.in_flight.clone(),
            );
            r.register(
                "queue_depth",
                "Requests held waiting for a ready replica",
                m.queue_depth.clone(),
            );
            r.register(
                "replicas",
                "Replicas ready and not draining in the endpoint table routed by now",
                m.replicas.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }

    /// Labels of `module`.
    pub fn module(module: &str) -> ModuleLabels {
        ModuleLabels {
            module: module.to_string(),
        }
    }

    /// The series of `module`, resolved once: a request then counts with
    /// atomics only, with no label to build, hash and look up under the
    /// families' locks.
    pub fn series(&self, module: &str) -> ModuleSeries {
        let labels = Self::module(module);
        ModuleSeries {
            latency: self.latency.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    module: module.to_string(),
                    code: 200,
                })
                .clone(),
            module: module.to_string(),
        }
    }
}

/// One module's series, resolved ahead of its requests (see [`Metrics::series`]).
#[derive(Debug, Clone)]
pub struct ModuleSeries {
    /// Time to the response head.
    pub latency: Histogram,
    /// Requests forwarded and not answered yet.
    pub in_flight: Gauge,
    /// Requests retried on another replica.
    pub retries: Counter,
    /// Replicas ejected after a failure.
    pub ejections: Counter,
    /// Requests answered 200 (the others are looked up by code).
    ok: Counter,
    module: String,
}

impl ModuleSeries {
    /// Counts a request answered with `code`.
    pub fn count(&self, metrics: &Metrics, code: u16) {
        match code {
            200 => self.ok.inc(),
            _ => metrics
                .requests
                .get_or_create(&RequestLabels {
                    module: self.module.clone(),
                    code,
                })
                .inc(),
        };
    }
}
