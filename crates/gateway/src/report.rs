//! The load report: every interval (a second by default) the gateway tells
//! the controller each deployment's traffic here
//! (`PUT /v1/gateways/{name}/load`, [`GatewayLoad`]): requests in flight,
//! requests per second since the last report, and requests held. It is
//! the autoscaler's input. A controller without that endpoint (404) or not
//! reachable is noted at debug level only: the report is best effort and
//! never affects serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_api::endpoints::{DeploymentLoad, GatewayLoad};
use tokio::sync::watch;

use crate::server::Shared;

/// The load of every deployment in the current table, given the request
/// counts of the last report (`last`, updated) over `elapsed`.
pub fn load(shared: &Shared, last: &mut HashMap<String, u64>, elapsed: Duration) -> GatewayLoad {
    let table = shared.table.load_full();
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
                held: 0,
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
        let report = load(&shared, &mut last, now - at);
        at = now;
        let controllers = &shared.config.controllers;
        let url = &controllers[shared.controller.load(Ordering::Relaxed) % controllers.len()];
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
