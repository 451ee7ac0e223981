//! `berth deploy [PATH|ARTIFACT]`: build if needed and install into a base.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use berth_api::{InstallRequest, InstallResponse, Limits, ModuleState, Route};
use serde::Serialize;

use crate::client::OpsClient;
use crate::commands::Output;
use crate::error::api_error;
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
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
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
        if !target.exists() {
            bail!(
                "{}: no such file or folder\nhint: pass a module folder (with berth.toml) or a built .wasm file",
                target.display()
            );
        }
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
            let mut request = self.apply(InstallRequest::new(stem(&target)?, ""))?;
            request.signature = signature_beside(&target)?;
            return Ok(Artifact { request, bytes });
        }
        let project = Project::open(&target)?;
        let built = project.build(false)?;
        let mut request = self.apply(project.manifest.install_request())?;
        request.signature = signature_beside(&built.artifact)?;
        Ok(Artifact {
            request,
            bytes: built.bytes,
        })
    }
}

/// The text of `FILE.wasm.sig` (written by `berth sign`) when there is
/// one: sent with the upload for bases that trust signing keys.
fn signature_beside(artifact: &Path) -> Result<Option<String>> {
    let mut sig = artifact.as_os_str().to_owned();
    sig.push(".sig");
    let sig = PathBuf::from(sig);
    match std::fs::read_to_string(&sig) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read the signature {}: {e}", sig.display())),
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
    let (name, version) = (
        artifact.request.name.clone(),
        artifact.request.version.clone(),
    );
    let deployed = match install(&client, artifact).await {
        Ok(deployed) => deployed,
        Err(e) => match api_error(&e) {
            Some(api) if api.code == "version_conflict" => {
                let dev = dev_versions(&client, &name).await;
                return Err(api
                    .clone()
                    .with_hint(conflict_hint(&name, &version, &dev))
                    .into());
            }
            _ => return Err(e),
        },
    };
    if !args.output.data(&deployed) {
        print(&deployed);
    }
    Ok(())
}

/// The versions `berth dev` left installed for `name`.
async fn dev_versions(client: &OpsClient, name: &str) -> Vec<String> {
    client
        .module(name)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.version)
        .filter(|v| v.contains("-dev."))
        .collect()
}

/// How to get past a `version_conflict` for `name@version`: a new version,
/// or removing the old one (and what `berth dev` left behind).
fn conflict_hint(name: &str, version: &str, dev: &[String]) -> String {
    let mut hint = match next_version(version) {
        Some(next) => format!(
            "deploy this build as a new version: `berth deploy --version {next}` (or raise `version` in berth.toml)"
        ),
        None => "deploy this build as a new version: `berth deploy --version <new version>`".into(),
    };
    hint.push_str(&format!(
        ", or replace {name}@{version}: `berth undeploy {name} --version {version}`, then deploy again"
    ));
    for v in dev {
        hint.push_str(&format!(
            "\nhint: `berth dev` left {name}@{v} installed; remove it with `berth undeploy {name} --version {v}`"
        ));
    }
    hint
}

/// The next patch version of `version` (`0.1.0` → `0.1.1`, `1.2.3-dev.4` → `1.2.4`).
fn next_version(version: &str) -> Option<String> {
    let core = version.split(['-', '+']).next()?;
    let parts: Vec<u64> = core
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [major, minor, patch] = parts[..] else {
        return None;
    };
    Some(format!("{major}.{minor}.{}", patch + 1))
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
            "deployed {}@{} in {:.1} ms (compile cache {}, {}, {})",
            m.name,
            m.version,
            m.install_duration_ms,
            format!("{:?}", m.compile_cache).to_lowercase(),
            crate::commands::human_bytes(m.size_bytes),
            m.digest
        );
    }
    let host = m
        .route
        .host
        .as_ref()
        .map_or(String::new(), |h| format!(" (Host: {h})"));
    if m.state == ModuleState::Active {
        println!("serving at {}{host}", deployed.url);
        if m.tier == Some(berth_api::CodeTier::Winch) {
            println!(
                "code: winch (baseline) for now; Cranelift's optimized code takes over when compiled (`berth status {}` shows it)",
                m.name
            );
        }
    } else {
        // Installed beside the default: the route's URL still reaches the default.
        println!(
            "not serving yet: {}{host} still reaches the default version",
            deployed.url
        );
        println!(
            "hint: send it traffic with a rule (`berth rules set {0} -f rules.yaml`), or make it the default with `berth switch {0} {1}`",
            m.name, m.version
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_is_the_next_patch() {
        assert_eq!(next_version("0.1.0").as_deref(), Some("0.1.1"));
        assert_eq!(next_version("1.2.3-dev.4").as_deref(), Some("1.2.4"));
        assert_eq!(next_version("latest"), None);
        let hint = conflict_hint("greeter", "0.1.0", &["0.1.0-dev.7".into()]);
        assert!(hint.contains("`berth deploy --version 0.1.1`"), "{hint}");
        assert!(
            hint.contains("`berth undeploy greeter --version 0.1.0-dev.7`"),
            "{hint}"
        );
    }
}
