//! `berth deploy [PATH|ARTIFACT]`: build if needed and install into a base.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use berth_api::{InstallRequest, InstallResponse, Limits, Route};
use serde::Serialize;

use crate::client::OpsClient;
use crate::commands::{Output, print_json};
use crate::project::Project;

/// What to deploy and where.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// A module folder (built first) or a built `.wasm` file [default: .]
    pub target: Option<PathBuf>,
    /// Ops API of the base.
    #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
    pub base: String,
    /// Version to install as [default: berth.toml's]
    #[arg(long)]
    pub version: Option<String>,
    /// Path prefix to serve at [default: berth.toml's, else /NAME]
    #[arg(long)]
    pub route: Option<String>,
    /// Host to serve (requests with this Host header)
    #[arg(long)]
    pub host: Option<String>,
    /// Module name [default: berth.toml's, or the .wasm file's stem]
    #[arg(long)]
    pub name: Option<String>,
    /// Install beside the current default instead of switching to it
    /// (for traffic rules, or a later `berth switch`).
    #[arg(long)]
    pub no_activate: bool,
    /// Memory limit per instance, MiB [default: berth.toml's, else the base's]
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Deadline per request, e.g. 500ms or 2s [default: berth.toml's, else the base's]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Requests served at once [default: berth.toml's, else the base's]
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// Grant outgoing HTTP to a host (`api.example.com`, `*.example.com`,
    /// `host:port`, `*`); repeatable, added to berth.toml's.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// A config value `KEY=VALUE`; repeatable, over berth.toml's.
    #[arg(long = "config")]
    pub config: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The result of a deploy.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployed {
    /// What the base reported.
    #[serde(flatten)]
    pub install: InstallResponse,
    /// Where the module now serves.
    pub url: String,
    /// Round trip of the install call, ms.
    pub client_ms: f64,
}

/// An artifact ready to upload, and how to install it.
pub struct Artifact {
    /// Name, version, route, limits, grants, config.
    pub request: InstallRequest,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl DeployArgs {
    /// Lays the command-line options over `request` (from berth.toml or defaults).
    fn apply(&self, mut request: InstallRequest) -> Result<InstallRequest> {
        if let Some(name) = &self.name {
            request.name = name.clone();
        }
        if let Some(version) = &self.version {
            request.version = version.clone();
        }
        if self.route.is_some() || self.host.is_some() {
            request.route = Some(Route {
                host: self.host.clone(),
                path_prefix: self.route.clone(),
            });
        }
        if self.no_activate {
            request.activate = Some(false);
        }
        if self.memory_mib.is_some() || self.timeout.is_some() || self.max_concurrency.is_some() {
            let mut limits = request.limits.unwrap_or_default();
            limits.memory_mib = self.memory_mib.or(limits.memory_mib);
            limits.timeout_ms = self
                .timeout
                .map(|t| t.as_millis() as u64)
                .or(limits.timeout_ms);
            limits.max_concurrency = self.max_concurrency.or(limits.max_concurrency);
            request.limits = Some(Limits { ..limits });
        }
        request
            .allowed_hosts
            .extend(self.allow_hosts.iter().cloned());
        for pair in &self.config {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("--config `{pair}` is not KEY=VALUE"))?;
            request.config.insert(key.to_string(), value.to_string());
        }
        Ok(request)
    }

    /// Builds (for a folder) or reads (for a `.wasm` file) what to deploy.
    pub fn artifact(&self) -> Result<Artifact> {
        let target = self.target.clone().unwrap_or_else(|| PathBuf::from("."));
        if target.is_file() {
            if target.extension().is_none_or(|e| e != "wasm") {
                bail!(
                    "{} is neither a module folder nor a .wasm file",
                    target.display()
                );
            }
            let bytes = std::fs::read(&target)
                .with_context(|| format!("cannot read {}", target.display()))?;
            if self.version.is_none() {
                bail!(
                    "a bare .wasm file carries no version\nhint: pass --version, e.g. --version 1.0.0"
                );
            }
            let request = self.apply(InstallRequest::new(stem(&target)?, ""))?;
            return Ok(Artifact { request, bytes });
        }
        let project = Project::open(&target)?;
        let built = project.build(false)?;
        Ok(Artifact {
            request: self.apply(project.manifest.install_request())?,
            bytes: built.bytes,
        })
    }
}

fn stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.replace('_', "-"))
        .context("cannot take a module name from the file name; pass --name")
}

/// Uploads `artifact` to the base and reports where it serves.
pub async fn install(client: &OpsClient, mut artifact: Artifact) -> Result<Deployed> {
    artifact.request.digest = Some(berth_runtime::Digest::of(&artifact.bytes).to_string());
    let started = Instant::now();
    let install = client.upload(&artifact.request, artifact.bytes).await?;
    let client_ms = started.elapsed().as_secs_f64() * 1e3;
    let ingress = client.ingress().await?;
    let url = format!(
        "{}{}",
        ingress.as_str().trim_end_matches('/'),
        install.module.route.prefix()
    );
    Ok(Deployed {
        install,
        url,
        client_ms,
    })
}

/// `berth deploy`.
pub async fn run(args: DeployArgs) -> Result<()> {
    let client = OpsClient::new(&args.base)?;
    // Fail on an unreachable base before spending time on a build.
    client.health().await?;
    let artifact = args.artifact()?;
    let deployed = install(&client, artifact).await?;
    match args.output {
        Output::Json => print_json(&deployed),
        Output::Text => print(&deployed),
    }
    Ok(())
}

/// Prints a deploy for people.
pub fn print(deployed: &Deployed) {
    let m = &deployed.install.module;
    if deployed.install.unchanged {
        println!(
            "{}@{} was already installed with these bytes ({})",
            m.name, m.version, m.digest
        );
    } else {
        println!(
            "deployed {}@{} in {:.1} ms (compile cache {}, {} bytes, {})",
            m.name,
            m.version,
            m.install_duration_ms,
            format!("{:?}", m.compile_cache).to_lowercase(),
            m.size_bytes,
            m.digest
        );
    }
    match &m.route.host {
        Some(host) => println!("serving at {} (Host: {host})", deployed.url),
        None => println!("serving at {}", deployed.url),
    }
}
