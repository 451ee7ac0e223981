//! Arklet-compatible commands on the ops address, so scripts and pipelines
//! written for Koupleless' Arklet drive a berth base unchanged.
//!
//! Every command is `POST /<command>` with a JSON body (an empty body counts
//! as `{}`), answered with HTTP 200 and Arklet's envelope
//! `{code, message, data, errorStackTrace?, baseIdentity}`, where `code` is
//! `SUCCESS`, `FAILED`, `CMD_NOT_FOUND` or `CMD_PROCESS_INTERNAL_ERROR`.
//!
//! | command | does |
//! |---|---|
//! | `installBiz` | install `{bizName, bizVersion, bizUrl}`; `async: true` returns at once |
//! | `batchInstallBiz` | install every entry of `{bizList}` in order |
//! | `uninstallBiz` | uninstall `{bizName, bizVersion}` |
//! | `switchBiz` | make `{bizName, bizVersion}` the default |
//! | `queryAllBiz` | the base itself plus every installed version as BizInfo |
//! | `queryBizOps` | the state and result of async installs (`{requestId?}`) |
//! | `health` | `healthData` from the base's real figures |
//! | `help` | the commands above |
//!
//! Each command goes through the [`Base`] facade, exactly as the native
//! `/v1/…` endpoints do; a malformed body is answered `FAILED` before the
//! base is touched.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use berth_api::{ArtifactSource, InstallRequest, ModuleInfo, ModuleState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::base::Base;
use crate::error::OpsError;

/// Where the migration guide lives; failures that come from a Java habit
/// point there.
pub const GUIDE: &str = "docs/koupleless.md";

/// Most async operations remembered for `queryBizOps` (oldest forgotten first).
const MAX_OPS: usize = 1000;

/// The commands, with Arklet's descriptions, for `help`: the Arklet guide's
/// five in its order, then the later ones as Arklet's `BuiltinCommand`
/// describes them (koupleless/runtime 029ce76; `batchInstallBiz`'s text is
/// Arklet's own).
const COMMANDS: &[(&str, &str)] = &[
    ("queryAllBiz", "query all ark biz(including master biz)"),
    ("help", "list all supported commands"),
    ("uninstallBiz", "uninstall one ark biz"),
    ("switchBiz", "switch one ark biz"),
    ("installBiz", "install one ark biz"),
    ("batchInstallBiz", "install one ark biz"),
    ("queryBizOps", "query ark biz ops"),
    ("health", "get all health info"),
];

/// The state the Arklet commands share: the base and the async operations.
#[derive(Clone)]
struct Arklet {
    base: Base,
    ops: Arc<Mutex<VecDeque<Operation>>>,
}

/// One async install, for `queryBizOps`.
#[derive(Clone)]
struct Operation {
    request_id: String,
    biz_name: String,
    biz_version: String,
    /// `RUNNING`, `SUCCESS` or `FAILED`.
    status: &'static str,
    /// The reply the install gave, once it finished.
    result: Option<Value>,
}

/// The Arklet routes (`POST /{command}`), to merge beside the native API.
pub(crate) fn router(base: Base) -> Router {
    Router::new()
        .route("/{command}", post(command))
        .with_state(Arklet {
            base,
            ops: Arc::default(),
        })
}

/// The `CMD_NOT_FOUND` reply for `path`.
fn not_found(base: &Base, path: &str) -> Response {
    let names: Vec<&str> = COMMANDS.iter().map(|(id, _)| *id).collect();
    reply(
        base,
        "CMD_NOT_FOUND",
        format!(
            "no Arklet command `{}`; commands: {}",
            path.trim_start_matches('/'),
            names.join(", ")
        ),
        Value::Null,
    )
}

/// Arklet's envelope, always HTTP 200.
fn reply(base: &Base, code: &str, message: String, data: Value) -> Response {
    axum::Json(envelope(base, code, message, data)).into_response()
}

fn envelope(base: &Base, code: &str, message: String, data: Value) -> Value {
    let mut body = json!({
        "code": code,
        "message": message,
        "baseIdentity": base_identity(base),
    });
    if !data.is_null() {
        body["data"] = data;
    }
    body
}

/// The base's name in the fleet when attached to a controller, else its
/// ingress address.
fn base_identity(base: &Base) -> String {
    match &base.config().controller {
        Some(link) => link.name.clone(),
        None => format!("berth-base@{}", base.health().ingress),
    }
}

/// A failed command: top-level `FAILED`, `data {code, message}`.
fn failed(base: &Base, data_code: &str, message: String) -> Value {
    envelope(
        base,
        "FAILED",
        message.clone(),
        json!({"code": data_code, "message": message}),
    )
}

/// The data code of a base error: Arklet's where one fits.
fn data_code(error: &OpsError) -> &'static str {
    match error {
        OpsError::ModuleNotFound { .. } | OpsError::VersionNotFound { .. } => "NOT_FOUND_BIZ",
        _ => "FAILED",
    }
}

async fn command(
    State(arklet): State<Arklet>,
    Path(command): Path<String>,
    body: Body,
) -> Response {
    let base = arklet.base.clone();
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return axum::Json(failed(
                &base,
                "FAILED",
                format!("cannot read the {command} request body: {e}"),
            ))
            .into_response();
        }
    };
    let body = match command.as_str() {
        "installBiz" => match parse::<InstallBiz>(&bytes, &command) {
            Ok(request) => arklet.install(request).await,
            Err(message) => failed(&base, "FAILED", message),
        },
        "batchInstallBiz" => match parse::<BatchInstallBiz>(&bytes, &command) {
            Ok(batch) => arklet.batch_install(batch).await,
            Err(message) => failed(&base, "FAILED", message),
        },
        "uninstallBiz" => match parse::<BizRef>(&bytes, &command) {
            Ok(biz) => uninstall(&base, biz).await,
            Err(message) => failed(&base, "FAILED", message),
        },
        "switchBiz" => match parse::<BizRef>(&bytes, &command) {
            Ok(biz) => switch(&base, biz).await,
            Err(message) => failed(&base, "FAILED", message),
        },
        "queryAllBiz" => match parse::<Empty>(&bytes, &command) {
            Ok(_) => query_all(&base),
            Err(message) => failed(&base, "FAILED", message),
        },
        "queryBizOps" => match parse::<QueryBizOps>(&bytes, &command) {
            Ok(query) => arklet.query_ops(query),
            Err(message) => failed(&base, "FAILED", message),
        },
        "health" => match parse::<HealthQuery>(&bytes, &command) {
            Ok(query) => health(&base, query),
            Err(message) => failed(&base, "FAILED", message),
        },
        "help" => envelope(
            &base,
            "SUCCESS",
            "supported commands".into(),
            COMMANDS
                .iter()
                .map(|(id, desc)| json!({"id": id, "desc": desc}))
                .collect(),
        ),
        other => return not_found(&base, other),
    };
    axum::Json(body).into_response()
}

/// Parses a command body; an empty body is `{}`.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], command: &str) -> Result<T, String> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        format!("the {command} request is not valid: {e}; nothing was changed on the base")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `installBiz`.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstallBiz {
    biz_name: String,
    biz_version: String,
    biz_url: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    install_strategy: Option<InstallStrategy>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    r#async: bool,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
enum InstallStrategy {
    InstallOnly,
    UninstallThenInstall,
}

/// `batchInstallBiz`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchInstallBiz {
    biz_list: Vec<InstallBiz>,
}

/// `uninstallBiz` and `switchBiz`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BizRef {
    biz_name: String,
    biz_version: String,
}

/// `queryBizOps`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QueryBizOps {
    #[serde(default)]
    request_id: Option<String>,
}

/// `health`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HealthQuery {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    metrics: Option<Vec<String>>,
    #[serde(default)]
    module_name: Option<String>,
    #[serde(default)]
    module_version: Option<String>,
}

/// Arklet's bizState of a berth state.
pub fn biz_state(state: ModuleState) -> &'static str {
    match state {
        ModuleState::Active => "ACTIVATED",
        ModuleState::Inactive => "DEACTIVATED",
        ModuleState::Failed => "BROKEN",
    }
}

/// BizInfo of one installed version, as `queryAllBiz` lists it: the keys of
/// the Arklet guide's sample, no more.
fn biz_info(module: &ModuleInfo) -> Value {
    json!({
        "bizName": module.name,
        "bizVersion": module.version,
        "bizState": biz_state(module.state),
        "mainClass": "wasi:http/incoming-handler",
        "webContextPath": web_context_path(module),
    })
}

/// BizInfo as `installBiz` reports it in `bizInfos`: the guide's sample adds
/// `identity`, `declaredMode` and `priority`. A berth module only reaches the
/// imports it declares (Ark's declared mode) and has Ark's default priority.
fn installed_biz_info(module: &ModuleInfo) -> Value {
    let mut info = biz_info(module);
    info["identity"] = json!(format!("{}:{}", module.name, module.version));
    info["declaredMode"] = json!(true);
    info["priority"] = json!(100);
    info
}

/// A module's route prefix as Koupleless writes a biz's web context path:
/// without the leading slash (`provider` for `/provider`), `/` for the root.
fn web_context_path(module: &ModuleInfo) -> String {
    match module
        .route
        .path_prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
    {
        None | Some("") => "/".into(),
        Some(path) => path.to_string(),
    }
}

/// The base itself as Arklet's master biz (`masterBizInfo` of `health`).
fn master_biz() -> Value {
    json!({
        "bizName": "base",
        "bizVersion": env!("CARGO_PKG_VERSION"),
        "bizState": "ACTIVATED",
        "webContextPath": "/",
    })
}

/// Turns `bizUrl` into berth's artifact source, refusing what berth cannot run.
fn artifact(url: &str) -> Result<ArtifactSource, String> {
    if url.to_ascii_lowercase().ends_with(".jar") {
        return Err(format!(
            "bizUrl `{url}` is a Java jar; berth runs WebAssembly components (a .wasm exporting \
             wasi:http/incoming-handler), not Ark biz jars. Build the module for wasm32-wasip2 \
             (`berth build`) and point bizUrl at the .wasm; see {GUIDE}"
        ));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(ArtifactSource::Url(url.to_string()));
    }
    let Some(path) = url.strip_prefix("file://") else {
        return Err(format!(
            "bizUrl `{url}` is neither file:// nor http(s)://; give file:///abs/path/module.wasm \
             (or a directory holding one .wasm) or an http(s) URL"
        ));
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read bizUrl `{url}` on the base's machine: {e}"))?;
    if !meta.is_dir() {
        return Ok(ArtifactSource::Path(path.to_string()));
    }
    let mut wasm: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list bizUrl directory `{url}`: {e}"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    wasm.sort();
    match wasm.as_slice() {
        [one] => Ok(ArtifactSource::Path(one.display().to_string())),
        [] => Err(format!(
            "bizUrl directory `{url}` holds no .wasm file; point it at the module's .wasm; see {GUIDE}"
        )),
        many => Err(format!(
            "bizUrl directory `{url}` holds {} .wasm files ({}); name the one to install",
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl Arklet {
    async fn install(&self, request: InstallBiz) -> Value {
        if !request.r#async {
            return install_now(&self.base, request).await;
        }
        let request_id = request
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        {
            let mut ops = self.ops.lock().expect("ops table");
            if ops.iter().any(|op| op.request_id == request_id) {
                return failed(
                    &self.base,
                    "FAILED",
                    format!("requestId `{request_id}` is already used; give each install its own"),
                );
            }
            if ops.len() >= MAX_OPS {
                ops.pop_front();
            }
            ops.push_back(Operation {
                request_id: request_id.clone(),
                biz_name: request.biz_name.clone(),
                biz_version: request.biz_version.clone(),
                status: "RUNNING",
                result: None,
            });
        }
        let (base, ops, id) = (self.base.clone(), self.ops.clone(), request_id.clone());
        tokio::spawn(async move {
            let result = install_now(&base, request).await;
            let status = if result["code"] == "SUCCESS" {
                "SUCCESS"
            } else {
                "FAILED"
            };
            let mut ops = ops.lock().expect("ops table");
            if let Some(op) = ops.iter_mut().find(|op| op.request_id == id) {
                op.status = status;
                op.result = Some(result);
            }
        });
        envelope(
            &self.base,
            "SUCCESS",
            format!(
                "install accepted; query its state with queryBizOps {{\"requestId\": \"{request_id}\"}}"
            ),
            json!({"requestId": request_id, "status": "RUNNING"}),
        )
    }

    async fn batch_install(&self, batch: BatchInstallBiz) -> Value {
        let mut responses = serde_json::Map::new();
        let mut all_ok = true;
        for request in batch.biz_list {
            let url = request.biz_url.clone();
            let result = install_now(&self.base, request).await;
            all_ok &= result["code"] == "SUCCESS";
            responses.insert(url, result);
        }
        let (code, message) = if all_ok {
            ("SUCCESS", "every biz installed")
        } else {
            ("FAILED", "some biz failed to install; see bizUrlToResponse")
        };
        envelope(
            &self.base,
            code,
            message.into(),
            json!({"code": code, "message": message, "bizUrlToResponse": responses}),
        )
    }

    fn query_ops(&self, query: QueryBizOps) -> Value {
        let ops = self.ops.lock().expect("ops table");
        let show = |op: &Operation| {
            json!({
                "requestId": op.request_id,
                "bizName": op.biz_name,
                "bizVersion": op.biz_version,
                "command": "installBiz",
                "status": op.status,
                "result": op.result,
            })
        };
        match query.request_id {
            Some(id) => match ops.iter().find(|op| op.request_id == id) {
                Some(op) => envelope(&self.base, "SUCCESS", String::new(), show(op)),
                None => failed(
                    &self.base,
                    "FAILED",
                    format!(
                        "no async operation with requestId `{id}` (the base remembers the last {MAX_OPS})"
                    ),
                ),
            },
            None => envelope(
                &self.base,
                "SUCCESS",
                String::new(),
                ops.iter().map(show).collect(),
            ),
        }
    }
}

async fn install_now(base: &Base, request: InstallBiz) -> Value {
    let InstallBiz {
        biz_name,
        biz_version,
        biz_url,
        args,
        envs,
        install_strategy,
        ..
    } = request;
    if !args.is_empty() {
        return failed(
            base,
            "FAILED",
            format!(
                "installBiz `args` ({}) has no meaning for a wasm module; pass settings as `envs`, \
                 which the module reads with berth:base/config",
                args.join(" ")
            ),
        );
    }
    let source = match artifact(&biz_url) {
        Ok(source) => source,
        Err(message) => return failed(base, "FAILED", message),
    };
    let installed = base
        .list(Some(&biz_name))
        .map(|l| l.modules)
        .unwrap_or_default();
    if installed.iter().any(|m| m.version == biz_version) {
        if install_strategy == Some(InstallStrategy::UninstallThenInstall) {
            if let Err(e) = base.uninstall(&biz_name, Some(&biz_version)).await {
                return failed(base, data_code(&e), e.to_string());
            }
        } else {
            return failed(
                base,
                "REPEAT_BIZ",
                format!("Biz: {biz_name}:{biz_version} has been installed or registered."),
            );
        }
    }
    // As in SOFAArk, a second version of a biz is installed deactivated,
    // ready for switchBiz; the first becomes active.
    let activate = !installed.iter().any(|m| m.version != biz_version);
    let install = InstallRequest {
        artifact: Some(source),
        activate: Some(activate),
        config: envs,
        ..InstallRequest::new(biz_name.clone(), biz_version.clone())
    };
    let started = std::time::Instant::now();
    match base.install(install, None).await {
        // Installed meanwhile by a concurrent call with the same bytes.
        Ok(response) if response.unchanged => failed(
            base,
            "REPEAT_BIZ",
            format!("Biz: {biz_name}:{biz_version} has been installed or registered."),
        ),
        Ok(response) => {
            let message = format!(
                "Install Biz: {biz_name}:{biz_version} success, cost: {} ms",
                started.elapsed().as_millis()
            );
            envelope(
                base,
                "SUCCESS",
                message.clone(),
                json!({
                    "code": "SUCCESS",
                    "message": message,
                    "bizInfos": [installed_biz_info(&response.module)],
                }),
            )
        }
        Err(e) => failed(base, data_code(&e), e.to_string()),
    }
}

async fn uninstall(base: &Base, biz: BizRef) -> Value {
    match base.uninstall(&biz.biz_name, Some(&biz.biz_version)).await {
        Ok(_) => {
            let message = format!(
                "Uninstall biz: {}:{} success.",
                biz.biz_name, biz.biz_version
            );
            // No data, as in the guide's sample (Arklet's handler answers null).
            envelope(base, "SUCCESS", message, Value::Null)
        }
        Err(e @ (OpsError::ModuleNotFound { .. } | OpsError::VersionNotFound { .. })) => failed(
            base,
            "NOT_FOUND_BIZ",
            // The guide's wording, exactly; the base's own reason goes to the log.
            {
                tracing::debug!(error = %e, "uninstallBiz: not found");
                format!(
                    "Uninstall biz: {}:{} not found.",
                    biz.biz_name, biz.biz_version
                )
            },
        ),
        Err(e) => failed(base, data_code(&e), e.to_string()),
    }
}

async fn switch(base: &Base, biz: BizRef) -> Value {
    match base.switch(&biz.biz_name, &biz.biz_version).await {
        Ok(_) => {
            let message = format!("Switch biz: {}:{} success.", biz.biz_name, biz.biz_version);
            // No data, as in the guide's sample (Arklet's handler answers null).
            envelope(base, "SUCCESS", message, Value::Null)
        }
        Err(e) => failed(base, data_code(&e), e.to_string()),
    }
}

fn modules(base: &Base) -> Result<Vec<ModuleInfo>, OpsError> {
    base.list(None).map(|l| l.modules)
}

fn query_all(base: &Base) -> Value {
    match modules(base) {
        Ok(modules) => {
            // Listed last with its main class, as in the guide's sample.
            let mut master = master_biz();
            master["mainClass"] = json!("embed main");
            let mut list: Vec<Value> = modules.iter().map(biz_info).collect();
            list.push(master);
            envelope(base, "SUCCESS", String::new(), Value::Array(list))
        }
        Err(e) => envelope(
            base,
            "CMD_PROCESS_INTERNAL_ERROR",
            e.to_string(),
            Value::Null,
        ),
    }
}

/// Resident memory of this process, MiB (Linux), for the `jvm` section.
fn resident_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

fn health(base: &Base, query: HealthQuery) -> Value {
    let modules = match modules(base) {
        Ok(modules) => modules,
        Err(e) => {
            return envelope(
                base,
                "CMD_PROCESS_INTERNAL_ERROR",
                e.to_string(),
                Value::Null,
            );
        }
    };
    let summary = base.health();
    let module_mib =
        modules.iter().map(|m| m.memory_in_use_bytes).sum::<u64>() as f64 / (1024.0 * 1024.0);
    // Only the figures that mean something here, under Arklet's names:
    // module linear memory stands in for the heap.
    let mut jvm = json!({
        "run time(s)": summary.uptime_seconds,
        "used heap memory(M)": module_mib,
    });
    if let Some(rss) = resident_mib() {
        jvm["total memory(M)"] = json!(rss);
    }
    let cpu = json!({
        "count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let biz_list: Vec<Value> = modules
        .iter()
        .map(|m| {
            json!({
                "bizName": m.name,
                "bizVersion": m.version,
                "bizState": biz_state(m.state),
                "webContextPath": web_context_path(m),
            })
        })
        .collect();
    let mut data = serde_json::Map::new();
    match query.kind.as_deref() {
        None => {
            data.insert("jvm".into(), jvm);
            data.insert("cpu".into(), cpu);
            data.insert("masterBizInfo".into(), master_biz());
            data.insert(
                "masterBizHealth".into(),
                json!({"readinessState": "ACCEPTING_TRAFFIC"}),
            );
            data.insert("bizListInfo".into(), Value::Array(biz_list));
            data.insert("pluginListInfo".into(), json!([]));
        }
        Some("system") => {
            let wanted = query
                .metrics
                .unwrap_or_else(|| vec!["jvm".into(), "cpu".into(), "masterBizHealth".into()]);
            for metric in wanted {
                let value = match metric.as_str() {
                    "jvm" => jvm.clone(),
                    "cpu" => cpu.clone(),
                    "masterBizHealth" => json!({"readinessState": "ACCEPTING_TRAFFIC"}),
                    other => {
                        return failed(
                            base,
                            "FAILED",
                            format!(
                                "unknown system metric `{other}`; known: jvm, cpu, masterBizHealth"
                            ),
                        );
                    }
                };
                data.insert(metric, value);
            }
        }
        Some("biz") => {
            let matching: Vec<Value> = biz_list
                .into_iter()
                .filter(|b| {
                    query
                        .module_name
                        .as_ref()
                        .is_none_or(|n| b["bizName"] == *n)
                        && query
                            .module_version
                            .as_ref()
                            .is_none_or(|v| b["bizVersion"] == *v)
                })
                .collect();
            if query.module_name.is_some() && query.module_version.is_some() {
                match matching.into_iter().next() {
                    Some(info) => {
                        data.insert("bizInfo".into(), info);
                    }
                    None => {
                        return failed(base, "NOT_FOUND_BIZ", "no such biz is installed".into());
                    }
                }
            } else {
                data.insert("bizListInfo".into(), Value::Array(matching));
            }
        }
        Some("plugin") => {
            // berth has no Ark plugins; shared capabilities are base interfaces.
            data.insert("pluginListInfo".into(), json!([]));
        }
        Some(other) => {
            return failed(
                base,
                "FAILED",
                format!("unknown health type `{other}`; known: system, biz, plugin"),
            );
        }
    }
    envelope(base, "SUCCESS", String::new(), json!({"healthData": data}))
}
