//! The base's side of the controller link: heartbeat, and run what is assigned.
//!
//! When a base is started with a controller, two tasks talk to it:
//!
//! - **heartbeat**: every interval (and at once after the base changed what
//!   it runs) it reports itself — name, labels, capacity, addresses, the
//!   module versions it runs, the assigned ones it could not run, requests
//!   in flight;
//! - **watch**: a long poll on `GET /v1/bases/{name}/assignments?known=REV`
//!   that the controller answers the moment this base's assignments change
//!   (or after 30 s with the same ones). Each answer is applied: what is
//!   missing is installed (or switched to, if installed), older versions of
//!   those modules are removed, and modules this base installed for the
//!   controller that are no longer assigned are uninstalled; modules
//!   installed by hand through the ops API are left alone. The answer's
//!   *warm* list (a buffer base's) is compiled into the cache in the
//!   background without being installed, so a later scale-out onto this
//!   base installs from cache.
//!
//! An install maps the code the controller compiled when it is ready; a
//! base with the Winch tier waits for it only `--controller-code-wait`
//! (250 ms), then serves on its own Winch code and moves up to the
//! controller's Cranelift code when it arrives, without compiling that tier
//! itself meanwhile.
//!
//! Why a watch and not the heartbeat's answer: a change reaches the base in
//! one round trip instead of up to one heartbeat interval later, while the
//! heartbeat stays a cheap report. A controller that is down or refuses is
//! logged once per outage and retried; the base keeps serving its modules
//! either way (the controller is never on the request path), and a
//! controller that says this base is not Ready yet is answered with a
//! heartbeat before the watch asks again — an empty answer never arrives for
//! that reason, so a controller restart never empties a base.
//!
//! Several controllers (one etcd, one leader) are one comma-separated
//! `--controller` list: every call goes to the controller that answered
//! last and fails over to the next ([`Controllers`]); a follower forwards
//! the heartbeat to the leader and serves the watch from the shared store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::failover::Controllers;
use berth_api::{
    ArtifactSource, Assignment, Assignments, BaseHeartbeat, InstallRequest, ModuleRef, ModuleState,
};
use tokio::sync::{Notify, watch};

use crate::base::Base;
use crate::config::ControllerLink;
use crate::error::OpsError;

/// How long the controller may hold a watch.
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// What the two tasks share.
struct Agent {
    base: Base,
    link: ControllerLink,
    ops: SocketAddr,
    ingress: SocketAddr,
    /// The controller(s) of `link.url`, failing over to each other.
    controllers: Controllers,
    /// The revision of the assignments last applied, and the assigned
    /// versions that could not run, with why (reported in heartbeats).
    failures: Mutex<(String, BTreeMap<String, String>)>,
    /// Wakes the heartbeat task to report now.
    report_now: Notify,
    /// Digests being warmed now (each is compiled once).
    warming: Mutex<BTreeSet<String>>,
}

/// Heartbeats, and runs what the controller assigns, until `shutdown` changes.
pub(crate) async fn run(
    base: Base,
    link: ControllerLink,
    ops: SocketAddr,
    ingress: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let http = berth_api::tls::with_trusted_ca(reqwest::Client::builder())
        .connect_timeout(Duration::from_secs(2))
        .default_headers(berth_api::auth::bearer_headers(link.join_token.as_deref()))
        .build()
        .expect("an HTTP client");
    let controllers = match Controllers::parse_with(&link.url, http) {
        Ok(controllers) => controllers,
        Err(e) => {
            // ControllerLink::new checked the list; a hand-built link may not.
            tracing::error!(error = %e, "no controller to talk to");
            return;
        }
    };
    let agent = Arc::new(Agent {
        base,
        link,
        ops,
        ingress,
        controllers,
        failures: Mutex::new((String::new(), BTreeMap::new())),
        report_now: Notify::new(),
        warming: Mutex::new(BTreeSet::new()),
    });
    let heartbeats = tokio::spawn(agent.clone().heartbeats(shutdown.clone()));
    agent.watch(shutdown).await;
    let _ = heartbeats.await;
}

/// Logs a lost or regained controller once per change.
struct Reachability {
    what: &'static str,
    reachable: bool,
}

impl Reachability {
    fn ok(&mut self, url: &str) {
        if !self.reachable {
            tracing::info!(controller = %url, "controller reachable again; {} resumed", self.what);
        }
        self.reachable = true;
    }

    fn failed(&mut self, url: &str, why: &str, retry: Duration) {
        if self.reachable {
            tracing::warn!(controller = %url, %why, "cannot reach the controller for {}; modules keep serving, retrying every {retry:?}", self.what);
        }
        self.reachable = false;
    }
}

impl Agent {
    /// `path` under this base's resource on the controller at `controller`.
    fn url(&self, controller: &str, path: &str) -> String {
        format!("{controller}/v1/bases/{}{path}", self.link.name)
    }

    fn heartbeat(&self) -> BaseHeartbeat {
        let modules = self.base.list(None).map(|l| l.modules).unwrap_or_default();
        let (revision, failures) = self.failures.lock().expect("agent state").clone();
        BaseHeartbeat {
            name: self.link.name.clone(),
            labels: self.link.labels.clone(),
            capacity_modules: self.link.capacity_modules,
            ingress: self
                .link
                .advertise
                .clone()
                .unwrap_or_else(|| self.ingress.to_string()),
            ops: self.ops.to_string(),
            in_flight: modules.iter().map(|m| m.in_flight).sum(),
            modules: modules
                .iter()
                .map(|m| ModuleRef::label(&m.name, &m.version))
                .collect(),
            failures,
            revision,
            capabilities: self.base.runtime().interfaces(),
        }
    }

    async fn heartbeats(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut link = Reachability {
            what: "heartbeats",
            reachable: true,
        };
        loop {
            let beat = self.heartbeat();
            let sent = self
                .controllers
                .send(|http, controller| {
                    http.put(self.url(controller, ""))
                        .timeout(Duration::from_secs(5))
                        .json(&beat)
                })
                .await;
            let at = self.controllers.current();
            match sent {
                Ok(r) if r.status().is_success() => link.ok(at),
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                    // Refused: say why (no or a wrong --join-token).
                    let status = r.status();
                    let why = r
                        .json::<berth_api::ErrorBody>()
                        .await
                        .map(|b| b.error.message)
                        .unwrap_or_default();
                    link.failed(
                        at,
                        &format!("it answered {status}: {why}"),
                        self.link.interval,
                    )
                }
                Ok(r) => link.failed(
                    at,
                    &format!("it answered {}", r.status()),
                    self.link.interval,
                ),
                Err(e) => link.failed(at, &e.to_string(), self.link.interval),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.link.interval) => {}
                _ = self.report_now.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn watch(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Which modules this base runs for the controller, kept across
        // restarts so that one unassigned while the base was down is still
        // removed.
        let managed_file = self.base.config().data_dir.join("controller-managed.json");
        let mut managed: BTreeSet<String> = std::fs::read(&managed_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut known = String::new();
        // A restarted controller is noticed within a second even when
        // heartbeats are rare.
        let retry = self.link.interval.min(Duration::from_secs(1));
        let mut link = Reachability {
            what: "assignment watch",
            reachable: true,
        };
        loop {
            let wait = WATCH_WAIT.as_millis().to_string();
            let asked = self.controllers.send(|http, controller| {
                http.get(self.url(controller, "/assignments"))
                    .query(&[("known", known.as_str()), ("waitMs", wait.as_str())])
                    .timeout(WATCH_WAIT + Duration::from_secs(10))
            });
            let answer = tokio::select! {
                answer = asked => answer,
                _ = shutdown.changed() => return,
            };
            let answer = match answer {
                Ok(r) if r.status().is_success() => r
                    .json::<Assignments>()
                    .await
                    .map_err(|e| format!("unreadable assignments: {e}")),
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                    // Not Ready there yet: report, then ask again shortly.
                    self.report_now.notify_one();
                    tokio::select! {
                        _ = tokio::time::sleep(self.link.interval.min(Duration::from_millis(200))) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
                Ok(r) => Err(format!("it answered {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(mut assigned) => {
                    link.ok(self.controllers.current());
                    self.warm(std::mem::take(&mut assigned.warm));
                    known = assigned.revision;
                    // Record the names before installing them: a base killed
                    // between an install and the record would otherwise
                    // keep a module the controller later unassigns.
                    let mut intent = managed.clone();
                    intent.extend(assigned.modules.iter().map(|a| a.name.clone()));
                    if intent != managed {
                        record_managed(&managed_file, &intent);
                    }
                    let code = self
                        .link
                        .controller_code
                        .then_some((&self.controllers, self.link.code_wait));
                    let failures = reconcile(
                        &self.base,
                        assigned.modules,
                        &mut managed,
                        &self.controllers,
                        code,
                    )
                    .await;
                    *self.failures.lock().expect("agent state") = (known.clone(), failures);
                    if managed != intent {
                        record_managed(&managed_file, &managed);
                    }
                    // Tell the controller what runs now, without waiting
                    // for the interval.
                    self.report_now.notify_one();
                    continue;
                }
                Err(why) => {
                    link.failed(&self.controllers.describe(), &why, retry);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Agent {
    /// Compiles the code of `list` into the cache in the background, without
    /// serving it (a buffer base's warm assignments): the controller's code
    /// when it has some, else compiled here. Each digest is warmed once.
    fn warm(self: &Arc<Self>, list: Vec<Assignment>) {
        let cache = self.base.runtime().cache();
        let todo: Vec<(Assignment, berth_runtime::Digest)> = {
            let mut warming = self.warming.lock().expect("agent state");
            list.into_iter()
                .filter_map(|a| {
                    let digest = a.digest.parse::<berth_runtime::Digest>().ok()?;
                    (!cache.has_compiled(&digest) && warming.insert(a.digest.clone()))
                        .then_some((a, digest))
                })
                .collect()
        };
        if todo.is_empty() {
            return;
        }
        let agent = self.clone();
        tokio::spawn(async move {
            for (a, digest) in todo {
                if agent.link.controller_code {
                    fetch_code(&agent.base, &agent.controllers, &a.digest).await;
                }
                let label = ModuleRef::label(&a.name, &a.version);
                match agent
                    .base
                    .warm(artifact_source(&agent.controllers, &a.digest), digest)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(module = %label, "compiled into the cache ahead of a scale-out")
                    }
                    Ok(false) => tracing::debug!(module = %label, "code already cached"),
                    Err(e) => {
                        tracing::warn!(module = %label, error = %e, "cannot warm the code of an autoscaled module; an install here will compile it")
                    }
                }
                agent.warming.lock().expect("agent state").remove(&a.digest);
            }
        });
    }
}

/// Where an assignment's artifact is read from: the controller, which
/// serves what it deploys (and its `.sig`). The base needs no access to the
/// artifact's own path or host, and the controllers' hosts are allowed
/// implicitly.
fn artifact_source(controllers: &Controllers, digest: &str) -> ArtifactSource {
    ArtifactSource::Url(format!(
        "{}/v1/artifacts/{}",
        controllers.current().trim_end_matches('/'),
        digest.trim_start_matches("sha256:")
    ))
}

/// Writes which modules this base runs for the controller to `file`.
fn record_managed(file: &std::path::Path, managed: &BTreeSet<String>) {
    let json = serde_json::to_vec(managed).expect("names serialize");
    if let Err(e) = std::fs::write(file, json) {
        tracing::warn!(file = %file.display(), error = %e, "cannot record the modules run for the controller");
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
    controllers: &Controllers,
    code: Option<(&Controllers, Duration)>,
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
                let artifact = artifact_source(controllers, &a.digest);
                if let Some((controllers, wait)) = code {
                    code_or_winch(base, controllers, &a.digest, wait).await;
                }
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
                    tracing::info!(module = %ModuleRef::label(&a.name, &a.version), "running as assigned by the controller");
                }
                for old in installed.iter().filter(|m| m.version != a.version) {
                    if let Err(e) = base.uninstall(&a.name, Some(&old.version)).await {
                        tracing::debug!(module = %a.name, version = %old.version, error = %e, "kept an older version");
                    }
                }
            }
            Err(e) => {
                let label = ModuleRef::label(&a.name, &a.version);
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
                // Recorded, but the base stopped before installing it.
                Err(OpsError::ModuleNotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(module = %name, error = %e, "cannot uninstall an unassigned module")
                }
            }
            managed.remove(&name);
        }
    }
    failures
}

/// Gets the controller's code for `digest` before an install, without
/// letting a slow controller compile hold the install up: on a base with the
/// Winch tier the install waits at most `wait`, then compiles with Winch and
/// serves while the fetch goes on. Until the fetch ends, the base does not
/// compile Cranelift code for `digest` itself ([`berth_runtime::ExpectedCode`]);
/// then the module maps the controller's code, or compiles its own if none
/// came. A Cranelift-only base waits for the fetch.
async fn code_or_winch(base: &Base, controllers: &Controllers, digest: &str, wait: Duration) {
    let Ok(parsed) = digest.parse::<berth_runtime::Digest>() else {
        return;
    };
    if base.runtime().cache().has_compiled(&parsed) {
        return;
    }
    let Some(expected) = base.runtime().expect_code(parsed) else {
        fetch_code(base, controllers, digest).await;
        return;
    };
    let (base, controllers, digest) = (base.clone(), controllers.clone(), digest.to_owned());
    let mut fetch = tokio::spawn(async move {
        fetch_code(&base, &controllers, &digest).await;
        drop(expected);
    });
    if tokio::time::timeout(wait, &mut fetch).await.is_err() {
        tracing::debug!(digest = %parsed, "the controller's code is not ready: serving on Winch code until it is");
    }
}

/// Puts the controller's compiled code for `digest` into this base's cache,
/// unless it is there already; on any failure the base compiles the module
/// itself, so this only ever saves time.
async fn fetch_code(base: &Base, controllers: &Controllers, digest: &str) {
    let Ok(parsed) = digest.parse::<berth_runtime::Digest>() else {
        return;
    };
    let cache = base.runtime().cache();
    if cache.has_compiled(&parsed) {
        return;
    }
    let fetched = controllers
        .send(|http, controller| {
            http.get(format!("{controller}/v1/code/{}", parsed.hex()))
                .query(&[("engine", cache.engine_tag())])
                .timeout(Duration::from_secs(120))
        })
        .await
        .map_err(|e| e.to_string());
    let code = match fetched {
        Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!(
            "{}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    };
    match code {
        Ok(code) => match cache.store_compiled(&parsed, &code) {
            Ok(()) => {
                tracing::debug!(%digest, bytes = code.len(), "loaded code compiled by the controller")
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot store the controller's code; compiling here")
            }
        },
        Err(why) => tracing::debug!(%digest, %why, "no code from the controller; compiling here"),
    }
}
