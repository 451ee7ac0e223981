//! The controller's HTTP API: manifests in, resources out (JSON).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/health` | liveness |
//! | POST | `/v1/apply` | create or update from a YAML or JSON manifest |
//! | GET | `/v1/deployments` | every ModuleDeployment with its status |
//! | GET | `/v1/deployments/{name}` | one, as stored (manifest, generation, history), with status and events |
//! | DELETE | `/v1/deployments/{name}` | delete one |
//! | POST | `/v1/deployments/{name}/rollout/{confirm,pause,resume,undo}` | steer its rollout |
//! | POST | `/v1/deployments/{name}/activate` | a replica for a deployment scaled to zero ([`crate::scaler`]) |
//! | PUT | `/v1/gateways/{name}/load` | a gateway's load report ([`crate::load`]) |
//! | PUT | `/v1/bases/{name}` | a base's heartbeat ([`BaseHeartbeat`]); answers its [`Assignments`](berth_api::Assignments) |
//! | GET | `/v1/bases/{name}/assignments?known=REV&waitMs=N` | a base's assignments, held (long poll, up to `waitMs`, default 30 s) while they are still `REV` |
//! | GET | `/v1/bases` | every base with Ready / NotReady |
//! | GET | `/v1/endpoints?known=REV&waitMs=N` | the gateways' endpoint table ([`crate::endpoints`]), held (long poll) while it is still `REV` |
//! | GET | `/v1/code/{digest}?engine=TAG` | the deployed artifact `digest` compiled for engine `TAG` ([`crate::code`]) |
//! | GET | `/v1/artifacts/{digest}`, `/v1/artifacts/{digest}.sig` | a deployed artifact's bytes (checked against its digest) and its detached signature: bases install from here, so they need no access to the artifact's path or host |
//! | GET | `/metrics` | Prometheus metrics of the controller |
//!
//! A manifest problem is a 422 `invalid_manifest` whose message starts with
//! the path of the bad field, and changes nothing; that includes a module
//! artifact the controller can fetch that is unreadable, not a component or
//! not of its digest ([`crate::artifact`]). Every change (apply,
//! delete, rollout action, a heartbeat with news) runs a reconcile pass
//! before it is answered, so what the answer shows is already assigned.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::manifest::{self, Manifest};
use berth_api::{BaseHeartbeat, ErrorBody, ErrorDetail, RolloutAction};
use serde::Serialize;

use crate::code::{CodeError, CodeShop};
use crate::events::{DeploymentEvent, NewEvent};
use crate::reconciler::Reconciler;
use crate::resources::{Applied, ResourceError, Resources, StoredDeployment};
use crate::status::DeploymentStatus;
use crate::store::SharedStore;

/// Shared state of the API.
#[derive(Clone)]
pub struct Shared {
    /// The reconciler (and the deployments and store under it).
    pub reconciler: Arc<Reconciler>,
    /// Compiled code for the bases; `None`: bases compile for themselves.
    pub code: Option<Arc<CodeShop>>,
    /// Keys applied artifacts must be signed with (`--trust-key`); none:
    /// signatures are not required.
    pub trust_keys: berth_runtime::TrustKeys,
}

impl Shared {
    fn resources(&self) -> &Resources<SharedStore> {
        self.reconciler.resources()
    }
}

/// Serves the API on `listener` and runs the reconciler's tick until
/// `shutdown` resolves; long polls are answered at once when it does.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_gate(listener, shared, None, shutdown).await
}

/// [`serve`], with the API behind `gate` ([`crate::auth`]) when given, on
/// any listener (a [`crate::tls::TlsListener`] for HTTPS).
pub async fn serve_with_gate<L>(
    listener: L,
    shared: Shared,
    gate: Option<Arc<berth_api::auth::Gate>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let reconciler = shared.reconciler.clone();
    if let Some(shop) = &shared.code {
        reconciler.set_code(shop.clone());
    }
    if let Err(e) = reconciler.reconcile() {
        tracing::warn!(error = %e, "first reconcile failed; retrying on the tick");
    }
    let ticking = tokio::spawn(reconciler.clone().run());
    let scaling = tokio::spawn(crate::scaler::run(reconciler.clone()));
    let stopper = reconciler.clone();
    let mut app = router(shared);
    if let Some(gate) = gate {
        app = crate::auth::wrap(app, gate);
    }
    let app = crate::forward::wrap(app, reconciler.leadership());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopper.stop();
        })
        .await;
    reconciler.stop();
    let _ = ticking.await;
    let _ = scaling.await;
    result
}

/// An API failure: each variant has a stable wire code and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A heartbeat body that does not parse, or names another base.
    #[error("{0}")]
    InvalidHeartbeat(String),
    /// A watch from a base that is unknown or not Ready.
    #[error(
        "base `{name}` is not Ready (unknown, or no heartbeat within {timeout}); \
         a base is Ready from its first heartbeat (`berth base --controller … --name {name}` sends them)"
    )]
    BaseNotReady {
        /// The base.
        name: String,
        /// The controller's heartbeat timeout, human readable.
        timeout: String,
    },
    /// No compiled code for this digest (or this controller does not compile).
    #[error("{0}")]
    NoCode(String),
    /// Compiling the artifact failed.
    #[error("{0}")]
    CompileFailed(String),
    /// No deployment names the artifact asked for, or it has no signature (404).
    #[error("{0}")]
    ArtifactNotServed(String),
    /// The artifact could not be read from its source, or changed (502).
    #[error("{0}")]
    ArtifactUnavailable(String),
    /// The manifest is not UTF-8 (400).
    #[error("the manifest is not UTF-8 text")]
    ManifestNotText,
    /// The manifest does not validate (422).
    #[error("{0}")]
    InvalidManifest(String),
    /// No ModuleDeployment of that name.
    #[error("no ModuleDeployment named `{0}`; list them with `berth get deployments`")]
    DeploymentNotFound(String),
    /// A rollout action that does not exist.
    #[error("no rollout action `{0}`; use confirm, pause, resume or undo")]
    UnknownRolloutAction(String),
    /// A rollout action with nothing to act on.
    #[error("{0}")]
    NoRollout(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ResourceError),
    /// Store work or a reconcile pass panicked.
    #[error("{what} panicked: {reason}")]
    Panicked {
        /// What was running.
        what: &'static str,
        /// The panic.
        reason: String,
    },
}

impl ApiError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidHeartbeat(_) => "invalid_heartbeat",
            Self::BaseNotReady { .. } => "base_not_ready",
            Self::NoCode(_) => "no_code",
            Self::CompileFailed(_) => "compile_failed",
            Self::ArtifactNotServed(_) => "artifact_not_served",
            Self::ArtifactUnavailable(_) => "artifact_unavailable",
            Self::ManifestNotText | Self::InvalidManifest(_) => "invalid_manifest",
            Self::DeploymentNotFound(_) | Self::UnknownRolloutAction(_) => "not_found",
            Self::NoRollout(_) => "no_rollout",
            Self::Store(_) => "store_failed",
            Self::Panicked { what, .. } if *what == RECONCILE => "reconcile_failed",
            Self::Panicked { .. } => "store_failed",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidHeartbeat(_) | Self::ManifestNotText => StatusCode::BAD_REQUEST,
            Self::BaseNotReady { .. } | Self::NoRollout(_) => StatusCode::CONFLICT,
            Self::NoCode(_)
            | Self::ArtifactNotServed(_)
            | Self::DeploymentNotFound(_)
            | Self::UnknownRolloutAction(_) => StatusCode::NOT_FOUND,
            Self::ArtifactUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::CompileFailed(_) | Self::InvalidManifest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Store(_) | Self::Panicked { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What [`ApiError::Panicked`] says of a reconcile pass.
const RECONCILE: &str = "the reconcile pass";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
            },
        };
        (self.status(), axum::Json(body)).into_response()
    }
}

/// Runs store work (redb commits are durable, so they wait on the disk) on
/// a blocking thread, never on an async worker.
async fn blocking<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce(&Shared) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .map_err(|e| ApiError::Panicked {
            what: "store work",
            reason: e.to_string(),
        })?
}

/// The response to an apply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// The resource kind.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// `created`, `updated` or `unchanged`.
    pub result: &'static str,
    /// Its generation now.
    pub generation: u64,
}

/// The API router over `shared`.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/bases", get(list_bases))
        .route("/v1/bases/{name}", axum::routing::put(heartbeat))
        .route("/v1/bases/{name}/assignments", get(watch_assignments))
        .route("/v1/endpoints", get(watch_endpoints))
        .route("/metrics", get(metrics))
        .route("/v1/code/{digest}", get(code))
        .route("/v1/artifacts/{file}", get(artifact))
        .route(
            "/v1/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/v1/apply", post(apply))
        .route("/v1/deployments", get(list))
        .route("/v1/deployments/{name}", get(show).delete(delete))
        .route(
            "/v1/deployments/{name}/rollout/{action}",
            post(rollout_action),
        )
        .merge(crate::scaler::routes())
        .with_state(shared)
}

async fn heartbeat(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let beat: BaseHeartbeat = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidHeartbeat(format!("the heartbeat is not valid: {e}")))?;
    if beat.name != name {
        return Err(ApiError::InvalidHeartbeat(format!(
            "the heartbeat names base `{}` but was sent to /v1/bases/{name}",
            beat.name
        )));
    }
    let name = beat.name.clone();
    shared.reconciler.metrics.heartbeats.inc();
    let news = blocking(&shared, move |shared| {
        Ok(crate::bases::heartbeat(
            shared.resources().store(),
            beat,
            shared.reconciler.heartbeat_timeout(),
        )?)
    })
    .await?;
    if news {
        reconcile(&shared).await?;
    }
    let snapshot = shared.reconciler.subscribe().borrow().clone();
    let assigned = snapshot.assignments(&name).unwrap_or_default();
    Ok(axum::Json(assigned).into_response())
}

/// Runs a reconcile pass off the async threads.
pub(crate) async fn reconcile(shared: &Shared) -> Result<(), ApiError> {
    let reconciler = shared.reconciler.clone();
    tokio::task::spawn_blocking(move || reconciler.reconcile())
        .await
        .map_err(|e| ApiError::Panicked {
            what: RECONCILE,
            reason: e.to_string(),
        })??;
    Ok(())
}

/// Query of an assignments watch.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchQuery {
    /// The revision the base already runs.
    known: Option<String>,
    /// How long to hold the request while nothing changes (ms).
    wait_ms: Option<u64>,
}

/// Longest a watch is held.
const MAX_WAIT: Duration = Duration::from_secs(60);

async fn watch_assignments(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<WatchQuery>,
) -> Result<Response, ApiError> {
    let wait = query
        .wait_ms
        .map_or(Duration::from_secs(30), Duration::from_millis)
        .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut updates = shared.reconciler.subscribe();
    loop {
        let snapshot = updates.borrow_and_update().clone();
        let Some(assigned) = snapshot.assignments(&name) else {
            return Err(ApiError::BaseNotReady {
                name,
                timeout: humantime::format_duration(shared.reconciler.heartbeat_timeout())
                    .to_string(),
            });
        };
        if query.known.as_deref() != Some(assigned.revision.as_str()) {
            return Ok(axum::Json(assigned).into_response());
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, updates.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    return Ok(axum::Json(assigned).into_response());
                }
            }
            _ = shared.reconciler.stopped() => {
                return Ok(axum::Json(assigned).into_response());
            }
        }
    }
}

/// The endpoint table, answered at once unless the watcher already has
/// revision `known`; then held until it changes, up to `waitMs`.
async fn watch_endpoints(
    State(shared): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<WatchQuery>,
) -> Response {
    let wait = query
        .wait_ms
        .map_or(Duration::from_secs(30), Duration::from_millis)
        .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut updates = shared.reconciler.subscribe();
    loop {
        let table = updates.borrow_and_update().endpoints.clone();
        if query.known.as_deref() != Some(table.revision.as_str()) {
            return axum::Json(&*table).into_response();
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, updates.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    return axum::Json(&*table).into_response();
                }
            }
            _ = shared.reconciler.stopped() => return axum::Json(&*table).into_response(),
        }
    }
}

/// Query of a code request.
#[derive(Debug, serde::Deserialize)]
struct CodeQuery {
    /// The asking base's engine tag.
    engine: String,
}

/// The compiled code of a deployed artifact (`digest`: `sha256:…` or its hex).
/// `GET /v1/artifacts/{digest}[.sig]`: a deployed artifact, or its signature.
async fn artifact(
    State(shared): State<Shared>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (hex, want_signature) = match file.strip_suffix(".sig") {
        Some(hex) => (hex, true),
        None => (file.as_str(), false),
    };
    let digest = format!("sha256:{}", hex.trim_start_matches("sha256:"));
    let artifact = deployed_artifact(&shared, &digest).await?.ok_or_else(|| {
        ApiError::ArtifactNotServed(format!(
            "no deployment names artifact {digest}; the controller serves only what it deploys"
        ))
    })?;
    let unavailable =
        |e: crate::artifact::ArtifactError| ApiError::ArtifactUnavailable(e.to_string());
    let bytes = if want_signature {
        crate::artifact::signature(&artifact)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                ApiError::ArtifactNotServed(format!("artifact {digest} has no signature beside it"))
            })?
            .into_bytes()
    } else {
        crate::artifact::fetch_checked(&artifact, &digest)
            .await
            .map_err(unavailable)?
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// The artifact of `digest` if some deployment names it (its module, the
/// version a rollout moves from, or one in its history): the controller
/// serves only what it deploys.
async fn deployed_artifact(shared: &Shared, digest: &str) -> Result<Option<String>, ApiError> {
    let deployments = blocking(shared, |shared| Ok(shared.resources().deployments()?)).await?;
    Ok(deployments
        .iter()
        .flat_map(|d| {
            let s = &d.manifest.spec;
            std::iter::once(&s.module)
                .chain(d.rollout.as_ref().map(|r| &r.from))
                .chain(d.history.iter())
        })
        .find(|m| m.digest == digest)
        .map(|m| m.artifact.clone()))
}

async fn code(
    State(shared): State<Shared>,
    Path(digest): Path<String>,
    axum::extract::Query(query): axum::extract::Query<CodeQuery>,
) -> Result<Response, ApiError> {
    let digest = if digest.starts_with("sha256:") {
        digest
    } else {
        format!("sha256:{digest}")
    };
    let no_code = |e: CodeError| ApiError::NoCode(e.to_string());
    let Some(shop) = &shared.code else {
        return Err(ApiError::NoCode(
            "this controller does not compile for its bases (started with --no-code); the base compiles the module itself".into(),
        ));
    };
    let artifact = deployed_artifact(&shared, &digest)
        .await?
        .ok_or_else(|| no_code(CodeError::Unknown(digest.clone())))?;
    let bytes = shop
        .code(&digest, &artifact, &query.engine)
        .await
        .map_err(|e| match e {
            CodeError::Failed { .. } => ApiError::CompileFailed(e.to_string()),
            other => no_code(other),
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

async fn metrics(State(shared): State<Shared>) -> Response {
    // The load gauges are summed here, once per scrape, not per report.
    shared
        .reconciler
        .scaler
        .load
        .export(std::time::Instant::now());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.reconciler.metrics.encode(),
    )
        .into_response()
}

async fn list_bases(State(shared): State<Shared>) -> Result<Response, ApiError> {
    let bases = blocking(&shared, |shared| Ok(shared.reconciler.bases()?)).await?;
    Ok(axum::Json(bases).into_response())
}

async fn apply(State(shared): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::ManifestNotText)?;
    let Manifest::ModuleDeployment(deployment) =
        manifest::parse(text).map_err(|e| ApiError::InvalidManifest(e.to_string()))?;
    let name = deployment.metadata.name.clone();
    let before = blocking(&shared, {
        let name = name.clone();
        move |shared| Ok(shared.resources().deployment(&name)?)
    })
    .await?;
    check_module(before.as_ref(), &deployment.spec.module, &shared.trust_keys).await?;
    let (applied, after) = blocking(&shared, {
        let name = name.clone();
        move |shared| {
            let applied = shared
                .resources()
                .apply(deployment, |d| runs_current(shared, d))?;
            let after = shared.resources().deployment(&name)?;
            shared
                .reconciler
                .record(&name, &apply_events(before.as_ref(), after.as_ref()))?;
            Ok((applied, after))
        }
    })
    .await?;
    if let (Some(shop), Some(d)) = (&shared.code, &after) {
        shop.prepare(
            &d.manifest.spec.module.digest,
            &d.manifest.spec.module.artifact,
        );
        // Placement waits for the module's imports: place again once the
        // compile has read them, not on the next tick.
        let (shop, again) = (shop.clone(), shared.clone());
        let module = d.manifest.spec.module.clone();
        tokio::spawn(async move {
            let _ = shop
                .code(&module.digest, &module.artifact, shop.tag())
                .await;
            if let Err(e) = reconcile(&again).await {
                tracing::warn!(error = %format!("{e:#}"), "reconcile after compile failed; retrying on the tick");
            }
        });
    }
    reconcile(&shared).await?;
    let (status, result, generation) = match applied {
        Applied::Created => (StatusCode::CREATED, "created", 1),
        Applied::Updated(g) => (StatusCode::OK, "updated", g),
        Applied::Unchanged(g) => (StatusCode::OK, "unchanged", g),
    };
    let response = ApplyResponse {
        kind: "ModuleDeployment",
        name,
        result,
        generation,
    };
    Ok((status, axum::Json(response)).into_response())
}

/// Refuses a module the bases could not run, before anything changes: an
/// artifact the controller can fetch that is unreadable, not a component or
/// not of its digest, and other bytes under a version already deployed
/// (a base keeps a version it runs, so they would never reach it).
async fn check_module(
    before: Option<&StoredDeployment>,
    module: &berth_api::manifest::ModuleRef,
    trust: &berth_runtime::TrustKeys,
) -> Result<(), ApiError> {
    let refused = |e: crate::artifact::ArtifactError| ApiError::InvalidManifest(e.to_string());
    if let Some(before) = before {
        let spec = &before.manifest.spec;
        if spec.module == *module {
            return Ok(());
        }
        let deployed =
            std::iter::once(&spec.module).chain(before.rollout.as_ref().map(|r| &r.from));
        for known in deployed {
            if known.name == module.name
                && known.version == module.version
                && known.digest != module.digest
            {
                return Err(refused(crate::artifact::ArtifactError {
                    field: "spec.module.digest",
                    message: format!(
                        "{}@{} is deployed with digest {}; an artifact with other bytes needs a new spec.module.version",
                        module.name, module.version, known.digest
                    ),
                }));
            }
        }
    }
    crate::artifact::check(module, trust).await.map_err(refused)
}

/// Whether some base runs `d`'s current version.
fn runs_current(shared: &Shared, d: &StoredDeployment) -> bool {
    let version = &d.manifest.spec.module.version;
    shared
        .reconciler
        .status(d)
        .bases
        .iter()
        .any(|r| r.running && r.version == *version)
}

/// What an apply changed, as events.
fn apply_events(
    before: Option<&StoredDeployment>,
    after: Option<&StoredDeployment>,
) -> Vec<NewEvent> {
    let Some(after) = after else {
        return Vec::new();
    };
    let spec = &after.manifest.spec;
    let Some(before) = before else {
        return vec![NewEvent::normal(
            "Created",
            format!(
                "{}@{} with {} replica(s)",
                spec.module.name,
                spec.module.version,
                spec.replicas_text()
            ),
        )];
    };
    let old = &before.manifest.spec;
    if before.generation == after.generation {
        return Vec::new();
    }
    let mut out = Vec::new();
    if old.replicas_text() != spec.replicas_text() {
        out.push(NewEvent::normal(
            "Scaled",
            format!(
                "replicas {} → {}",
                old.replicas_text(),
                spec.replicas_text()
            ),
        ));
    }
    if let (false, Some(rollout)) = (
        crate::resources::same_code(&old.module, &spec.module),
        &after.rollout,
    ) {
        out.push(NewEvent::normal(
            "RolloutStarted",
            format!(
                "{} → {} in {} batch(es){}",
                rollout.from.version,
                spec.module.version,
                spec.strategy.batches,
                if spec.strategy.need_confirm {
                    ", each confirmed"
                } else {
                    ""
                }
            ),
        ));
    }
    let failed = |d: &StoredDeployment| d.rollout.as_ref().is_some_and(|r| r.failed.is_some());
    if old.module.artifact != spec.module.artifact && failed(before) && !failed(after) {
        out.push(NewEvent::normal(
            "RolloutRestarted",
            format!(
                "{} from {}: the failed rollout starts over at batch 1",
                spec.module.version, spec.module.artifact
            ),
        ));
    }
    if !crate::resources::same_code(&old.module, &spec.module) && after.rollout.is_none() {
        out.push(NewEvent::normal(
            "VersionReplaced",
            format!(
                "{} → {} on every replica at once: {} is not a version that ran everywhere, so there is nothing to roll from",
                old.module.version, spec.module.version, old.module.version
            ),
        ));
    }
    if out.is_empty() {
        out.push(NewEvent::normal(
            "Updated",
            format!("spec changed (generation {})", after.generation),
        ));
    }
    out
}

/// `confirm`, `pause`, `resume` or `undo` the rollout of a deployment.
async fn rollout_action(
    State(shared): State<Shared>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let action: RolloutAction = action
        .parse()
        .map_err(|_| ApiError::UnknownRolloutAction(action))?;
    blocking(&shared, {
        let name = name.clone();
        move |shared| act_on_rollout(shared, &name, action)
    })
    .await?;
    reconcile(&shared).await?;
    let stored = blocking(&shared, move |shared| {
        shared
            .resources()
            .deployment(&name)?
            .ok_or(ApiError::DeploymentNotFound(name))
    })
    .await?;
    Ok(axum::Json(stored).into_response())
}

/// The store half of [`rollout_action`] (blocking).
fn act_on_rollout(shared: &Shared, name: &str, action: RolloutAction) -> Result<(), ApiError> {
    let Some(current) = shared.resources().deployment(name)? else {
        return Err(ApiError::DeploymentNotFound(name.to_string()));
    };
    if action == RolloutAction::Undo {
        // Back to the last version that ran: the one a rollout (going on
        // or failed) started from, else the one before the current.
        let previous = match &current.rollout {
            Some(r) => Some(r.from.clone()),
            None => current.history.last().cloned(),
        };
        let Some(previous) = previous else {
            return Err(ApiError::NoRollout(format!(
                "`{name}` has no earlier version to return to"
            )));
        };
        let mut manifest = current.manifest.clone();
        shared.reconciler.record(
            name,
            &[NewEvent::normal(
                "UndoRequested",
                format!(
                    "back from {} to {}",
                    manifest.spec.module.version, previous.version
                ),
            )],
        )?;
        manifest.spec.module = previous;
        shared
            .resources()
            .apply(manifest, |d| runs_current(shared, d))?;
        return Ok(());
    }
    if current.rollout.is_none() {
        return Err(ApiError::NoRollout(format!(
            "`{name}` has no rollout in progress"
        )));
    }
    shared.resources().update(name, |stored| {
        if let Some(r) = stored.rollout.as_mut() {
            match action {
                RolloutAction::Confirm => r.confirmed = r.confirmed.max(r.batch),
                RolloutAction::Pause => r.paused = true,
                RolloutAction::Resume | RolloutAction::Undo => r.paused = false,
            }
        }
    })?;
    let batch = current.rollout.as_ref().map_or(0, |r| r.batch);
    let event = match action {
        RolloutAction::Confirm => NewEvent::normal("Confirmed", format!("batch {batch} confirmed")),
        RolloutAction::Pause => NewEvent::normal("Paused", format!("held at batch {batch}")),
        RolloutAction::Resume | RolloutAction::Undo => {
            NewEvent::normal("Resumed", format!("going on from batch {batch}"))
        }
    };
    shared.reconciler.record(name, &[event])?;
    Ok(())
}

async fn list(State(shared): State<Shared>) -> Result<Response, ApiError> {
    let views = blocking(&shared, |shared| {
        Ok(shared
            .resources()
            .deployments()?
            .into_iter()
            .map(|stored| DeploymentView {
                status: shared.reconciler.status(&stored),
                stored,
                events: Vec::new(),
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(views).into_response())
}

/// A deployment with its live status and events.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    /// As stored.
    #[serde(flatten)]
    pub stored: StoredDeployment,
    /// Where it stands now.
    pub status: DeploymentStatus,
    /// What happened to it, oldest first (only when one deployment is shown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<DeploymentEvent>,
}

async fn show(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = blocking(&shared, move |shared| {
        let Some(stored) = shared.resources().deployment(&name)? else {
            return Err(ApiError::DeploymentNotFound(name));
        };
        let status = shared.reconciler.status(&stored);
        let events = crate::events::list(shared.resources().store(), &name)?;
        Ok(DeploymentView {
            stored,
            status,
            events,
        })
    })
    .await?;
    Ok(axum::Json(view).into_response())
}

async fn delete(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = blocking(&shared, {
        let name = name.clone();
        move |shared| {
            let deleted = shared.resources().delete_deployment(&name)?;
            if deleted {
                crate::events::forget(shared.resources().store(), &name)?;
            }
            Ok(deleted)
        }
    })
    .await?;
    if deleted {
        reconcile(&shared).await?;
        Ok(axum::Json(serde_json::json!({ "deleted": name })).into_response())
    } else {
        Err(ApiError::DeploymentNotFound(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_error_keeps_its_wire_code_and_status() {
        let cases = [
            (
                ApiError::InvalidHeartbeat("x".into()),
                "invalid_heartbeat",
                400,
            ),
            (
                ApiError::BaseNotReady {
                    name: "b1".into(),
                    timeout: "10s".into(),
                },
                "base_not_ready",
                409,
            ),
            (ApiError::NoCode("x".into()), "no_code", 404),
            (ApiError::CompileFailed("x".into()), "compile_failed", 422),
            (ApiError::ManifestNotText, "invalid_manifest", 400),
            (
                ApiError::InvalidManifest("x".into()),
                "invalid_manifest",
                422,
            ),
            (ApiError::DeploymentNotFound("d".into()), "not_found", 404),
            (
                ApiError::UnknownRolloutAction("skip".into()),
                "not_found",
                404,
            ),
            (ApiError::NoRollout("x".into()), "no_rollout", 409),
            (
                ApiError::Panicked {
                    what: RECONCILE,
                    reason: "boom".into(),
                },
                "reconcile_failed",
                500,
            ),
        ];
        for (error, code, status) in cases {
            assert_eq!(
                (error.code(), error.status().as_u16()),
                (code, status),
                "{error}"
            );
        }
        let message = ApiError::UnknownRolloutAction("skip".into()).to_string();
        assert!(
            message.contains("use confirm, pause, resume or undo"),
            "{message}"
        );
    }

    #[test]
    fn rollout_actions_parse_from_their_wire_spelling_only() {
        for action in [
            RolloutAction::Confirm,
            RolloutAction::Pause,
            RolloutAction::Resume,
            RolloutAction::Undo,
        ] {
            assert_eq!(action.as_str().parse::<RolloutAction>(), Ok(action));
        }
        assert!("Confirm".parse::<RolloutAction>().is_err());
    }
}
