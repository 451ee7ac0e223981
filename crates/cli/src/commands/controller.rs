//! `berth controller`, `berth apply`, `berth get`, `berth describe`,
//! `berth delete`: the controller and its resources.
//!
//! The controller keeps desired state (ModuleDeployments) durably, places
//! replicas onto the bases that heartbeat to it, and rolls version changes
//! out in batches; these commands read and steer it over its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use berth_api::ErrorBody;
use berth_api::failover::{Controllers, FailoverError};
use berth_controller::events::DeploymentEvent;
use berth_controller::resources::StoredDeployment;
use berth_controller::start::{Config, Controller, StoreSpec};
use berth_controller::status::BaseReplica;

use crate::commands::Output;
use crate::commands::table::Table;

/// Default address of the controller API.
pub const DEFAULT_CONTROLLER: &str = "127.0.0.1:1239";

/// The flags of `berth controller`.
pub struct ServeOptions {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--store`.
    pub store: Option<StoreSpec>,
    /// `--heartbeat-timeout`.
    pub heartbeat_timeout: std::time::Duration,
    /// Not `--no-code`.
    pub compile_for_bases: bool,
    /// `--advertise`.
    pub advertise: Option<String>,
    /// `--leader-ttl`.
    pub leader_ttl: std::time::Duration,
    /// `--trust-key`.
    pub trust_keys: berth_runtime::TrustKeys,
    /// `--drain-grace`.
    pub drain_grace: std::time::Duration,
    /// `--insecure-no-auth`, `--token-file`.
    pub auth: crate::auth::ServerAuthArgs,
    /// `--tls-cert`, `--tls-key`.
    pub tls: crate::tls::ServerTlsArgs,
    /// `--join-token`.
    pub join_token: Option<String>,
}

/// `berth controller`.
pub async fn serve(options: ServeOptions, json_logs: bool) -> Result<()> {
    let ServeOptions {
        listen,
        data_dir,
        store,
        heartbeat_timeout,
        compile_for_bases,
        advertise,
        leader_ttl,
        trust_keys,
        drain_grace,
        auth,
        tls,
        join_token,
    } = options;
    let tls = tls.load()?;
    let data_dir = data_dir.unwrap_or_else(|| super::base::data_home().join("controller"));
    let gate = crate::auth::server_gate(
        crate::auth::Server {
            command: "berth controller",
            data_dir: &data_dir,
            api: listen,
            join: Some(join_token),
        },
        &auth,
    )?;
    let controller = Controller::start(Config {
        listen,
        store,
        data_dir: data_dir.clone(),
        heartbeat_timeout,
        compile_for_bases,
        advertise,
        leader_ttl,
        trust_keys,
        drain_grace,
        auth: Some(gate),
        tls,
    })
    .await?;
    let local = controller.local_addr()?;
    let scheme = controller.scheme();
    let engine = controller.engine().map(str::to_string);
    let store = controller.store().to_string();
    let shared_store = matches!(controller.store(), StoreSpec::Etcd(_));
    let advertised = controller.leadership().me().url.clone();
    if json_logs {
        // Under `--log-format json` the banner is one more JSON log line.
        tracing::info!(
            api = %format!("{scheme}://{local}"),
            data = %data_dir.display(),
            store = %store,
            engine = engine.as_deref().unwrap_or("none (bases compile)"),
            advertise = %advertised,
            "berth controller serving"
        );
    } else {
        println!("berth controller serving on {scheme}://{local}");
        println!("  data  {}", data_dir.display());
        println!("  store {store}");
        if shared_store {
            println!(
                "  ha    one leader among the controllers on this store (lease {}); writes to a follower go to the leader at its URL, this one's {advertised}",
                humantime::format_duration(leader_ttl)
            );
        }
        if auth.insecure_no_auth {
            println!(
                "  bases join with: berth base --controller {scheme}://{listen} --insecure-no-auth"
            );
        } else {
            println!(
                "  bases join with: berth base --controller {scheme}://{listen} --join-token $(cat {})",
                data_dir.join(berth_api::auth::JOIN_TOKEN_FILE).display()
            );
        }
        if let Some(engine) = &engine {
            println!("  code  compiled once for bases with engine {engine}");
        }
    }
    controller
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The controllers `--controller` names (comma separated: the first that
/// answers serves, see [`Controllers`]).
fn controllers(list: &str) -> Result<Controllers> {
    Controllers::with_token(list, crate::auth::client_token().as_deref())
        .map_err(|e| anyhow!("--controller: {e}"))
}

/// Sends the request `build` makes for `path` to the first controller of
/// `list` that answers, and decodes its JSON answer.
pub(crate) async fn call(
    list: &str,
    path: &str,
    build: impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
) -> Result<serde_json::Value> {
    let controllers = controllers(list)?;
    let response = controllers
        .send(|http, base| build(http, format!("{base}{path}")))
        .await
        .map_err(|e| match e {
            FailoverError::Unreachable { .. } => anyhow!(
                "{e}\nhint: start one with `berth controller`, or pass --controller (several separated by commas)"
            ),
            other => anyhow!(other),
        })?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => return Err(crate::error::ApiError::from(err.error).into()),
            Err(_) => bail!("the controller answered {status}"),
        }
    }
    Ok(serde_json::from_slice(&body)?)
}

/// `berth apply -f FILE`.
pub async fn apply(file: &Path, controller: &str, output: Output) -> Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    // Checked here too, so a bad file fails before any network call, with the same path-precise message.
    let berth_api::manifest::Manifest::ModuleDeployment(mut deployment) =
        berth_api::manifest::parse(&text).map_err(|e| {
            anyhow!(
                "{} is not a valid manifest: {e}",
                super::traffic::source_name(file)
            )
        })?;
    // A relative `file:` artifact means: next to the manifest. The
    // controller cannot know where that is, so it is sent absolute.
    let dir = match file.parent() {
        Some(parent) if file != Path::new("-") && !parent.as_os_str().is_empty() => {
            parent.to_path_buf()
        }
        _ => PathBuf::from("."),
    };
    let text = match resolve_artifact(&deployment.spec.module.artifact, &dir)
        .map_err(|e| anyhow!("{}: {e}", super::traffic::source_name(file)))?
    {
        Some(absolute) => {
            deployment.spec.module.artifact = absolute;
            serde_json::to_string(&deployment)?
        }
        None => text,
    };
    let body = call(controller, "/v1/apply", |http, url| {
        http.post(url).body(text.clone())
    })
    .await?;
    if output.data(&body) {
        return Ok(());
    }
    println!(
        "{}/{} {} (generation {})",
        body["kind"].as_str().unwrap_or("?"),
        body["name"].as_str().unwrap_or("?"),
        body["result"].as_str().unwrap_or("?"),
        body["generation"]
    );
    Ok(())
}

/// The absolute form of a relative `file:` artifact, resolved against `dir`
/// (the manifest's directory); `None` when it is absolute or a URL.
fn resolve_artifact(artifact: &str, dir: &Path) -> Result<Option<String>> {
    let Some(path) = artifact.strip_prefix("file:") else {
        return Ok(None);
    };
    if path.starts_with('/') {
        return Ok(None);
    }
    let joined = dir.join(path);
    let absolute = joined.canonicalize().map_err(|e| {
        anyhow!(
            "spec.module.artifact: cannot read {} (`{artifact}`, relative to the manifest's directory): {e}",
            joined.display()
        )
    })?;
    Ok(Some(format!("file:{}", absolute.display())))
}

/// `berth get bases`.
pub async fn get_bases(controller: &str, output: Output) -> Result<()> {
    let body = call(controller, "/v1/bases", |http, url| http.get(url)).await?;
    let bases: Vec<berth_api::BaseStatus> = serde_json::from_value(body)?;
    if output.data(&bases) {
        return Ok(());
    }
    if bases.is_empty() {
        println!("no bases");
        return Ok(());
    }
    let wide = output == Output::Wide;
    let mut header = vec!["NAME", "STATE", "ROLE", "MODULES", "CAPACITY", "LABELS"];
    if wide {
        header.extend(["INGRESS", "LAST HEARTBEAT"]);
    }
    let mut table = Table::new(header);
    for b in &bases {
        let h = &b.heartbeat;
        let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut row = vec![
            h.name.clone(),
            b.state.to_string(),
            // A buffer base takes autoscaled replicas only when their group is full.
            h.labels
                .get("berth.dev/role")
                .cloned()
                .unwrap_or_else(|| "group".into()),
            h.modules.len().to_string(),
            h.capacity_modules.to_string(),
            labels.join(","),
        ];
        if wide {
            row.extend([h.ingress.to_string(), b.last_heartbeat.to_string()]);
        }
        table.row(row);
    }
    table.print();
    Ok(())
}

/// `berth get deployments`.
pub async fn get(controller: &str, output: Output, koupleless: bool) -> Result<()> {
    if koupleless && !matches!(output, Output::Json | Output::Yaml) {
        bail!("--as koupleless shows manifests: add `-o yaml` or `-o json`");
    }
    let body = call(controller, "/v1/deployments", |http, url| http.get(url)).await?;
    if koupleless {
        let deployments: Vec<StoredDeployment> = serde_json::from_value(body)?;
        let forms: Vec<serde_json::Value> = deployments
            .iter()
            .map(|d| berth_api::manifest::koupleless::to_koupleless(&d.manifest))
            .collect();
        output.data(&serde_json::Value::Array(forms));
        return Ok(());
    }
    if output.data(&body) {
        return Ok(());
    }
    let statuses: Vec<serde_json::Value> = body
        .as_array()
        .map(|all| all.iter().map(|d| d["status"].clone()).collect())
        .unwrap_or_default();
    let deployments: Vec<StoredDeployment> = serde_json::from_value(body)?;
    if deployments.is_empty() {
        println!("no deployments");
        return Ok(());
    }
    let wide = output == Output::Wide;
    let mut header = vec![
        "NAME",
        "MODULE",
        "VERSION",
        "READY",
        "UP-TO-DATE",
        "GENERATION",
        "REPLICAS",
    ];
    // Autoscaled deployments add their replica counts and the last scaling
    // decision with its inputs.
    let autoscaled = deployments
        .iter()
        .any(|d| d.manifest.spec.autoscale.is_some());
    if autoscaled {
        header.extend(["CUR/DES/MIN/MAX", "LAST SCALING"]);
    }
    if wide {
        header.push("SELECTOR");
        header.push("ENDPOINTS");
    }
    let endpoints = if wide {
        endpoints(controller).await
    } else {
        Default::default()
    };
    let mut table = Table::new(header);
    for (d, status) in deployments.iter().zip(&statuses) {
        let spec = &d.manifest.spec;
        let mut row = vec![
            d.manifest.metadata.name.clone(),
            spec.module.name.clone(),
            spec.module.version.clone(),
            format!("{}/{}", status["ready"], status["desired"]),
            status["updated"].to_string(),
            d.generation.to_string(),
            replicas_text(&d.manifest.spec, status),
        ];
        if autoscaled {
            row.extend(scaling_columns(d, status));
        }
        if wide {
            let selector: Vec<String> = spec
                .base_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.push(selector.join(","));
            row.push(
                endpoints
                    .get(&d.manifest.metadata.name)
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            );
        }
        table.row(row);
    }
    table.print();
    Ok(())
}

/// Per deployment, its replicas' endpoints as `base=host:port@version`
/// (with `(draining)` or `(not ready)` where so); empty if the controller
/// has no endpoint table.
async fn endpoints(controller: &str) -> std::collections::BTreeMap<String, String> {
    let table = call(controller, "/v1/endpoints", |http, url| http.get(url))
        .await
        .ok()
        .and_then(|body| serde_json::from_value::<berth_api::endpoints::EndpointTable>(body).ok())
        .unwrap_or_default();
    table
        .deployments
        .into_iter()
        .map(|d| {
            let replicas: Vec<String> = d
                .replicas
                .iter()
                .map(|r| {
                    let state = if r.draining {
                        "(draining)"
                    } else if !r.ready {
                        "(not ready)"
                    } else {
                        ""
                    };
                    format!("{}={}@{}{state}", r.base, r.address, r.version)
                })
                .collect();
            let list = if replicas.is_empty() {
                "-".to_string()
            } else {
                replicas.join(",")
            };
            (d.name, list)
        })
        .collect()
}

/// `current/desired/min/max` of an autoscaled deployment and its last
/// scaling decision (`4s ago: observed … 1 → 3`), or `-` for others.
fn scaling_columns(d: &StoredDeployment, status: &serde_json::Value) -> [String; 2] {
    let Some(a) = &d.manifest.spec.autoscale else {
        return ["-".into(), "-".into()];
    };
    let counts = format!(
        "{}/{}/{}/{}",
        status["ready"], status["desired"], a.min_replicas, a.max_replicas
    );
    let last = match &d.scale {
        Some(scale) if !scale.why.is_empty() => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(scale.at_ms);
            let ago = std::time::SystemTime::now()
                .duration_since(at)
                .map_or(0, |d| d.as_secs());
            format!(
                "{} ago: {}",
                humantime::format_duration(std::time::Duration::from_secs(ago)),
                scale.why
            )
        }
        _ => "none yet".into(),
    };
    [counts, last]
}

/// The replicas of a deployment in words: `3`, `all (3)`, `2 (autoscale
/// 1-5)`, `0 (scaled to zero)`.
fn replicas_text(spec: &berth_api::manifest::DeploymentSpec, status: &serde_json::Value) -> String {
    let desired = &status["desired"];
    if status["scaledToZero"] == true {
        return "0 (scaled to zero)".into();
    }
    match (&spec.replicas, &spec.autoscale) {
        (Some(berth_api::manifest::Replicas::All), _) => format!("all ({desired})"),
        (None, Some(a)) => format!(
            "{desired} (autoscale {}-{})",
            a.min_replicas, a.max_replicas
        ),
        _ => desired.to_string(),
    }
}

/// `berth describe deployment NAME`.
pub async fn describe(controller: &str, name: &str, output: Output) -> Result<()> {
    let path = format!("/v1/deployments/{name}");
    let body = call(controller, &path, |http, url| http.get(url)).await?;
    if output.data(&body) {
        return Ok(());
    }
    let status = body["status"].clone();
    let events = body["events"].clone();
    let d: StoredDeployment = serde_json::from_value(body)?;
    println!("Name:        {}", d.manifest.metadata.name);
    println!("Generation:  {}", d.generation);
    println!(
        "Module:      {}@{} ({})",
        d.manifest.spec.module.name, d.manifest.spec.module.version, d.manifest.spec.module.digest
    );
    println!(
        "Replicas:    {} desired, {} ready, {} updated, {} unschedulable",
        replicas_text(&d.manifest.spec, &status),
        status["ready"],
        status["updated"],
        status["unschedulable"]
    );
    let spec = &d.manifest.spec;
    if let Some(scale) = &d.scale {
        let why = match scale.reason {
            berth_controller::scaler::ScaleReason::Idle => "scaled to zero while idle",
            berth_controller::scaler::ScaleReason::Activated => "activated by a gateway",
            berth_controller::scaler::ScaleReason::Autoscaled => "the autoscaler's last decision",
        };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(scale.at_ms);
        let ago = std::time::SystemTime::now()
            .duration_since(at)
            .map_or(0, |d| d.as_secs());
        println!(
            "Scaled:      {} replica(s) by the controller: {why}, {} ago",
            scale.replicas,
            humantime::format_duration(std::time::Duration::from_secs(ago))
        );
    }
    if let Some(zero) = &spec.scale_to_zero {
        println!("Scale:       to zero after {} idle", zero.idle_after);
    }
    if let Some(a) = &spec.autoscale {
        let (metric, target) = a.target.get();
        println!(
            "Autoscale:   {}-{} replicas, target {} {target} per replica, scale-up window {}, scale-down window {}",
            a.min_replicas,
            a.max_replicas,
            metric.as_str(),
            humantime::format_duration(a.scale_up_window()),
            humantime::format_duration(a.scale_down_window()),
        );
    }
    let load = &status["load"];
    if load.is_object() {
        println!(
            "Load:        {} in flight, {:.1} requests/s, {} held ({} gateway(s) reporting)",
            load["inFlight"],
            load["rps"].as_f64().unwrap_or(0.0),
            load["held"],
            load["gateways"]
        );
    } else if spec.scales_to_zero() || spec.autoscale.is_some() {
        println!("Load:        no gateway reports load for it");
    }
    let replicas: Vec<BaseReplica> =
        serde_json::from_value(status["bases"].clone()).unwrap_or_default();
    for r in &replicas {
        println!(
            "  base {:<16} {} {}",
            r.base,
            r.version,
            if r.running {
                "running".to_string()
            } else if let Some(error) = &r.error {
                format!("failed: {error}")
            } else {
                "installing".to_string()
            }
        );
    }
    // Which replicas run which version, so that ready replicas beside a
    // failed rollout never leave it open which version serves.
    let mut versions: std::collections::BTreeMap<&str, (Vec<&str>, Vec<&str>)> = Default::default();
    for r in &replicas {
        let (running, failed) = versions.entry(r.version.as_str()).or_default();
        if r.running {
            running.push(&r.base);
        } else if r.error.is_some() {
            failed.push(&r.base);
        }
    }
    let versions: Vec<String> = versions
        .iter()
        .flat_map(|(version, (running, failed))| {
            let on = |bases: &[&str]| bases.join(", ");
            [
                (!running.is_empty()).then(|| format!("{version} runs on {}", on(running))),
                (!failed.is_empty()).then(|| format!("{version} failed on {}", on(failed))),
            ]
        })
        .flatten()
        .collect();
    if !versions.is_empty() {
        println!("Versions:    {}", versions.join("; "));
    }
    if let Some(r) = &d.rollout {
        println!(
            "Rollout:     {} → {}, batch {}/{}{}",
            r.from.version,
            d.manifest.spec.module.version,
            r.batch,
            d.manifest.spec.strategy.batches,
            r.failed
                .as_ref()
                .map_or(String::new(), |f| format!(", FAILED: {f}"))
        );
    }
    let s = &d.manifest.spec.strategy;
    println!(
        "Strategy:    {} batch(es), pause {}, needConfirm {}, maxUnavailable {}",
        s.batches,
        s.pause_between.as_deref().unwrap_or("none"),
        s.need_confirm,
        s.max_unavailable
    );
    if !d.manifest.spec.priority.is_standard() {
        println!(
            "Priority:    {} (when its group is full, a higher priority evicts a lower)",
            d.manifest.spec.priority
        );
    }
    if !d.history.is_empty() {
        let versions: Vec<&str> = d.history.iter().map(|m| m.version.as_str()).collect();
        println!("History:     {}", versions.join(" → "));
    }
    println!("Conditions:");
    let mut conditions = Table::new(["TYPE", "STATUS", "REASON", "MESSAGE"]);
    for c in status["conditions"].as_array().into_iter().flatten() {
        let text = |key: &str| c[key].as_str().unwrap_or("?").to_string();
        conditions.row([
            text("type"),
            text("status"),
            text("reason"),
            text("message"),
        ]);
    }
    conditions.print_indented("  ");
    let events: Vec<DeploymentEvent> = serde_json::from_value(events).unwrap_or_default();
    if events.is_empty() {
        println!("Events:      none");
    } else {
        println!("Events:");
        let mut table = Table::new(["TYPE", "REASON", "AGE", "MESSAGE"]);
        let now = std::time::SystemTime::now();
        for e in events {
            let ago = |ms: u64| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                let secs = now.duration_since(at).map_or(0, |d| d.as_secs());
                humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
            };
            let times = if e.count > 1 {
                format!(
                    "{} ago (x{} over {})",
                    ago(e.last_ms),
                    e.count,
                    ago(e.first_ms)
                )
            } else {
                format!("{} ago", ago(e.last_ms))
            };
            table.row([e.kind.as_str().to_string(), e.reason, times, e.message]);
        }
        table.print_indented("  ");
    }
    Ok(())
}

/// `berth rollout ACTION NAME`: status, confirm, pause, resume, undo.
///
/// `status` fails (exit 1) when the rollout failed, and with `watch`
/// follows it, printing each change, until it is done or failed.
pub async fn rollout(
    controller: &str,
    action: &str,
    name: &str,
    watch: bool,
    output: Output,
) -> Result<()> {
    let show = format!("/v1/deployments/{name}");
    if action != "status" {
        let path = format!("/v1/deployments/{name}/rollout/{action}");
        call(controller, &path, |http, url| http.post(url)).await?;
    }
    let mut last = String::new();
    loop {
        let body = call(controller, &show, |http, url| http.get(url)).await?;
        let replicas: Vec<BaseReplica> = serde_json::from_value(body["status"]["bases"].clone())?;
        let d: StoredDeployment = serde_json::from_value(body.clone())?;
        let desired = body["status"]["desired"].as_u64().unwrap_or(0) as u32;
        let (line, outcome) = rollout_line(&d, &replicas, desired);
        if line != last {
            if !output.data(&body) {
                println!("{line}");
            }
            last = line;
        }
        match outcome {
            Outcome::Failed(why) if action == "status" => {
                bail!("the rollout of `{name}` failed: {why}")
            }
            Outcome::Going if watch => {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await
            }
            _ => return Ok(()),
        }
    }
}

/// Where a rollout stands.
enum Outcome {
    /// Every replica runs the spec's version.
    Done,
    /// Still moving (or waiting for a confirm, or paused).
    Going,
    /// Stopped: why.
    Failed(String),
}

/// The one-line state of `d`'s rollout, counting only replicas that run
/// the new version (a failed one never counts).
fn rollout_line(d: &StoredDeployment, replicas: &[BaseReplica], desired: u32) -> (String, Outcome) {
    let name = &d.manifest.metadata.name;
    let spec = &d.manifest.spec;
    let on_new = replicas
        .iter()
        .filter(|r| r.running && r.version == spec.module.version)
        .count();
    let failing: Vec<String> = replicas
        .iter()
        .filter_map(|r| {
            let error = r.error.as_ref()?;
            Some(format!(
                "base {} cannot run {}@{}: {error}",
                r.base, spec.module.name, r.version
            ))
        })
        .collect();
    let Some(r) = &d.rollout else {
        let line = format!(
            "{name}: {}@{}, {on_new} of {} replicas run it, no rollout in progress",
            spec.module.name, spec.module.version, desired
        );
        if !failing.is_empty() {
            let why = failing.join("; ");
            return (format!("{line}; {why}"), Outcome::Failed(why));
        }
        let done = on_new as u32 >= desired;
        return (line, if done { Outcome::Done } else { Outcome::Going });
    };
    let (waiting, outcome) = if let Some(why) = &r.failed {
        (
            format!(
                "FAILED: {why}; the other bases keep {} (berth rollout undo {name}, or apply a fixed version)",
                r.from.version
            ),
            Outcome::Failed(why.clone()),
        )
    } else if r.paused {
        (
            format!("paused (berth rollout resume {name})"),
            Outcome::Going,
        )
    } else if r.batch_done_ms.is_some() && spec.strategy.need_confirm && r.confirmed < r.batch {
        (
            format!(
                "batch {} done, waiting for `berth rollout confirm {name}`",
                r.batch
            ),
            Outcome::Going,
        )
    } else if r.batch_done_ms.is_some() {
        (
            format!("batch {} done, pausing before the next", r.batch),
            Outcome::Going,
        )
    } else {
        (format!("batch {} in progress", r.batch), Outcome::Going)
    };
    let line = format!(
        "{name}: {} → {}, batch {}/{} ({on_new} of {} replicas run {}), {waiting}",
        r.from.version,
        spec.module.version,
        r.batch,
        spec.strategy.batches,
        desired,
        spec.module.version
    );
    (line, outcome)
}

/// `berth delete deployment NAME`.
pub async fn delete(controller: &str, name: &str, output: Output) -> Result<()> {
    let path = format!("/v1/deployments/{name}");
    call(controller, &path, |http, url| http.delete(url)).await?;
    let deleted =
        serde_json::json!({"kind": "ModuleDeployment", "name": name, "result": "deleted"});
    if output.data(&deleted) {
        return Ok(());
    }
    println!("ModuleDeployment/{name} deleted");
    Ok(())
}
