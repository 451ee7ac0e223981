//! The endpoint-table watch: a long poll on the controller's
//! `GET /v1/endpoints?known=REV`, answered the moment the table changes.
//!
//! Each answer becomes the routing snapshot. A controller that does not
//! answer is logged once per outage (one line naming every controller
//! tried and the cause) and the next one in the list is tried, every
//! second; the gateway keeps serving from the last table meanwhile (before
//! the first, it answers 503).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_api::endpoints::EndpointTable;
use tokio::sync::watch;

use crate::server::Shared;

/// How long the controller may hold a watch.
const WAIT: Duration = Duration::from_secs(30);
/// Time between attempts while no controller answers.
const RETRY: Duration = Duration::from_secs(1);

/// Watches until `shutdown` changes.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let controllers = shared.config.controllers.clone();
    let mut known = String::new();
    // None before the first attempt; then whether the last one was answered.
    let mut reachable: Option<bool> = None;
    loop {
        let index = shared.controller.load(Ordering::Relaxed) % controllers.len();
        let url = &controllers[index];
        let asked = shared
            .http
            .get(format!("{url}/v1/endpoints"))
            .query(&[
                ("known", known.as_str()),
                ("waitMs", &WAIT.as_millis().to_string()),
            ])
            .timeout(WAIT + Duration::from_secs(10))
            .send();
        let answer = tokio::select! {
            answer = asked => answer,
            _ = shutdown.changed() => return,
        };
        let table = match answer {
            Ok(r) if r.status().is_success() => r
                .json::<EndpointTable>()
                .await
                .map_err(|e| format!("unreadable endpoint table: {e}")),
            Ok(r) => Err(format!("it answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match table {
            Ok(table) => {
                if reachable != Some(true) {
                    tracing::info!(controller = %url, deployments = table.deployments.len(), "endpoint table received from the controller; routing");
                }
                reachable = Some(true);
                known = table.revision.clone();
                let snapshot = shared.live.lock().expect("gateway state").build(&table);
                shared.table.store(Arc::new(snapshot));
                shared.metrics.replicas.clear();
                for d in &table.deployments {
                    let serving = d.replicas.iter().filter(|r| r.ready && !r.draining).count();
                    shared
                        .metrics
                        .replicas
                        .get_or_create(&crate::metrics::Metrics::module(&d.module))
                        .set(serving as i64);
                }
                shared.changed.send_replace(());
                continue;
            }
            Err(why) => {
                if reachable != Some(false) {
                    tracing::warn!(
                        controllers = %controllers.join(","), %why,
                        "cannot reach the controller for the endpoint table; retrying every {RETRY:?}{}",
                        if reachable.is_none() { " (requests are answered 503 until it answers)" } else { " (routing by the last table meanwhile)" }
                    );
                }
                reachable = Some(false);
                shared
                    .controller
                    .store((index + 1) % controllers.len(), Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
