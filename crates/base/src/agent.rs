//! The base's side of the controller link: register, then heartbeat.
//!
//! When a base is started with a controller, it reports itself (name,
//! labels, capacity, addresses, the module versions it runs, requests in
//! flight) every interval. A controller that is down or refuses is logged
//! once per outage and retried; the base keeps serving its modules either
//! way (the controller is never on the request path).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use berth_api::BaseHeartbeat;
use tokio::sync::watch;

use crate::base::Base;

/// How a base reaches its controller.
#[derive(Debug, Clone)]
pub struct ControllerLink {
    /// The controller API, e.g. `http://127.0.0.1:1239`.
    pub url: String,
    /// This base's name in the fleet.
    pub name: String,
    /// Labels deployments select bases by.
    pub labels: BTreeMap<String, String>,
    /// Most module versions this base takes.
    pub capacity_modules: u32,
    /// Time between heartbeats.
    pub interval: Duration,
}

/// Heartbeats until `shutdown` changes.
pub(crate) async fn run(
    base: Base,
    link: ControllerLink,
    ops: SocketAddr,
    ingress: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let url = format!("{}/v1/bases/{}", link.url.trim_end_matches('/'), link.name);
    let mut reachable = true;
    loop {
        let modules = base.list(None).map(|l| l.modules).unwrap_or_default();
        let beat = BaseHeartbeat {
            name: link.name.clone(),
            labels: link.labels.clone(),
            capacity_modules: link.capacity_modules,
            ingress: ingress.to_string(),
            ops: ops.to_string(),
            in_flight: modules.iter().map(|m| m.in_flight).sum(),
            modules: modules
                .iter()
                .map(|m| format!("{}@{}", m.name, m.version))
                .collect(),
        };
        let sent = http.put(&url).json(&beat).send().await;
        let ok = matches!(&sent, Ok(r) if r.status().is_success());
        if ok && !reachable {
            tracing::info!(controller = %link.url, "controller reachable again; heartbeats resumed");
        } else if !ok && reachable {
            let why = match sent {
                Ok(r) => format!("it answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(controller = %link.url, %why, "cannot reach the controller; modules keep serving, retrying every {:?}", link.interval);
        }
        reachable = ok;
        tokio::select! {
            _ = tokio::time::sleep(link.interval) => {}
            _ = shutdown.changed() => break,
        }
    }
}
