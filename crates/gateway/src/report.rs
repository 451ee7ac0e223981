//! The load report: every `--load-report-interval` (250 ms by default) the
//! gateway tells the controller each deployment's traffic here
//! (`PUT /v1/gateways/{name}/load`, [`GatewayLoad`]): requests in flight,
//! requests per second since the last report, and requests held. It is
//! the autoscaler's input. A controller without that endpoint (404) or not
//! reachable is noted at debug level only: the report is best effort and
//! never affects serving.
//!
//! **Why a fixed, short interval.** A step in the traffic reaches the
//! autoscaler over two reports (the first covers only part of its
//! interval), and the controller decides as each report arrives, so the
//! interval bounds how fast replicas follow the load. At 1 s that alone
//! took up to 2 s (a step's replicas ready at p99 4.6 s in
//! `bench/autoscale.py`); at 250 ms the step is decided within about
//! 0.5 s and ready at p99 1–1.4 s, for 4 small reports per second per
//! gateway (bench/README.md, "Autoscale"). Reporting early when a
//! deployment's load jumps was considered and left out: it would put a
//! threshold check on every request's path and a second, bursty source of
//! reports, for at most the 250 ms the regular report takes. Each rate is
//! over the time since the previous report as measured here, so a late
//! tick (a busy machine) gives a right rate, not a spike.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_api::endpoints::{DeploymentLoad, GatewayLoad};
use tokio::sync::watch;

use crate::server::Shared;
use crate::table::Table;

/// The load of every deployment in `table`, given the request counts of
/// the last report (`last`, updated) over `elapsed`.
pub fn load(table: &Table, last: &mut HashMap<String, u64>, elapsed: Duration) -> GatewayLoad {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut report = GatewayLoad::default();
    let mut seen = HashMap::new();
    for d in &table.deployments {
        let requests = d.stats.requests.load(Ordering::Relaxed);
        let before = last.get(&d.name).copied().unwrap_or(requests);
        seen.insert(d.name.clone(), requests);
        report.deployments.insert(
            d.name.clone(),
            DeploymentLoad {
                in_flight: d.stats.in_flight.load(Ordering::Relaxed),
                rps: requests.saturating_sub(before) as f64 / seconds,
                held: d.stats.held.load(Ordering::Relaxed),
            },
        );
    }
    *last = seen;
    report
}

/// Reports until `shutdown` changes.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut last = HashMap::new();
    let mut at = Instant::now();
    let mut interval = tokio::time::interval(shared.config.report_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !shared.table.load().loaded {
            continue;
        }
        let now = Instant::now();
        let report = load(&shared.table.load(), &mut last, now - at);
        at = now;
        let url = &shared.controller_url();
        let sent = shared
            .http
            .put(format!("{url}/v1/gateways/{}/load", shared.config.name))
            .json(&report)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::debug!(controller = %url, status = %r.status(), "load report not taken")
            }
            Err(e) => tracing::debug!(controller = %url, error = %e, "load report not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::Route;
    use berth_api::endpoints::{DeploymentEndpoints, EndpointTable};

    #[test]
    fn the_report_gives_each_deployment_its_rate_since_the_last_one() {
        let endpoints = EndpointTable {
            deployments: vec![DeploymentEndpoints {
                name: "orders".into(),
                module: "orders".into(),
                route: Route::default(),
                rules: None,
                replicas: Vec::new(),
            }],
            revision: "r".into(),
        };
        let table = crate::table::Live::new(Default::default()).build(&endpoints);
        let stats = &table.deployments[0].stats;
        stats.requests.store(100, Ordering::Relaxed);
        let mut last = HashMap::new();
        // The first report has no earlier count: rate 0, not 100 at once.
        let first = load(&table, &mut last, Duration::from_secs(1));
        assert_eq!(first.deployments["orders"].rps, 0.0);
        stats.requests.store(110, Ordering::Relaxed);
        stats.in_flight.store(3, Ordering::Relaxed);
        let second = load(&table, &mut last, Duration::from_secs(2));
        let orders = &second.deployments["orders"];
        assert_eq!((orders.rps, orders.in_flight, orders.held), (5.0, 3, 0));
        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"deployments": {"orders": {"in_flight": 3, "rps": 5.0, "held": 0}}})
        );
    }
}
