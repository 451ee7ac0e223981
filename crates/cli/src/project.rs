//! A module project on disk: `berth.toml` + a cargo package, and building it.
//!
//! `berth.toml` says what the base needs to know (name, version, route);
//! `Cargo.toml` builds the code. The build is `cargo build --release
//! --target wasm32-wasip2`, and nothing is called a success until the
//! artifact passes the same checks a base runs at install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use berth_api::Route;
use serde::{Deserialize, Serialize};

/// The manifest file of a module project.
pub const MANIFEST: &str = "berth.toml";

/// What `berth.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Module name (also the cargo package name).
    pub name: String,
    /// Module version.
    pub version: String,
    /// Where the module's traffic comes from.
    #[serde(default)]
    pub route: Option<Route>,
    /// Resource limits (unset: the base's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<berth_api::Limits>,
    /// Hosts outgoing HTTP may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Config values the module reads with `berth_guest::config`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
}

impl Manifest {
    /// The install request this manifest describes.
    pub fn install_request(&self) -> berth_api::InstallRequest {
        berth_api::InstallRequest {
            route: self.route.clone(),
            limits: self.limits,
            allowed_hosts: self.allowed_hosts.clone(),
            config: self.config.clone(),
            ..berth_api::InstallRequest::new(&self.name, &self.version)
        }
    }
}

/// A module project folder.
pub struct Project {
    /// The folder.
    pub dir: PathBuf,
    /// Its `berth.toml`.
    pub manifest: Manifest,
}

/// A built and checked artifact.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Built {
    /// The `.wasm` file.
    pub artifact: PathBuf,
    /// Size in bytes.
    pub size_bytes: u64,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Time cargo took.
    #[serde(skip)]
    pub compile_time: Duration,
    /// The bytes.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl Project {
    /// Opens the project in `dir`, or says why `dir` is not one.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST);
        if !dir.join("Cargo.toml").exists() || !manifest_path.exists() {
            bail!(
                "{} is not a module folder (it needs {MANIFEST} and Cargo.toml)\nhint: create one with `berth new NAME`, or pass the module's folder",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow!("{} is not valid: {e}", manifest_path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Builds the module for `wasm32-wasip2` (release). With `check`, also
    /// compiles the artifact the way a base would and fails if a base would
    /// refuse it (`berth build`); deploys skip that, since the base runs the
    /// same check and answers with the same message. The compiler's output
    /// goes to stderr as it happens.
    pub fn build(&self, check: bool) -> Result<Built> {
        check_wasm_target(&self.dir)?;
        let started = Instant::now();
        let status = Command::new(cargo())
            .current_dir(&self.dir)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .status()
            .context("cannot run cargo")?;
        let compile_time = started.elapsed();
        if !status.success() {
            bail!(
                "the build of `{}` failed (compiler output above)",
                self.manifest.name
            );
        }
        let artifact = self
            .target_dir()?
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", self.manifest.name.replace('-', "_")));
        let bytes = std::fs::read(&artifact).with_context(|| {
            format!(
                "the build succeeded but {} is missing; is the package a `cdylib` named `{}`?",
                artifact.display(),
                self.manifest.name
            )
        })?;
        if check {
            berth_runtime::validate(&bytes)
                .map_err(|e| anyhow!("{} is not a valid berth module: {e}", artifact.display()))?;
        }
        Ok(Built {
            size_bytes: bytes.len() as u64,
            digest: berth_runtime::Digest::of(&bytes).to_string(),
            artifact,
            compile_time,
            bytes,
        })
    }

    fn target_dir(&self) -> Result<PathBuf> {
        let output = Command::new(cargo())
            .current_dir(&self.dir)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("cannot run cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        metadata["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("cargo metadata did not name a target directory"))
    }
}

/// `cargo` from `PATH` (the rustup proxy), so the module folder's own
/// `rust-toolchain.toml`, if any, picks the toolchain.
fn cargo() -> &'static str {
    "cargo"
}

/// Fails with the exact `rustup` command when `wasm32-wasip2` is missing
/// from the toolchain that builds `dir`.
fn check_wasm_target(dir: &Path) -> Result<()> {
    // `RUSTC` names the compiler, as it does for cargo.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .current_dir(dir)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .context("cannot run rustc: is the Rust toolchain installed? (https://rustup.rs)")?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = output.status.success()
        && std::fs::read_dir(&libdir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        });
    if !has_std {
        bail!(
            "the wasm32-wasip2 target is not installed for the toolchain building {}\nhint: run `rustup target add wasm32-wasip2`",
            dir.display()
        );
    }
    Ok(())
}
