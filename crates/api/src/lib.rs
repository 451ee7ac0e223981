//! Wire types of berth: what the ops agent of a base takes and returns.
//!
//! The base's ops API, the `berth` CLI and (later) the controller all speak
//! these types as JSON, so a field renamed here is renamed everywhere. Field
//! names are camelCase on the wire, like Kubernetes manifests.

use serde::{Deserialize, Serialize};

/// The default address of a base's ops API: the port Koupleless' Arklet uses.
pub const DEFAULT_OPS_ADDR: &str = "127.0.0.1:1238";

/// The default address of a base's ingress (the traffic port).
pub const DEFAULT_INGRESS_ADDR: &str = "127.0.0.1:8080";

/// Response header carrying the id of the request, for logs and support.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Response header naming the module (`name@version`) that served a request.
pub const MODULE_HEADER: &str = "x-berth-module";

/// Where the traffic of a module comes from: a host, a path prefix, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Requests whose `Host` (port ignored) equals this go to the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Requests whose path is this prefix or below it (at a `/` boundary) go
    /// to the module; `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

impl Route {
    /// The effective path prefix (`/` when none was given).
    pub fn prefix(&self) -> &str {
        self.path_prefix.as_deref().unwrap_or("/")
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{host}{}", self.prefix()),
            None => write!(f, "*{}", self.prefix()),
        }
    }
}

/// Where the bytes of a module come from in an install request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ArtifactSource {
    /// A file on the base's machine.
    Path(String),
    /// An `http://` or `https://` URL the base downloads.
    Url(String),
}

/// `POST /v1/modules` with a JSON body: install one version of a module.
///
/// The same fields travel as query parameters when the artifact is uploaded
/// as the request body (`Content-Type: application/wasm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallRequest {
    /// Module name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub name: String,
    /// Module version, e.g. `1.4.0`.
    pub version: String,
    /// Where the module's traffic comes from; defaults to path prefix `/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// The artifact to install; absent when it is uploaded as the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactSource>,
    /// Expected digest, `sha256:<64 hex>`; the install fails if the bytes differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The lifecycle state of one installed module version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ModuleState {
    /// Serving the module's route.
    Active,
    /// Installed beside the active version, not serving.
    Inactive,
    /// Recorded but not loadable (e.g. its artifact vanished); see `error`.
    Failed,
}

/// Whether an install found its compiled code in the compile cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CacheOutcome {
    /// Loaded precompiled code from the cache (mmap), no compilation.
    Hit,
    /// Compiled the component and stored the result in the cache.
    Miss,
}

/// One installed module version, as listed by `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    /// The module's route.
    pub route: Route,
    /// Lifecycle state.
    pub state: ModuleState,
    /// When this version was installed, RFC 3339.
    pub installed_at: String,
    /// How long the install took (fetch, validate, compile or load, link), in ms.
    pub install_duration_ms: f64,
    /// Whether the install hit the compile cache.
    pub compile_cache: CacheOutcome,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Requests this version served since the base started.
    #[serde(default)]
    pub requests: u64,
    /// Of those, how many failed in the module (5xx answered by the base).
    #[serde(default)]
    pub errors: u64,
    /// Why the version is `failed`, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleList {
    /// Every installed module version, by name then version.
    pub modules: Vec<ModuleInfo>,
}

/// Response to an install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallResponse {
    /// The installed version.
    pub module: ModuleInfo,
    /// True when the same name, version and digest were already installed.
    pub unchanged: bool,
}

/// Response to an uninstall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UninstallResponse {
    /// The versions removed.
    pub removed: Vec<ModuleInfo>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` when the base serves.
    pub status: String,
    /// berth version.
    pub version: String,
    /// Seconds since the base started.
    pub uptime_seconds: f64,
    /// Installed module versions.
    pub modules: usize,
    /// The ingress address traffic goes to.
    pub ingress: String,
}

/// The body of every error the ops API returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code plus a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, snake_case, e.g. `digest_mismatch`.
    pub code: String,
    /// What went wrong, where, and how to fix it.
    pub message: String,
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}
