//! Wire types of berth: what the ops agent of a base takes and returns.
//!
//! The base's ops API, the `berth` CLI and (later) the controller all speak
//! these types as JSON, so a field renamed here is renamed everywhere. Field
//! names are camelCase on the wire, like Kubernetes manifests.

use serde::{Deserialize, Serialize};

pub mod audit;
pub mod auth;
pub mod endpoints;
pub mod failover;
pub mod header;
pub mod manifest;
mod names;
pub mod threads;
pub mod tls;

pub use names::{MODULE_NAME_RULE, ModuleName, ModuleRef, NameError, VERSION_RULE, Version};

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
    /// Make this version the default at once (the default). With `false` it
    /// is installed beside the default, for rules or a later switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate: Option<bool>,
    /// Resource limits; unset fields take the base's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Hosts the module may reach with outgoing HTTP (`api.example.com`,
    /// `*.example.com`, `host:port`, or `*`). Default: none. Calls to other
    /// modules (`http://NAME.berth/`) need no grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Values the module reads with `berth:base/config`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// The artifact's detached ed25519 signature (the text of the `.sig`
    /// file `berth sign` writes). Needed for an upload to a base that
    /// trusts signing keys; for a path or URL the base also looks for
    /// `ARTIFACT.sig` beside it. Given here, it wins over that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl InstallRequest {
    /// A request to install `name@version` with every option at its default.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            route: None,
            artifact: None,
            digest: None,
            activate: None,
            limits: None,
            allowed_hosts: Vec::new(),
            config: Default::default(),
            signature: None,
        }
    }
}

/// Resource limits of a module version. In an install request every field
/// is optional (unset: the base's default); in [`ModuleInfo`] all are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Linear memory one instance may use, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Deadline of one request inside the module, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Requests served at once; more get 503 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Largest request body, bytes (413 beyond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// Largest response body, bytes (cut off beyond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// CPU share in cores (e.g. `0.5`); over it, requests are delayed.
    /// Unset: no share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuCores>,
    /// How long a request over the CPU share may wait for its turn before
    /// it is answered 503 with `Retry-After`, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_queue_wait_ms: Option<u64>,
    /// How requests get their instance: `fresh` (the default) or `pooled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<InstancePolicy>,
}

/// A CPU share in cores, kept in thousandths of a core (`0.5` is 500);
/// written as a number of cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuCores {
    /// Thousandths of a core.
    pub millis: u32,
}

impl CpuCores {
    /// `cores` (e.g. 0.5), if it is a share a base can give: more than 0
    /// and at most 1024 cores.
    pub fn new(cores: f64) -> Option<Self> {
        (cores.is_finite() && cores > 0.0 && cores <= 1024.0).then(|| Self {
            millis: ((cores * 1000.0).round() as u32).max(1),
        })
    }

    /// The share in cores.
    pub fn cores(self) -> f64 {
        f64::from(self.millis) / 1000.0
    }
}

impl std::fmt::Display for CpuCores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.cores())
    }
}

impl Serialize for CpuCores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.cores())
    }
}

impl<'de> Deserialize<'de> for CpuCores {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cores = f64::deserialize(deserializer)?;
        Self::new(cores).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "cpu {cores} is not a share of cores: give a number above 0 and at most 1024, e.g. 0.5"
            ))
        })
    }
}

/// How a module version's requests get their instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InstancePolicy {
    /// A new instance per request: nothing survives a request (the default).
    #[default]
    Fresh,
    /// Warm instances reused one request at a time: state a request leaves
    /// in the instance is seen by later ones. Discarded on a trap, a limit
    /// hit, a switch or an uninstall.
    Pooled(PooledPolicy),
}

/// The bounds of a `pooled` instance's reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PooledPolicy {
    /// Requests one instance serves before it is dropped (at least 1).
    pub max_requests: u32,
    /// Longest an instance is kept idle, ms (at least 1).
    pub max_idle_ms: u64,
}

/// The lifecycle state of one installed module version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ModuleState {
    /// The module's default version.
    Active,
    /// Installed beside the default; serves only what traffic rules send it.
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

/// Which compiler made the code a module version runs on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CodeTier {
    /// wasmtime's baseline compiler, Winch: the first code of a freshly
    /// compiled module, until Cranelift's is ready.
    Winch,
    /// wasmtime's optimizing compiler, Cranelift.
    Cranelift,
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
    /// The compiler tier it runs on now (none when it is not loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<CodeTier>,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Requests this version served since the base started.
    #[serde(default)]
    pub requests: u64,
    /// Of those, how many failed in the module (5xx answered by the base).
    #[serde(default)]
    pub errors: u64,
    /// Requests running in this version now.
    #[serde(default)]
    pub in_flight: u32,
    /// The limits this version runs under (all fields set).
    #[serde(default)]
    pub limits: Limits,
    /// Hosts its outgoing HTTP may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// The names of its config values (values are not shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_keys: Vec<String>,
    /// Linear memory its live instances hold now, bytes.
    #[serde(default)]
    pub memory_in_use_bytes: u64,
    /// Traffic over the last minute.
    #[serde(default)]
    pub recent: RecentStats,
    /// The latest failures with their wasm backtraces (newest last, at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_traps: Vec<TrapReport>,
    /// Why the version is `failed`, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A module version's traffic over a recent window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentStats {
    /// The window, seconds (60, or less right after install).
    pub window_seconds: f64,
    /// Requests per second over the window.
    pub requests_per_second: f64,
    /// Share of those the module failed, 0 to 1.
    pub error_rate: f64,
    /// Median time to the response head, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// One request a module failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrapReport {
    /// When, RFC 3339.
    pub at: String,
    /// The request's id.
    pub request_id: String,
    /// What happened, short.
    pub message: String,
    /// The full error, with the wasm backtrace (function names from the
    /// component's name section).
    pub detail: String,
}

/// One line a module wrote: stdout, stderr, or `berth:base/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// When, RFC 3339 with milliseconds.
    pub at: String,
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// The request it was written during.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `stdout`, `stderr` or `log`.
    pub stream: LogStream,
    /// `info` for stdout, `error` for stderr, the level for `log`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// `GET /v1/modules/{name}/logs` (without `follow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogList {
    /// Oldest first.
    pub lines: Vec<LogEntry>,
}

/// `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleList {
    /// Every installed module version, by name then version.
    pub modules: Vec<ModuleInfo>,
    /// The WIT interfaces (with versions) the base offers modules beyond
    /// WASI 0.2 and `wasi:http`, e.g. `berth:base/kv@0.1.0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
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
    /// The WIT interfaces (with versions) the base offers modules beyond
    /// WASI 0.2 and `wasi:http`, e.g. `berth:base/kv@0.1.0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
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

/// Request header that pins a request (and the module calls it makes) to the
/// versions a module's `trafficUnits` map names for that unit.
pub const TRAFFIC_UNIT_HEADER: &str = "x-berth-traffic-unit";

/// The traffic rules of one module: `GET`/`PUT /v1/modules/{name}/rules`.
///
/// A request is routed to a version by, in order: its traffic unit (when
/// `trafficUnits` names it), the first rule whose matches all hold, and
/// otherwise the module's default version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRules {
    /// Evaluated in order; the first that matches chooses the version.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Traffic unit (the `x-berth-traffic-unit` header's value) → version.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub traffic_units: std::collections::BTreeMap<String, String>,
}

/// One rule: conditions (all must hold) and the version(s) they lead to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// A name for messages and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions; all must hold. Empty: the rule matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    /// Send matching requests to this version...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// ...or split them between versions by weight (weights sum to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<WeightedVersion>>,
    /// With `split`: hash this request value so the same key always lands on
    /// the same version; without it each request is placed at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_by: Option<RequestValue>,
    /// A traffic cell: send matching requests only to replicas on bases
    /// carrying these labels, e.g. `{group: gold}` (acted on by a gateway;
    /// a base has no other base to choose and ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<std::collections::BTreeMap<String, String>>,
}

/// A version and its share of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedVersion {
    /// The version.
    pub version: String,
    /// Percent of the traffic, 0 to 100.
    pub weight: u32,
}

/// Which part of a request a condition or a sticky key reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum On {
    /// A header (`name` is the header name).
    Header,
    /// A query parameter (`name` is the parameter).
    Query,
    /// A cookie (`name` is the cookie name).
    Cookie,
    /// The client's IP address (use `cidr`).
    ClientIp,
    /// The request path (use `exact`, `prefix` or `regex`).
    Path,
}

/// A named value of the request, e.g. header `x-user-id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestValue {
    /// Where the value is: header, query or cookie.
    pub on: On,
    /// Its name.
    pub name: String,
}

/// One condition on a request. For header, query and cookie, `name` says
/// which; then `exact`, `prefix` or `regex` tests the value (none of them:
/// the value only has to be present). `clientIp` takes `cidr`; `path` takes
/// `exact`, `prefix` or `regex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// What the condition reads.
    pub on: On,
    /// Header, query parameter or cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The client IP is in this range, e.g. `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// `POST /v1/modules/{name}/switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SwitchRequest {
    /// The version to make the default.
    pub version: String,
}

/// Response to a switch or a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchResponse {
    /// Module name.
    pub name: String,
    /// The default version before.
    pub previous: String,
    /// The default version now.
    pub current: String,
}

/// What a base tells the controller on every heartbeat
/// (`PUT /v1/bases/{name}` on the controller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseHeartbeat {
    /// The base's name (unique in the fleet).
    pub name: String,
    /// Labels the controller selects bases by, e.g. `group=online`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Most module versions the base takes.
    pub capacity_modules: u32,
    /// Where the base's ingress and ops API listen.
    pub ingress: String,
    /// Where its ops API listens.
    pub ops: String,
    /// What it runs now: `name@version` of each installed version.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Requests in flight across its modules.
    #[serde(default)]
    pub in_flight: u32,
    /// Assigned versions it could not run: `name@version` → the error.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures: std::collections::BTreeMap<String, String>,
    /// The revision of the assignments `failures` are about (empty before
    /// the first), so that the controller never takes a failure of an
    /// earlier assignment — say, of the same version from a path since
    /// fixed — for one of the current.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// The WIT interfaces (with versions) it offers modules beyond WASI 0.2
    /// and `wasi:http`: the controller places a deployment only on bases
    /// offering every interface its module imports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// A base as the controller reports it (`GET /v1/bases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseStatus {
    /// The last heartbeat.
    pub heartbeat: BaseHeartbeat,
    /// When it arrived, RFC 3339.
    pub last_heartbeat: String,
    /// `Ready`, or `NotReady` when no heartbeat came within the controller's timeout.
    pub state: BaseState,
}

/// Whether a base takes new work (spelled `Ready` / `NotReady` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BaseState {
    /// Its lease lives: it heartbeats, and replicas may be placed on it.
    Ready,
    /// No heartbeat within the controller's timeout (its lease expired).
    NotReady,
}

impl BaseState {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::NotReady => "NotReady",
        }
    }
}

impl std::fmt::Display for BaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `berth rollout` asks of a deployment's rollout (spelled
/// `confirm`, `pause`, `resume`, `undo` in the API path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutAction {
    /// Let the rollout go on past the batch it waits at.
    Confirm,
    /// Hold the rollout at its current batch.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Return to the version before the last change.
    Undo,
}

impl RolloutAction {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Undo => "undo",
        }
    }
}

impl std::fmt::Display for RolloutAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RolloutAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "confirm" => Ok(Self::Confirm),
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            "undo" => Ok(Self::Undo),
            other => Err(format!(
                "no rollout action `{other}`; use confirm, pause, resume or undo"
            )),
        }
    }
}

/// Why a module failed a request (the `kind` label of the base's failure
/// metric; spelled in snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped.
    Trap,
    /// It hit its memory limit.
    Memory,
    /// It ran out of time.
    Deadline,
    /// No free instance slot (its concurrency limit).
    Concurrency,
    /// The request body was over its limit.
    RequestBody,
    /// It could not be instantiated.
    Instantiate,
    /// It returned without a response, or a malformed one.
    NoResponse,
    /// It was over its CPU share and its queue wait (`limits.cpu`).
    Cpu,
    /// Its response body was over its limit before the head went out.
    ResponseBody,
}

impl FailureKind {
    /// Every kind, in the order of [`FailureKind::index`].
    pub const ALL: [FailureKind; 9] = [
        Self::Trap,
        Self::Memory,
        Self::Deadline,
        Self::Concurrency,
        Self::RequestBody,
        Self::Instantiate,
        Self::NoResponse,
        Self::Cpu,
        Self::ResponseBody,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Memory => "memory",
            Self::Deadline => "deadline",
            Self::Concurrency => "concurrency",
            Self::RequestBody => "request_body",
            Self::Instantiate => "instantiate",
            Self::NoResponse => "no_response",
            Self::Cpu => "cpu",
            Self::ResponseBody => "response_body",
        }
    }

    /// Its position in [`FailureKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the module itself broke (a trap report is kept), as opposed
    /// to the base turning the request away.
    pub fn is_crash(self) -> bool {
        matches!(
            self,
            Self::Trap | Self::Memory | Self::Deadline | Self::NoResponse
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a module's log line came from (spelled `stdout`, `stderr`, `log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The module's stdout.
    Stdout,
    /// The module's stderr.
    Stderr,
    /// `berth:base/log`.
    Log,
}

impl LogStream {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Log => "log",
        }
    }
}

impl std::fmt::Display for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One module a base should run, as the controller assigns it (the body of
/// the controller's answer to a heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// `http(s)://…` or `file:/…` of the artifact.
    pub artifact: String,
    /// `sha256:…` of the artifact.
    pub digest: String,
    /// Route on the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
}

/// What a base should run: the controller's answer to a heartbeat and to a
/// watch (`GET /v1/bases/{name}/assignments?known=REVISION`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignments {
    /// Every module the controller wants on this base.
    pub modules: Vec<Assignment>,
    /// Modules to keep compiled in the base's cache without running them:
    /// a buffer base (labelled `berth.dev/role=buffer`) warms the code of
    /// every autoscaled deployment, so a scale-out onto it installs from
    /// cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm: Vec<Assignment>,
    /// Names this set of assignments: a watch that passes it back as
    /// `known` is answered only once the assignments differ.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
}
