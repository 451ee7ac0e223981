//! `berth new NAME`: scaffold a module project that builds as-is.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::project::{MANIFEST, Manifest};

/// Starting points for a module.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A plain-text HTTP handler.
    Http,
    /// A small JSON API (serde_json).
    Json,
}

/// Creates `dir` (default `./NAME`) with Cargo.toml, src/lib.rs and berth.toml.
pub fn run(name: &str, dir: Option<PathBuf>, template: Template) -> Result<PathBuf> {
    if berth_api::ModuleName::parse(name).is_err() {
        bail!(
            "`{name}` is not a module name\nhint: {}",
            berth_api::MODULE_NAME_RULE
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} already exists and is not empty\nhint: pick another name, or pass --dir with a new folder",
            dir.display()
        );
    }
    let prefix = format!("/{name}");
    let (source, extra_deps) = match template {
        Template::Http => (include_str!("../../templates/http.rs"), ""),
        Template::Json => (
            include_str!("../../templates/json.rs"),
            "serde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n",
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{prefix}}", &prefix)
            .replace("{{extra_deps}}", extra_deps)
    };
    let manifest = Manifest {
        name: name.to_string(),
        version: "0.1.0".into(),
        route: Some(berth_api::Route {
            host: None,
            path_prefix: Some(prefix.clone()),
        }),
        limits: None,
        allowed_hosts: Vec::new(),
        config: Default::default(),
    };
    write(
        &dir.join("Cargo.toml"),
        &fill(include_str!("../../templates/Cargo.toml.tmpl")),
    )?;
    write(&dir.join("src/lib.rs"), &fill(source))?;
    write(
        &dir.join(MANIFEST),
        &format!(
            "# What the base needs to know about this module.\n{}",
            toml::to_string(&manifest).expect("manifest serializes")
        ),
    )?;
    write(&dir.join(".gitignore"), "/target\n")?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
