//! A module project on disk: `berth.toml` + its code, and building it.
//!
//! `berth.toml` says what the base needs to know (name, version, route,
//! `language`). A Rust module is a cargo package built with `cargo build
//! --release --target wasm32-wasip2`; a Python module (`app.py`) is built
//! with componentize-py and a JavaScript one (`app.js`) with
//! componentize-js, both against the project's `wit/` folder (the
//! `berth:module/module` world: `wasi:http/proxy` plus `berth:base`), with
//! the pinned toolchains of [`crate::toolchain`]. Nothing is called a
//! success until the artifact passes the same checks a base runs at install.

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
    /// The language the module is written in (unset: Rust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
}

/// The languages a module project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// A cargo package (`Cargo.toml`, `src/lib.rs`), built for wasm32-wasip2.
    Rust,
    /// `app.py`, built with componentize-py.
    Python,
    /// `app.js`, built with componentize-js.
    Js,
}

impl Language {
    /// The file the project must have besides `berth.toml`.
    pub fn entry(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Python => "app.py",
            Language::Js => "app.js",
        }
    }
}

/// The WIT world Python and JavaScript modules are built against.
pub const WORLD: &str = "berth:module/module";

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
        if !manifest_path.exists() {
            bail!(
                "{} is not a module folder (it needs {MANIFEST} and the module's code: Cargo.toml, app.py or app.js)\nhint: create one with `berth new NAME`, or pass the module's folder",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow!("{} is not valid: {e}", manifest_path.display()))?;
        let language = manifest.language.unwrap_or(Language::Rust);
        if !dir.join(language.entry()).exists() {
            bail!(
                "{} is not a module folder: {MANIFEST} is there but {} is missing (language {})\nhint: create one with `berth new NAME --lang {}`, or fix `language` in {MANIFEST}",
                dir.display(),
                language.entry(),
                language_name(language),
                language_name(language)
            );
        }
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
        let (artifact, compile_time) = match self.language() {
            Language::Rust => self.build_rust()?,
            language => {
                let out = self.out_path()?;
                if self.up_to_date(&out) {
                    eprintln!(
                        "{} is up to date (newer than every source file)",
                        out.display()
                    );
                    (out, Duration::ZERO)
                } else if language == Language::Python {
                    let mut componentize_py = crate::toolchain::componentize_py()?;
                    self.componentize(
                        componentize_py
                            .args(["-d", "wit", "-w", WORLD, "componentize", "app", "-o"])
                            .arg(&out),
                        "componentize-py",
                    )?
                } else {
                    let (node, cli) = crate::toolchain::componentize_js()?;
                    let world = WORLD.rsplit('/').next().expect("a world name");
                    self.componentize(
                        Command::new(node)
                            .arg(cli)
                            .args(["app.js", "-w", "wit", "-n", world, "-o"])
                            .arg(&out),
                        "componentize-js",
                    )?
                }
            }
        };
        let bytes = std::fs::read(&artifact).with_context(|| match self.language() {
            Language::Rust => format!(
                "the build succeeded but {} is missing; is the package a `cdylib` named `{}`?",
                artifact.display(),
                self.manifest.name
            ),
            Language::Python | Language::Js => format!(
                "the build succeeded but did not write {}",
                artifact.display()
            ),
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

    /// The project's language.
    pub fn language(&self) -> Language {
        self.manifest.language.unwrap_or(Language::Rust)
    }

    /// `build/NAME.wasm`, the artifact of a Python or JavaScript build.
    fn out_path(&self) -> Result<PathBuf> {
        // Absolute: the componentizers run inside the project folder, so a
        // path relative to the caller's folder would land in the wrong place.
        let dir = std::path::absolute(self.dir.join("build"))
            .with_context(|| format!("cannot resolve {}", self.dir.join("build").display()))?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(format!("{}.wasm", self.manifest.name)))
    }

    /// Whether `artifact` exists and is newer than every file of the
    /// project (build output, installed packages and hidden files aside):
    /// a Python or JavaScript build takes seconds, so `berth deploy` after
    /// `berth build` reuses it.
    fn up_to_date(&self, artifact: &Path) -> bool {
        let Ok(built) = std::fs::metadata(artifact).and_then(|m| m.modified()) else {
            return false;
        };
        fn newest(dir: &Path, top: bool) -> Option<std::time::SystemTime> {
            let mut latest = std::time::SystemTime::UNIX_EPOCH;
            for entry in std::fs::read_dir(dir).ok()? {
                let entry = entry.ok()?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.')
                    || name == "__pycache__"
                    || name == "node_modules"
                    || (top && name == "build")
                {
                    continue;
                }
                let meta = entry.metadata().ok()?;
                let modified = if meta.is_dir() {
                    newest(&entry.path(), false)?
                } else {
                    meta.modified().ok()?
                };
                latest = latest.max(modified);
            }
            Some(latest)
        }
        newest(&self.dir, true).is_some_and(|sources| sources < built)
    }

    /// Runs a componentize command (its output going to stderr) in the
    /// project folder; returns the artifact it wrote (the `-o` argument,
    /// last) and the time it took.
    fn componentize(&self, command: &mut Command, tool: &str) -> Result<(PathBuf, Duration)> {
        let out = PathBuf::from(command.get_args().last().expect("an -o argument"));
        let _ = std::fs::remove_file(&out);
        let started = Instant::now();
        let status = command
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("cannot run {tool}"))?;
        if !status.success() {
            bail!(
                "the build of `{}` failed ({tool} output above)",
                self.manifest.name
            );
        }
        Ok((out, started.elapsed()))
    }

    fn build_rust(&self) -> Result<(PathBuf, Duration)> {
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
        Ok((artifact, compile_time))
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

/// How `--lang` spells `language`.
pub fn language_name(language: Language) -> &'static str {
    match language {
        Language::Rust => "rust",
        Language::Python => "python",
        Language::Js => "js",
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
