//! The load the gateways report: what scale-to-zero and the autoscaler
//! decide from.
//!
//! Each gateway sends `PUT /v1/gateways/{name}/load` every
//! `--load-report-interval` (250 ms by default):
//!
//! ```json
//! {"deployments": {"orders": {"in_flight": 3, "rps": 41.5, "held": 0}}}
//! ```
//!
//! The controller keeps the latest report of each gateway in memory with
//! its arrival time; a report older than [`FRESH`] counts for nothing (the
//! gateway stopped, or cannot reach this controller). A deployment's load
//! is the sum over the fresh reports: each gateway's rate is over its own
//! last interval and its in-flight count is its own, so the sum is right
//! whatever interval each gateway uses. Reports are not stored: after a
//! restart the next reports fill the board again.
//!
//! The sums are in `berth describe deployment` (through the status) and in
//! the controller's `/metrics` (`berth_controller_load_*`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// How long a report counts.
pub const FRESH: Duration = Duration::from_secs(5);

/// A gateway's report: the body of `PUT /v1/gateways/{name}/load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadReport {
    /// Deployment name → its load at this gateway.
    pub deployments: BTreeMap<String, ReportedLoad>,
}

/// One deployment's load at one gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedLoad {
    /// Requests forwarded and not yet answered.
    pub in_flight: u64,
    /// Requests per second over the gateway's last interval.
    pub rps: f64,
    /// Requests held while no replica is ready (waiting for activation).
    pub held: u64,
}

/// A deployment's load, summed over the gateways' fresh reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests per second.
    pub rps: f64,
    /// Requests held waiting for a replica.
    pub held: u64,
    /// Gateways whose fresh report names the deployment.
    pub gateways: u32,
}

impl Load {
    /// Whether any request is in flight, arriving or held.
    pub fn busy(&self) -> bool {
        self.in_flight > 0 || self.rps > 0.0 || self.held > 0
    }
}

/// Why a load report is refused: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReportError {
    /// `deployments.orders.rps`, or `.` for the body itself.
    pub path: String,
    /// What is wrong, and what is expected.
    pub message: String,
}

/// Parses and checks a load report, naming the first bad field.
pub fn parse(body: &[u8]) -> Result<LoadReport, ReportError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let report: LoadReport = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json ends its messages with the position; the path says more.
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_string();
        ReportError {
            path: if inner.is_syntax() || inner.is_eof() {
                ".".into()
            } else {
                path
            },
            message: if inner.is_syntax() || inner.is_eof() {
                format!(
                    "the load report is not JSON ({message}); send {{\"deployments\": {{\"NAME\": {{\"in_flight\": 0, \"rps\": 0.0, \"held\": 0}}}}}}"
                )
            } else {
                message
            },
        }
    })?;
    for (name, load) in &report.deployments {
        if !(load.rps.is_finite() && load.rps >= 0.0) {
            return Err(ReportError {
                path: format!("deployments.{name}.rps"),
                message: format!(
                    "{} must be a number of requests per second, 0 or more",
                    load.rps
                ),
            });
        }
    }
    Ok(report)
}

/// `deployment` label of the load gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabel {
    deployment: String,
}

/// The latest report of every gateway, and the load metrics.
pub struct LoadBoard {
    reports: Mutex<BTreeMap<String, (Instant, LoadReport)>>,
    in_flight: Family<DeploymentLabel, Gauge>,
    rps: Family<DeploymentLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    held: Family<DeploymentLabel, Gauge>,
    gateways: Gauge,
    received: Counter,
}

impl LoadBoard {
    /// An empty board whose metrics are registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let board = Self {
            reports: Mutex::default(),
            in_flight: Family::default(),
            rps: Family::default(),
            held: Family::default(),
            gateways: Gauge::default(),
            received: Counter::default(),
        };
        metrics.register(
            "load_in_flight",
            "Requests in flight per deployment, summed over the gateways' fresh load reports",
            board.in_flight.clone(),
        );
        metrics.register(
            "load_rps",
            "Requests per second per deployment, summed over the gateways' fresh load reports",
            board.rps.clone(),
        );
        metrics.register(
            "load_held",
            "Requests held waiting for a replica per deployment, summed over the gateways' fresh load reports",
            board.held.clone(),
        );
        metrics.register(
            "load_gateways",
            "Gateways whose latest load report is fresh (under 5 s old)",
            board.gateways.clone(),
        );
        metrics.register(
            "load_reports",
            "Load reports received from gateways",
            board.received.clone(),
        );
        board
    }

    /// Keeps `report` as gateway `gateway`'s latest, received at `now`.
    /// Cheap: the sums are computed by the scaler's tick this report
    /// wakes, and the gauges at each scrape of `/metrics`
    /// ([`LoadBoard::export`]), not once per report.
    pub fn put(&self, gateway: &str, report: LoadReport, now: Instant) {
        self.received.inc();
        self.reports
            .lock()
            .expect("load board")
            .insert(gateway.to_string(), (now, report));
    }

    /// Every deployment's load at `now`, summed over the fresh reports
    /// (stale ones are dropped).
    pub fn sum(&self, now: Instant) -> BTreeMap<String, Load> {
        let mut reports = self.reports.lock().expect("load board");
        reports.retain(|_, (at, _)| now.saturating_duration_since(*at) <= FRESH);
        let mut sums: BTreeMap<String, Load> = BTreeMap::new();
        for (_, report) in reports.values() {
            for (name, load) in &report.deployments {
                let sum = sums.entry(name.clone()).or_default();
                sum.in_flight = sum.in_flight.saturating_add(load.in_flight);
                sum.rps += load.rps;
                sum.held = sum.held.saturating_add(load.held);
                sum.gateways += 1;
            }
        }
        sums
    }

    /// Gateways with a fresh report at `now`.
    pub fn gateways(&self, now: Instant) -> usize {
        let reports = self.reports.lock().expect("load board");
        reports
            .values()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= FRESH)
            .count()
    }

    /// Sets the load gauges from the sums at `now`.
    pub fn export(&self, now: Instant) {
        let sums = self.sum(now);
        self.in_flight.clear();
        self.rps.clear();
        self.held.clear();
        for (name, load) in &sums {
            let label = DeploymentLabel {
                deployment: name.clone(),
            };
            self.in_flight
                .get_or_create(&label)
                .set(i64::try_from(load.in_flight).unwrap_or(i64::MAX));
            self.rps.get_or_create(&label).set(load.rps);
            self.held
                .get_or_create(&label)
                .set(i64::try_from(load.held).unwrap_or(i64::MAX));
        }
        self.gateways.set(self.gateways(now) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> LoadReport {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn reports_sum_per_deployment_and_stale_ones_count_for_nothing() {
        let board = LoadBoard::new(&Metrics::default());
        let t0 = Instant::now();
        board.put(
            "g1",
            report(r#"{"deployments": {"orders": {"in_flight": 3, "rps": 10.5, "held": 1}}}"#),
            t0,
        );
        board.put(
            "g2",
            report(
                r#"{"deployments": {"orders": {"in_flight": 2, "rps": 4.5, "held": 0}, "cart": {"in_flight": 0, "rps": 0, "held": 0}}}"#,
            ),
            t0 + Duration::from_secs(3),
        );
        let sums = board.sum(t0 + Duration::from_secs(4));
        assert_eq!(
            sums["orders"],
            Load {
                in_flight: 5,
                rps: 15.0,
                held: 1,
                gateways: 2
            }
        );
        assert!(!sums["cart"].busy() && sums["orders"].busy());
        // g1's report is now older than 5 s: only g2's counts.
        let sums = board.sum(t0 + Duration::from_secs(6));
        assert_eq!((sums["orders"].in_flight, sums["orders"].gateways), (2, 1));
        // A newer report replaces a gateway's older one.
        board.put(
            "g2",
            report(r#"{"deployments": {}}"#),
            t0 + Duration::from_secs(7),
        );
        assert!(board.sum(t0 + Duration::from_secs(7)).is_empty());
        assert_eq!(board.gateways(t0 + Duration::from_secs(7)), 1);
    }

    #[test]
    fn a_bad_report_names_the_field() {
        let cases = [
            ("not json", ".", "the load report is not JSON"),
            ("{}", ".", "missing field `deployments`"),
            (
                r#"{"deployments": []}"#,
                "deployments",
                "invalid type: sequence",
            ),
            (
                r#"{"deployments": {"orders": {"in_flight": -1, "rps": 1, "held": 0}}}"#,
                "deployments.orders.in_flight",
                "invalid value: integer `-1`",
            ),
            (
                r#"{"deployments": {"orders": {"in_flight": 1, "rps": "fast", "held": 0}}}"#,
                "deployments.orders.rps",
                "invalid type: string \"fast\"",
            ),
            (
                r#"{"deployments": {"orders": {"in_flight": 1, "rps": -2.5, "held": 0}}}"#,
                "deployments.orders.rps",
                "-2.5 must be a number of requests per second",
            ),
            (
                r#"{"deployments": {"orders": {"in_flight": 1, "rps": 1}}}"#,
                "deployments.orders",
                "missing field `held`",
            ),
            (
                r#"{"deployments": {"orders": {"in_flight": 1, "rps": 1, "held": 0, "queued": 2}}}"#,
                "deployments.orders.queued",
                "unknown field `queued`",
            ),
        ];
        for (body, path, says) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.path, path, "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
    }
}
