//! `berth new NAME`: scaffold a module project that builds as-is.
//!
//! Rust (default): a cargo package. Python and JavaScript: `app.py` or
//! `app.js` plus `wit/`, the `berth:module/module` world with its
//! dependencies (`wasi:*` 0.2.10 and the base's own `wit/base.wit`), which
//! the build generates bindings from.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::project::{Language, MANIFEST, Manifest};

/// Starting points for a module.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A plain-text HTTP handler.
    Http,
    /// A small JSON API (serde_json).
    Json,
}

/// The WIT files of a Python or JavaScript module: path under `wit/`, text.
const WIT: [(&str, &str); 9] = [
    ("world.wit", include_str!("../../templates/world.wit")),
    (
        "deps/berth-base.wit",
        include_str!("../../../../wit/base.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../templates/wit/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../templates/wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../templates/wit/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../templates/wit/deps/http.wit"),
    ),
    (
        "deps/io.wit",
        include_str!("../../templates/wit/deps/io.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../templates/wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../templates/wit/deps/sockets.wit"),
    ),
];

/// Creates `dir` (default `./NAME`) with berth.toml and the code: for Rust
/// Cargo.toml and src/lib.rs, for Python app.py and wit/, for JavaScript
/// app.js and wit/.
pub fn run(
    name: &str,
    dir: Option<PathBuf>,
    template: Template,
    lang: Language,
) -> Result<PathBuf> {
    if berth_api::ModuleName::parse(name).is_err() {
        bail!(
            "`{name}` is not a module name\nhint: {}",
            berth_api::MODULE_NAME_RULE
        );
    }
    if lang != Language::Rust && template != Template::Http {
        bail!(
            "the json template is for Rust modules only\nhint: leave out --template for a {} module",
            crate::project::language_name(lang)
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
        language: (lang != Language::Rust).then_some(lang),
    };
    match lang {
        Language::Rust => {
            write(
                &dir.join("Cargo.toml"),
                &fill(include_str!("../../templates/Cargo.toml.tmpl")),
            )?;
            write(&dir.join("src/lib.rs"), &fill(source))?;
            write(&dir.join(".gitignore"), "/target\n")?;
        }
        Language::Python | Language::Js => {
            let (entry, text, ignore) = if lang == Language::Python {
                (
                    "app.py",
                    include_str!("../../templates/app.py"),
                    "/build\n__pycache__/\n",
                )
            } else {
                ("app.js", include_str!("../../templates/app.js"), "/build\n")
            };
            write(&dir.join(entry), &fill(text))?;
            for (path, text) in WIT {
                write(&dir.join("wit").join(path), text)?;
            }
            write(&dir.join(".gitignore"), ignore)?;
        }
    }
    write(
        &dir.join(MANIFEST),
        &format!(
            "# What the base needs to know about this module.\n{}",
            toml::to_string(&manifest).expect("manifest serializes")
        ),
    )?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
