//! The base's side of the controller link: heartbeat, and run what is assigned.
//!
//! When a base is started with a controller, it reports itself (name,
//! labels, capacity, addresses, the module versions it runs, requests in
//! flight) every interval, and the controller answers with the modules this
//! base should run. The agent then installs what is missing (or switches to
//! an installed version), removes older versions of those modules, and
//! uninstalls modules it installed for the controller that are no longer
//! assigned; modules installed by hand through the ops API are left alone.
//! A controller that is down or refuses is logged once per outage and
//! retried; the base keeps serving its modules either way (the controller is
//! never on the request path).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use berth_api::{
    ArtifactSource, Assignment, Assignments, BaseHeartbeat, InstallRequest, ModuleState,
};
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

/// Heartbeats (and runs what the controller assigns) until `shutdown` changes.
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
    // Which modules this base runs for the controller, kept across restarts
    // so that one unassigned while the base was down is still removed.
    let managed_file = base.config().data_dir.join("controller-managed.json");
    let mut managed: BTreeSet<String> = std::fs::read(&managed_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut failures = BTreeMap::new();
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
            failures: failures.clone(),
        };
        let answer = match http.put(&url).json(&beat).send().await {
            Ok(response) if response.status().is_success() => response
                .json::<Assignments>()
                .await
                .map_err(|e| format!("unreadable assignments: {e}")),
            Ok(response) => Err(format!("it answered {}", response.status())),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(assigned) => {
                if !reachable {
                    tracing::info!(controller = %link.url, "controller reachable again; heartbeats resumed");
                }
                reachable = true;
                let before = managed.clone();
                failures = reconcile(&base, assigned.modules, &mut managed).await;
                if managed != before {
                    let json = serde_json::to_vec(&managed).expect("names serialize");
                    if let Err(e) = std::fs::write(&managed_file, json) {
                        tracing::warn!(file = %managed_file.display(), error = %e, "cannot record the modules run for the controller");
                    }
                }
            }
            Err(why) => {
                if reachable {
                    tracing::warn!(controller = %link.url, %why, "cannot reach the controller; modules keep serving, retrying every {:?}", link.interval);
                }
                reachable = false;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(link.interval) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// Brings the base to `assigned`: installs or switches to each assigned
/// version, drops older versions of those modules, and uninstalls modules
/// in `managed` (installed for the controller) that are no longer assigned.
/// Returns the assigned versions that could not run, with why.
async fn reconcile(
    base: &Base,
    assigned: Vec<Assignment>,
    managed: &mut BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut failures = BTreeMap::new();
    for a in &assigned {
        let installed = base
            .list(Some(&a.name))
            .map(|l| l.modules)
            .unwrap_or_default();
        let current = installed.iter().find(|m| m.version == a.version);
        let result = match current {
            Some(m) if m.state == ModuleState::Active => Ok(()),
            Some(_) => base.switch(&a.name, &a.version).await.map(drop),
            None => {
                let artifact = match a.artifact.strip_prefix("file:") {
                    Some(path) => {
                        ArtifactSource::Path(format!("/{}", path.trim_start_matches('/')))
                    }
                    None => ArtifactSource::Url(a.artifact.clone()),
                };
                let request = InstallRequest {
                    route: a.route.clone(),
                    artifact: Some(artifact),
                    digest: Some(a.digest.clone()),
                    ..InstallRequest::new(&a.name, &a.version)
                };
                base.install(request, None).await.map(drop)
            }
        };
        match result {
            Ok(()) => {
                if managed.insert(a.name.clone()) || current.is_none() {
                    tracing::info!(module = %format!("{}@{}", a.name, a.version), "running as assigned by the controller");
                }
                for old in installed.iter().filter(|m| m.version != a.version) {
                    if let Err(e) = base.uninstall(&a.name, Some(&old.version)).await {
                        tracing::debug!(module = %a.name, version = %old.version, error = %e, "kept an older version");
                    }
                }
            }
            Err(e) => {
                let label = format!("{}@{}", a.name, a.version);
                tracing::warn!(module = %label, error = %e, "cannot run an assigned module");
                failures.insert(label, format!("{e} ({})", e.code()));
            }
        }
    }
    let wanted: BTreeSet<&str> = assigned.iter().map(|a| a.name.as_str()).collect();
    for name in managed.clone() {
        if !wanted.contains(name.as_str()) {
            match base.uninstall(&name, None).await {
                Ok(_) => {
                    tracing::info!(module = %name, "uninstalled: no longer assigned by the controller")
                }
                Err(e) => {
                    tracing::warn!(module = %name, error = %e, "cannot uninstall an unassigned module")
                }
            }
            managed.remove(&name);
        }
    }
    failures
}
