//! Scale from zero: requests for a deployment with no ready replica are
//! held, not refused.
//!
//! While a deployment has no replica that can take a request (none
//! scheduled, none ready yet, all draining), its requests wait in a
//! bounded queue (`hold_queue` per deployment, default 1,000) for up to
//! `hold_timeout` (default 10 s). The first held request asks the
//! controller, once, to activate the deployment
//! (`POST /v1/deployments/{name}/activate`); every new endpoint table is
//! checked, and the held requests flow the moment a replica is ready,
//! answered with `x-berth-cold-start-ms` (how long they waited). A 503
//! says why otherwise: the queue is full, the wait ran out, or the
//! controller refused the activation (a 4xx with its reason). A controller
//! without the activation endpoint is noted at debug level, and requests
//! still wait for a replica to appear (say, one scaled up by hand).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_api::ErrorBody;

use crate::metrics::Metrics;
use crate::server::Shared;
use crate::table::{Deployment, DeploymentStats};

/// The response header saying how long a held request waited.
pub const COLD_START_HEADER: &str = "x-berth-cold-start-ms";

/// Holds a request for `deployment` until a replica can take it; returns
/// the deployment as the table then has it and how long the request
/// waited, or why it cannot be served.
pub async fn hold(
    shared: &Shared,
    deployment: Arc<Deployment>,
) -> Result<(Arc<Deployment>, Duration), String> {
    let started = Instant::now();
    let stats = deployment.stats.clone();
    let cap = shared.config.hold_queue as u64;
    if stats.held.fetch_add(1, Ordering::SeqCst) >= cap {
        stats.held.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "its hold queue is full ({cap} requests already wait for a replica)"
        ));
    }
    let gauge = shared
        .metrics
        .queue_depth
        .get_or_create(&Metrics::module(&deployment.module))
        .clone();
    gauge.inc();
    let _held = Held {
        stats: stats.clone(),
        gauge,
    };
    let mut changes = shared.changed.subscribe();
    if !stats.activating.swap(true, Ordering::SeqCst) {
        tokio::spawn(activate(
            shared.http.clone(),
            shared.controller_url(),
            deployment.name.clone(),
            stats.clone(),
            shared.changed.clone(),
        ));
    }
    let deadline = tokio::time::Instant::now() + shared.config.hold_timeout;
    loop {
        changes.borrow_and_update();
        let table = shared.table.load_full();
        match table.deployments.iter().find(|d| d.name == deployment.name) {
            Some(d) if d.serving() => return Ok((d.clone(), started.elapsed())),
            Some(_) => {}
            None => return Err("its deployment was deleted while the request waited".into()),
        }
        if let Some(reason) = stats.refused.lock().expect("hold state").clone() {
            return Err(format!("the controller cannot activate it: {reason}"));
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err("the gateway is shutting down".into());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "none became ready within {} (none scheduled or starting)",
                    humanize(shared.config.hold_timeout)
                ));
            }
        }
    }
}

/// `10s`, `500ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// One held request; dropping it leaves the queue. The last one out ends
/// the activation episode, so the next hold asks again.
struct Held {
    stats: Arc<DeploymentStats>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
        if self.stats.held.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.stats.refused.lock().expect("hold state") = None;
            self.stats.activating.store(false, Ordering::SeqCst);
        }
    }
}

/// Asks the controller at `url` to activate deployment `name`; a refusal
/// with a reason is recorded in `stats` and the held requests are woken.
async fn activate(
    http: reqwest::Client,
    url: String,
    name: String,
    stats: Arc<DeploymentStats>,
    changed: Arc<tokio::sync::watch::Sender<()>>,
) {
    let sent = http
        .post(format!("{url}/v1/deployments/{name}/activate"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {
            tracing::info!(deployment = %name, "asked the controller to activate it for held requests")
        }
        Ok(r) if r.status().is_client_error() => {
            let status = r.status();
            match r.json::<ErrorBody>().await {
                Ok(body) => {
                    tracing::warn!(deployment = %name, %status, reason = %body.error.message, "the controller refused to activate it");
                    *stats.refused.lock().expect("hold state") = Some(body.error.message);
                    changed.send_replace(());
                }
                Err(_) => tracing::debug!(
                    deployment = %name, %status,
                    "the controller has no activation endpoint; held requests wait for a replica"
                ),
            }
        }
        Ok(r) => {
            tracing::debug!(deployment = %name, status = %r.status(), "activation not answered")
        }
        Err(e) => tracing::debug!(deployment = %name, error = %e, "activation not sent"),
    }
}
