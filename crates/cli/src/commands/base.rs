//! `berth base` and `berth up`: run a base in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use berth_api::InstallRequest;
use berth_base::{Base, BaseConfig};

/// Flags shared by `berth base` and `berth up`.
#[derive(clap::Args)]
pub struct BaseArgs {
    /// Address of the ingress (module traffic).
    #[arg(long, default_value = berth_api::DEFAULT_INGRESS_ADDR, env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Address of the ops API.
    #[arg(long, default_value = berth_api::DEFAULT_OPS_ADDR, env = "BERTH_OPS")]
    ops: SocketAddr,
    /// Directory for the installed set and the module cache
    /// [default: `berth base`: $XDG_DATA_HOME/berth/base; `berth up`: ./.berth]
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Concurrent module instances across the base (pooling allocator slots).
    #[arg(long, default_value_t = 1000)]
    max_instances: u32,
    /// Default linear memory one instance may use, in MiB (also the most
    /// any module may be given).
    #[arg(long, default_value_t = 128)]
    max_memory_mib: usize,
    /// Default deadline of one request inside a module (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Default number of requests one module version serves at once.
    #[arg(long, default_value_t = 256)]
    max_concurrency: u32,
    /// Default largest request body a module is handed, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_request_bytes: u64,
    /// Largest artifact accepted by install, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_artifact_bytes: usize,
    /// Bytes of a freed instance's linear memory the pool keeps resident
    /// and resets in place for the next instance, instead of returning them
    /// to the OS and faulting them in again (0: return everything). With
    /// the pagemap scan a slot keeps only the pages its last instance
    /// wrote, and an uninstalled module's slots give theirs back. The most
    /// kept is shown as berth_pool_resident_bytes_bound in /metrics.
    #[arg(long, default_value_t = berth_runtime::pool::DEFAULT_MEMORY_KEEP_RESIDENT)]
    memory_keep_resident: usize,
    /// The same for a freed instance's tables, in bytes.
    #[arg(long, default_value_t = berth_runtime::pool::DEFAULT_TABLE_KEEP_RESIDENT)]
    table_keep_resident: usize,
    /// Freed pool slots kept warm (with their kept pages) before the least
    /// recently used is recycled: bounds what keep-resident holds.
    #[arg(long, default_value_t = berth_runtime::pool::DEFAULT_MAX_UNUSED_WARM_SLOTS)]
    max_unused_warm_slots: u32,
    /// Reset kept memory by rewriting every kept byte, not only the pages an
    /// instance wrote (Linux PAGEMAP_SCAN, kernel 6.7+; used when available).
    #[arg(long)]
    no_pagemap_scan: bool,
    /// Compilers a new module's code comes from: `winch,cranelift` serves
    /// on Winch code at once and swaps in Cranelift's when its background
    /// compile is done; `cranelift` waits for Cranelift's code; `winch`
    /// serves on Winch code only and never compiles with Cranelift (quick
    /// edit loops on heavy modules; measuring the baseline tier).
    #[arg(long, default_value = "winch,cranelift")]
    tiers: berth_runtime::Tiers,
    /// Turn off per-module metrics, recent stats and log capture (guest
    /// output then goes to this process's stdout/stderr).
    #[arg(long)]
    no_observability: bool,
    /// Register with this controller and heartbeat to it (e.g. http://127.0.0.1:1239).
    #[arg(long, env = "BERTH_CONTROLLER")]
    controller: Option<String>,
    /// This base's name in the fleet [default: base-<ingress port>]
    #[arg(long)]
    name: Option<String>,
    /// Labels for the controller's base selectors, e.g. group=online,zone=a
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Most module versions this base takes (reported to the controller).
    #[arg(long, default_value_t = 500)]
    capacity_modules: u32,
    /// The ingress address reported to the controller, for gateways to
    /// connect to (e.g. 10.0.0.5:8080 when listening on 0.0.0.0:8080)
    /// [default: the --listen address]
    #[arg(long)]
    advertise: Option<String>,
    /// Time between heartbeats to the controller.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Compile every module here instead of loading the code the controller
    /// compiled once for the fleet (that code is native: using it trusts the
    /// controller like this binary).
    #[arg(long)]
    compile_locally: bool,
    /// How long an install waits for the controller's compiled code before
    /// serving on code compiled here with Winch (the controller's takes
    /// over when it arrives), e.g. 250ms, 0s, 30s.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    controller_code_wait: Duration,
    /// Most connections each listener (ingress, ops API) keeps open; more
    /// are answered 503 and closed.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Ingress threads, each with its own single-threaded runtime and its
    /// own connections (a new one goes to the thread with the fewest
    /// open), so a request and its module instance never change thread [default: one per core]; 0
    /// serves the ingress on one work-stealing runtime
    /// (TOKIO_WORKER_THREADS workers) instead.
    #[arg(long, env = "BERTH_INGRESS_THREADS")]
    ingress_threads: Option<usize>,
    /// Longest a client may take to send a request's headers (slowloris
    /// protection), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Most installs in progress or waiting at once; more are answered 503
    /// (retry after a second) and change nothing.
    #[arg(long, default_value_t = 64)]
    max_pending_installs: usize,
    /// A directory install may read artifact files from (repeatable).
    /// Paths are resolved (symlinks, `..`) first; without any, artifacts
    /// come by upload or URL only. `berth up` also allows its working
    /// directory and the project's build output.
    #[arg(long = "artifact-dir", value_name = "DIR")]
    artifact_dirs: Vec<PathBuf>,
    /// A host artifact URLs may name (repeatable): `host`, `host:port`,
    /// `*.domain` or `*`. Without any, every public host. Loopback,
    /// link-local and private addresses need their host named exactly.
    #[arg(long = "artifact-host", value_name = "HOST")]
    artifact_hosts: Vec<String>,
    /// Accept only artifacts signed by this ed25519 public key (a file or
    /// the base64 key; repeatable). Sign with `berth sign`.
    #[arg(long = "trust-key", value_name = "PUBKEY")]
    trust_keys: Vec<String>,
    /// Do not add `x-berth-module: name@version` to module responses.
    #[arg(long)]
    no_version_header: bool,
    /// Export a span per request hop with OpenTelemetry to this OTLP/HTTP
    /// collector, e.g. http://127.0.0.1:4318 (spans go to /v1/traces).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Trust a fleet gateway (`berth gateway`) that sends this shared
    /// secret: it may then pin the version a request is served by, as it
    /// chose it by the deployment's rules. Without it, or from anyone else,
    /// version pins are ignored.
    #[arg(long, env = "BERTH_GATEWAY_SECRET", hide_env_values = true)]
    gateway_secret: Option<String>,
    /// Format of the base's logs (`json`: the banner is a JSON log line too).
    #[arg(long, value_enum, default_value_t = crate::LogFormat::Text)]
    pub log_format: crate::LogFormat,
    /// Authentication of the ops API (`berth up` runs it open on loopback).
    #[command(flatten)]
    auth: crate::auth::ServerAuthArgs,
    /// HTTPS on both listeners (`--tls-cert`, `--tls-key`).
    #[command(flatten)]
    tls: crate::tls::ServerTlsArgs,
    /// The controller's join token, presented at registration, heartbeats
    /// and watches (`berth controller` printed it at its first start and
    /// keeps it in its data directory as join.token).
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
}

impl BaseArgs {
    fn controller_link(&self) -> Result<Option<berth_base::ControllerLink>> {
        let Some(url) = &self.controller else {
            return Ok(None);
        };
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("base-{}", self.listen.port()));
        let mut link = berth_base::ControllerLink::new(url, name, &self.labels)?;
        link.capacity_modules = self.capacity_modules;
        link.interval = self.heartbeat_interval;
        link.controller_code = !self.compile_locally;
        link.code_wait = self.controller_code_wait;
        link.advertise = self.advertise.clone();
        link.join_token = self.join_token.clone().filter(|t| !t.trim().is_empty());
        if link.join_token.is_none() && !self.auth.insecure_no_auth {
            anyhow::bail!(
                "--controller needs the controller's join token: pass --join-token (or set \
                 BERTH_JOIN_TOKEN); the controller printed it at its first start and keeps it in \
                 its data directory as join.token\n\
                 hint: for a controller started with --insecure-no-auth, start this base with \
                 --insecure-no-auth too"
            );
        }
        Ok(Some(link))
    }

    fn config(&self, default_data_dir: PathBuf) -> Result<BaseConfig> {
        let mut config = BaseConfig::new(self.data_dir.clone().unwrap_or(default_data_dir));
        config.max_connections = self.max_connections;
        config.ingress_threads = self
            .ingress_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        config.header_read_timeout = self.header_read_timeout;
        config.max_pending_installs = self.max_pending_installs;
        config.artifact_dirs = self.artifact_dirs.clone();
        config.artifact_hosts = self.artifact_hosts.clone();
        config.trust_keys = berth_runtime::TrustKeys::parse(&self.trust_keys)?;
        config.ingress_addr = self.listen;
        config.ops_addr = self.ops;
        config.tls = self.tls.load()?;
        config.runtime.max_instances = self.max_instances;
        config.runtime.limits.max_memory_bytes = self.max_memory_mib << 20;
        config.runtime.limits.timeout = self.request_timeout;
        config.runtime.limits.max_concurrency = self.max_concurrency;
        config.runtime.limits.max_request_bytes = self.max_request_bytes;
        config.max_artifact_bytes = self.max_artifact_bytes;
        config.version_header = !self.no_version_header;
        config.observability = !self.no_observability;
        config.runtime.memory_keep_resident = self.memory_keep_resident;
        config.runtime.table_keep_resident = self.table_keep_resident;
        config.runtime.max_unused_warm_slots = self.max_unused_warm_slots;
        config.runtime.pagemap_scan = !self.no_pagemap_scan;
        config.gateway_secret = self.gateway_secret.clone().filter(|s| !s.is_empty());
        config.runtime.tiers = self.tiers;
        config.otlp_endpoint = self
            .otlp_endpoint
            .clone()
            .filter(|endpoint| !endpoint.trim().is_empty());
        Ok(config)
    }
}

/// `berth base`.
pub async fn base(args: BaseArgs) -> Result<()> {
    let mut config = args.config(default_data_dir())?;
    config.controller = args.controller_link()?;
    config.auth = Some(crate::auth::server_gate(
        crate::auth::Server {
            command: "berth base",
            data_dir: &config.data_dir,
            api: config.ops_addr,
            join: None,
        },
        &args.auth,
    )?);
    run(config, false, args.log_format == crate::LogFormat::Json).await
}

/// `berth up`.
pub async fn up(args: BaseArgs) -> Result<()> {
    let json_logs = args.log_format == crate::LogFormat::Json;
    let mut config = args.config(PathBuf::from(".berth"))?;
    config.artifact_dirs.extend(up_artifact_dirs());
    config.auth = Some(crate::auth::up_gate(&config.data_dir, config.ops_addr)?);
    run(config, true, json_logs).await
}

/// What `berth up` (local development) reads artifact files from besides
/// `--artifact-dir`: its working directory and, when set elsewhere, the
/// cargo build output (`CARGO_TARGET_DIR`).
fn up_artifact_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && target.is_dir()
    {
        dirs.push(target);
    }
    dirs
}

fn default_data_dir() -> PathBuf {
    data_home().join("base")
}

/// `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`, else `./.berth`.
pub fn data_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("berth");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/berth"),
        None => PathBuf::from(".berth"),
    }
}

/// The example modules `berth up` installs: (name, route prefix, bytes).
const EXAMPLES: &[(&str, &str, &[u8])] = &[
    ("hello", "/hello", berth_example_modules::HELLO_BYTES),
    ("echo", "/echo", berth_example_modules::ECHO_BYTES),
];

/// How the banner describes a module's install: its time when this start
/// installed it, else when it was first installed (a restart reloads it; the
/// original install time would be stale).
fn install_note(module: &berth_api::ModuleInfo, started: std::time::SystemTime) -> String {
    let installed = humantime::parse_rfc3339_weak(&module.installed_at).ok();
    if installed.is_some_and(|at| at >= started) {
        format!("{:.1} ms install", module.install_duration_ms)
    } else {
        format!("reloaded; installed {}", module.installed_at)
    }
}

async fn run(config: BaseConfig, with_examples: bool, json_logs: bool) -> Result<()> {
    // 1 ms of slack: install times are recorded to the millisecond.
    let started = std::time::SystemTime::now() - Duration::from_millis(1);
    let data_dir = config.data_dir.clone();
    let running = Base::start(config).await?;
    if with_examples {
        for (name, prefix, bytes) in EXAMPLES {
            if running.base.list(Some(name)).is_ok() {
                continue; // installed before (maybe another version): leave it as the user set it
            }
            let request = InstallRequest {
                route: Some(berth_api::Route {
                    host: None,
                    path_prefix: Some((*prefix).into()),
                }),
                ..InstallRequest::new(*name, env!("CARGO_PKG_VERSION"))
            };
            running
                .base
                .install(request, Some(bytes::Bytes::from_static(bytes)))
                .await
                .with_context(|| format!("cannot install the example module `{name}`"))?;
        }
    }
    let ingress = running.ingress_addr;
    let scheme = berth_api::tls::scheme(running.base.config().tls.as_ref());
    let modules = running.base.list(None)?.modules;
    if json_logs {
        // Under `--log-format json` the banner is JSON log lines too.
        tracing::info!(
            ingress = %format!("{scheme}://{ingress}"),
            ops = %format!("{scheme}://{}", running.ops_addr),
            data = %data_dir.display(),
            "berth base serving"
        );
        for module in &modules {
            tracing::info!(
                module = %format!("{}@{}", module.name, module.version),
                state = %format!("{:?}", module.state).to_lowercase(),
                route = %module.route,
                "module"
            );
        }
    } else {
        println!("berth base serving");
        println!("  ingress  {scheme}://{ingress}");
        println!("  ops API  {scheme}://{}", running.ops_addr);
        println!("  data     {}", data_dir.display());
        for module in &modules {
            println!(
                "  module   {}@{} {} at {} ({})",
                module.name,
                module.version,
                format!("{:?}", module.state).to_lowercase(),
                module.route,
                install_note(module, started)
            );
        }
        if with_examples {
            println!(
                "  auth     none: berth up is for local development, its ops API is open on loopback"
            );
            println!("try:  curl {scheme}://{ingress}/hello");
            println!("      curl -d 'hi there' {scheme}://{ingress}/echo/anything");
        }
    }
    wait_for_stop().await?;
    println!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_stop() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}
