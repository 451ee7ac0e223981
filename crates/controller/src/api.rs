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
//! | PUT | `/v1/bases/{name}` | a base's heartbeat ([`BaseHeartbeat`]); answers its [`Assignments`](berth_api::Assignments) |
//! | GET | `/v1/bases/{name}/assignments?known=REV&waitMs=N` | a base's assignments, held (long poll, up to `waitMs`, default 30 s) while they are still `REV` |
//! | GET | `/v1/bases` | every base with Ready / NotReady |
//! | GET | `/v1/code/{digest}?engine=TAG` | the deployed artifact `digest` compiled for engine `TAG` ([`crate::code`]) |
//! | GET | `/metrics` | Prometheus metrics of the controller |
//!
//! A manifest problem is a 422 `invalid_manifest` whose message starts with
//! the path of the bad field, and changes nothing. Every change (apply,
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
use berth_api::{BaseHeartbeat, ErrorBody, ErrorDetail};
use serde::Serialize;

use crate::code::{CodeError, CodeShop};
use crate::events::{DeploymentEvent, NewEvent};
use crate::reconciler::Reconciler;
use crate::resources::{Applied, ResourceError, Resources, StoredDeployment};
use crate::status::DeploymentStatus;
use crate::store::RedbStore;

/// Shared state of the API.
#[derive(Clone)]
pub struct Shared {
    /// The reconciler (and the deployments and store under it).
    pub reconciler: Arc<Reconciler>,
    /// Compiled code for the bases; `None`: bases compile for themselves.
    pub code: Option<Arc<CodeShop>>,
}

impl Shared {
    fn resources(&self) -> &Resources<RedbStore> {
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
    let reconciler = shared.reconciler.clone();
    if let Some(shop) = &shared.code {
        reconciler.set_code(shop.clone());
    }
    if let Err(e) = reconciler.reconcile() {
        tracing::warn!(error = %e, "first reconcile failed; retrying on the tick");
    }
    let ticking = tokio::spawn(reconciler.clone().run());
    let stopper = reconciler.clone();
    let result = axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopper.stop();
        })
        .await;
    reconciler.stop();
    let _ = ticking.await;
    result
}

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "store_failed",
            message: e.to_string(),
        }
    }
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
        .route("/metrics", get(metrics))
        .route("/v1/code/{digest}", get(code))
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
        .with_state(shared)
}

async fn heartbeat(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let beat: BaseHeartbeat = serde_json::from_slice(&body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_heartbeat",
        message: format!("the heartbeat is not valid: {e}"),
    })?;
    if beat.name != name {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_heartbeat",
            message: format!(
                "the heartbeat names base `{}` but was sent to /v1/bases/{name}",
                beat.name
            ),
        });
    }
    let name = beat.name.clone();
    shared.reconciler.metrics.heartbeats.inc();
    let news = crate::bases::heartbeat(
        shared.resources().store(),
        beat,
        shared.reconciler.heartbeat_timeout(),
    )?;
    if news {
        reconcile(&shared).await?;
    }
    let snapshot = shared.reconciler.subscribe().borrow().clone();
    let (revision, modules) = snapshot.assignments(&name).unwrap_or_default();
    Ok(axum::Json(berth_api::Assignments { modules, revision }).into_response())
}

/// Runs a reconcile pass off the async threads.
async fn reconcile(shared: &Shared) -> Result<(), ApiError> {
    let reconciler = shared.reconciler.clone();
    tokio::task::spawn_blocking(move || reconciler.reconcile())
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "reconcile_failed",
            message: format!("the reconcile pass panicked: {e}"),
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
        let Some((revision, modules)) = snapshot.assignments(&name) else {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "base_not_ready",
                message: format!(
                    "base `{name}` is not Ready (unknown, or no heartbeat within {}); send a heartbeat (PUT /v1/bases/{name}) first",
                    humantime::format_duration(shared.reconciler.heartbeat_timeout())
                ),
            });
        };
        if query.known.as_deref() != Some(revision.as_str()) {
            return Ok(axum::Json(berth_api::Assignments { modules, revision }).into_response());
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, updates.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    return Ok(axum::Json(berth_api::Assignments { modules, revision }).into_response());
                }
            }
            _ = shared.reconciler.stopped() => {
                return Ok(axum::Json(berth_api::Assignments { modules, revision }).into_response());
            }
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
    let no_code = |e: CodeError| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "no_code",
        message: e.to_string(),
    };
    let Some(shop) = &shared.code else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "no_code",
            message: "this controller does not compile for its bases (started with --no-code); the base compiles the module itself".into(),
        });
    };
    let artifact = shared
        .resources()
        .deployments()?
        .iter()
        .flat_map(|d| {
            let s = &d.manifest.spec;
            std::iter::once(&s.module)
                .chain(d.rollout.as_ref().map(|r| &r.from))
                .chain(d.history.iter())
        })
        .find(|m| m.digest == digest)
        .map(|m| m.artifact.clone())
        .ok_or_else(|| no_code(CodeError::Unknown(digest.clone())))?;
    let bytes = shop
        .code(&digest, &artifact, &query.engine)
        .await
        .map_err(|e| match e {
            CodeError::Failed { .. } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "compile_failed",
                message: e.to_string(),
            },
            other => no_code(other),
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

async fn metrics(State(shared): State<Shared>) -> Response {
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
    Ok(axum::Json(shared.reconciler.bases()?).into_response())
}

async fn apply(State(shared): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_manifest",
        message: "the manifest is not UTF-8 text".into(),
    })?;
    let Manifest::ModuleDeployment(deployment) = manifest::parse(text).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_manifest",
        message: e.to_string(),
    })?;
    let name = deployment.metadata.name.clone();
    let before = shared.resources().deployment(&name)?;
    let applied = shared.resources().apply(deployment.clone())?;
    let after = shared.resources().deployment(&name)?;
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
                tracing::warn!(error = ?e, "reconcile after compile failed; retrying on the tick");
            }
        });
    }
    shared
        .reconciler
        .record(&name, &apply_events(before.as_ref(), after.as_ref()))?;
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
                spec.module.name, spec.module.version, spec.replicas
            ),
        )];
    };
    let old = &before.manifest.spec;
    if before.generation == after.generation {
        return Vec::new();
    }
    let mut out = Vec::new();
    if old.replicas != spec.replicas {
        out.push(NewEvent::normal(
            "Scaled",
            format!("replicas {} → {}", old.replicas, spec.replicas),
        ));
    }
    if old.module != spec.module {
        out.push(NewEvent::normal(
            "RolloutStarted",
            format!(
                "{} → {} in {} batch(es){}",
                old.module.version,
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
    let invalid = |message: String| ApiError {
        status: StatusCode::CONFLICT,
        code: "no_rollout",
        message,
    };
    if !matches!(action.as_str(), "confirm" | "pause" | "resume" | "undo") {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no rollout action `{action}`; use confirm, pause, resume or undo"),
        });
    }
    let Some(current) = shared.resources().deployment(&name)? else {
        return Err(not_found(&name));
    };
    if action == "undo" {
        let Some(previous) = current.history.last().cloned() else {
            return Err(invalid(format!(
                "`{name}` has no earlier version to return to"
            )));
        };
        let mut manifest = current.manifest.clone();
        shared.reconciler.record(
            &name,
            &[NewEvent::normal(
                "UndoRequested",
                format!(
                    "back from {} to {}",
                    manifest.spec.module.version, previous.version
                ),
            )],
        )?;
        manifest.spec.module = previous;
        shared.resources().apply(manifest)?;
    } else {
        if current.rollout.is_none() {
            return Err(invalid(format!("`{name}` has no rollout in progress")));
        }
        shared.resources().update(&name, |stored| {
            if let Some(r) = stored.rollout.as_mut() {
                match action.as_str() {
                    "confirm" => r.confirmed = r.confirmed.max(r.batch),
                    "pause" => r.paused = true,
                    _ => r.paused = false,
                }
            }
        })?;
        let batch = current.rollout.as_ref().map_or(0, |r| r.batch);
        let event = match action.as_str() {
            "confirm" => NewEvent::normal("Confirmed", format!("batch {batch} confirmed")),
            "pause" => NewEvent::normal("Paused", format!("held at batch {batch}")),
            _ => NewEvent::normal("Resumed", format!("going on from batch {batch}")),
        };
        shared.reconciler.record(&name, &[event])?;
    }
    reconcile(&shared).await?;
    let stored = shared
        .resources()
        .deployment(&name)?
        .ok_or_else(|| not_found(&name))?;
    Ok(axum::Json(stored).into_response())
}

async fn list(State(shared): State<Shared>) -> Result<Response, ApiError> {
    let views: Vec<DeploymentView> = shared
        .resources()
        .deployments()?
        .into_iter()
        .map(|stored| DeploymentView {
            status: shared.reconciler.status(&stored),
            stored,
            events: Vec::new(),
        })
        .collect();
    Ok(axum::Json(views).into_response())
}

fn not_found(name: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("no ModuleDeployment named `{name}`; list them with GET /v1/deployments"),
    }
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
    let Some(stored) = shared.resources().deployment(&name)? else {
        return Err(not_found(&name));
    };
    let status = shared.reconciler.status(&stored);
    let events = crate::events::list(shared.resources().store(), &name)?;
    Ok(axum::Json(DeploymentView {
        stored,
        status,
        events,
    })
    .into_response())
}

async fn delete(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if shared.resources().delete_deployment(&name)? {
        crate::events::forget(shared.resources().store(), &name)?;
        reconcile(&shared).await?;
        Ok(axum::Json(serde_json::json!({ "deleted": name })).into_response())
    } else {
        Err(not_found(&name))
    }
}
