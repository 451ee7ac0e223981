//! The controller's HTTP API: manifests in, resources out (JSON).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/health` | liveness |
//! | POST | `/v1/apply` | create or update from a YAML or JSON manifest |
//! | GET | `/v1/deployments` | every ModuleDeployment |
//! | GET | `/v1/deployments/{name}` | one, as stored (manifest, generation, history) |
//! | DELETE | `/v1/deployments/{name}` | delete one |
//! | POST | `/v1/deployments/{name}/rollout/{confirm,pause,resume,undo}` | steer its rollout |
//! | PUT | `/v1/bases/{name}` | a base's heartbeat ([`BaseHeartbeat`]); answers its [`Assignments`](berth_api::Assignments) |
//! | GET | `/v1/bases` | every base with Ready / NotReady |
//!
//! A manifest problem is a 422 `invalid_manifest` whose message starts with
//! the path of the bad field, and changes nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::manifest::{self, Manifest};
use berth_api::{BaseHeartbeat, ErrorBody, ErrorDetail};
use serde::Serialize;

use crate::resources::{Applied, ResourceError, Resources};
use crate::store::RedbStore;

/// Shared state of the API.
#[derive(Clone)]
pub struct Shared {
    /// Deployments (and the store under them).
    pub resources: Arc<Resources<RedbStore>>,
    /// A base silent for longer than this is NotReady.
    pub heartbeat_timeout: std::time::Duration,
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
    crate::bases::heartbeat(shared.resources.store(), beat)?;
    // Answer with what this base should run now.
    let bases = crate::bases::list(shared.resources.store(), shared.heartbeat_timeout)?;
    let deployments = shared.resources.deployments()?;
    let placement = crate::scheduler::place(&deployments, &bases);
    // Move rollouts along with what the bases now report.
    let now = crate::rollout::now_ms();
    for d in deployments.iter().filter(|d| d.rollout.is_some()) {
        let rolled = placement
            .rolled
            .get(&d.manifest.metadata.name)
            .cloned()
            .unwrap_or_default();
        shared
            .resources
            .update(&d.manifest.metadata.name, |stored| {
                crate::rollout::advance(stored, &rolled, &bases, now);
            })?;
    }
    let modules = placement.by_base.get(&name).cloned().unwrap_or_default();
    Ok(axum::Json(berth_api::Assignments { modules }).into_response())
}

async fn list_bases(State(shared): State<Shared>) -> Result<Response, ApiError> {
    Ok(axum::Json(crate::bases::list(
        shared.resources.store(),
        shared.heartbeat_timeout,
    )?)
    .into_response())
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
    let applied = shared.resources.apply(deployment)?;
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
    let Some(current) = shared.resources.deployment(&name)? else {
        return Err(not_found(&name));
    };
    if action == "undo" {
        let Some(previous) = current.history.last().cloned() else {
            return Err(invalid(format!(
                "`{name}` has no earlier version to return to"
            )));
        };
        let mut manifest = current.manifest.clone();
        manifest.spec.module = previous;
        shared.resources.apply(manifest)?;
    } else {
        if current.rollout.is_none() {
            return Err(invalid(format!("`{name}` has no rollout in progress")));
        }
        shared.resources.update(&name, |stored| {
            if let Some(r) = stored.rollout.as_mut() {
                match action.as_str() {
                    "confirm" => r.confirmed = r.confirmed.max(r.batch),
                    "pause" => r.paused = true,
                    _ => r.paused = false,
                }
            }
        })?;
    }
    let stored = shared
        .resources
        .deployment(&name)?
        .ok_or_else(|| not_found(&name))?;
    Ok(axum::Json(stored).into_response())
}

async fn list(State(shared): State<Shared>) -> Result<Response, ApiError> {
    Ok(axum::Json(shared.resources.deployments()?).into_response())
}

fn not_found(name: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("no ModuleDeployment named `{name}`; list them with GET /v1/deployments"),
    }
}

/// A deployment with its live status.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    /// As stored.
    #[serde(flatten)]
    pub stored: crate::resources::StoredDeployment,
    /// Where it stands now.
    pub status: DeploymentStatus,
}

/// Replica counts and per-base state of a deployment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Replicas asked for.
    pub desired: u32,
    /// Placed replicas whose base reports the version assigned to it.
    pub ready: u32,
    /// Ready bases reporting the spec's (newest) version.
    pub updated: u32,
    /// Replicas no base could take (selector, capacity, Ready bases).
    pub unschedulable: u32,
    /// Per placed base: its name, the version assigned, and whether it runs it.
    pub bases: Vec<BaseReplica>,
}

/// One replica.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseReplica {
    /// The base.
    pub base: String,
    /// The version assigned to it.
    pub version: String,
    /// Whether it reports running that version.
    pub running: bool,
}

async fn show(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let Some(stored) = shared.resources.deployment(&name)? else {
        return Err(not_found(&name));
    };
    let bases = crate::bases::list(shared.resources.store(), shared.heartbeat_timeout)?;
    let placement = crate::scheduler::place(&shared.resources.deployments()?, &bases);
    let module = &stored.manifest.spec.module;
    let mut replicas = Vec::new();
    for (base, assignments) in &placement.by_base {
        for a in assignments.iter().filter(|a| a.name == module.name) {
            let label = format!("{}@{}", a.name, a.version);
            let running = bases
                .iter()
                .any(|b| b.heartbeat.name == *base && b.heartbeat.modules.contains(&label));
            replicas.push(BaseReplica {
                base: base.clone(),
                version: a.version.clone(),
                running,
            });
        }
    }
    let newest = format!("{}@{}", module.name, module.version);
    let status = DeploymentStatus {
        desired: stored.manifest.spec.replicas,
        ready: replicas.iter().filter(|r| r.running).count() as u32,
        updated: bases
            .iter()
            .filter(|b| b.state == "Ready" && b.heartbeat.modules.contains(&newest))
            .count() as u32,
        unschedulable: placement.unschedulable.get(&name).copied().unwrap_or(0),
        bases: replicas,
    };
    Ok(axum::Json(DeploymentView { stored, status }).into_response())
}

async fn delete(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if shared.resources.delete_deployment(&name)? {
        Ok(axum::Json(serde_json::json!({ "deleted": name })).into_response())
    } else {
        Err(not_found(&name))
    }
}
