//! `berth deploy [PATH|ARTIFACT]`: build if needed and install into a base.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use berth_api::{InstallResponse, Route};
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

/// An artifact ready to upload.
pub struct Artifact {
    /// Module name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Route, if any was given.
    pub route: Option<Route>,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Make it the default.
    pub activate: bool,
}

impl DeployArgs {
    fn route(&self, fallback: Option<Route>) -> Option<Route> {
        if self.route.is_none() && self.host.is_none() {
            return fallback;
        }
        Some(Route {
            host: self.host.clone(),
            path_prefix: self.route.clone(),
        })
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
            let name = match &self.name {
                Some(name) => name.clone(),
                None => stem(&target)?,
            };
            let Some(version) = self.version.clone() else {
                bail!(
                    "a bare .wasm file carries no version\nhint: pass --version, e.g. --version 1.0.0"
                );
            };
            return Ok(Artifact {
                name,
                version,
                route: self.route(None),
                bytes,
                activate: !self.no_activate,
            });
        }
        let project = Project::open(&target)?;
        let built = project.build(false)?;
        Ok(Artifact {
            name: self.name.clone().unwrap_or(project.manifest.name.clone()),
            version: self
                .version
                .clone()
                .unwrap_or(project.manifest.version.clone()),
            route: self.route(project.manifest.route.clone()),
            bytes: built.bytes,
            activate: !self.no_activate,
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
pub async fn install(client: &OpsClient, artifact: Artifact) -> Result<Deployed> {
    let digest = berth_runtime::Digest::of(&artifact.bytes).to_string();
    let started = Instant::now();
    let install = client
        .upload(
            &artifact.name,
            &artifact.version,
            artifact.route.as_ref(),
            &digest,
            artifact.activate,
            artifact.bytes,
        )
        .await?;
    let client_ms = started.elapsed().as_secs_f64() * 1e3;
    let ingress = client.ingress().await?;
    let route = &install.module.route;
    let url = format!(
        "{}{}",
        ingress.as_str().trim_end_matches('/'),
        route.prefix()
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
            "deployed {}@{} in {:.1} ms (compile cache {:?}, {} bytes, {})",
            m.name, m.version, m.install_duration_ms, m.compile_cache, m.size_bytes, m.digest
        );
    }
    match &m.route.host {
        Some(host) => println!("serving at {} (Host: {host})", deployed.url),
        None => println!("serving at {}", deployed.url),
    }
}
