//! The pinned toolchains that build Python and JavaScript modules, installed
//! on first use into the user's cache directory.
//!
//! componentize-py comes from PyPI (a venv with `pip install
//! componentize-py==VERSION`), componentize-js from npm (`npm install
//! @bytecodealliance/componentize-js@VERSION`). Each is installed into a
//! fresh temporary folder and renamed into place only when complete, so an
//! interrupted install is never mistaken for a finished one, and two builds
//! installing at once both end with the same working toolchain. The
//! installer's own progress output goes to stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The componentize-py release Python modules are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js release JavaScript modules are built with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// Where toolchains live: `$BERTH_TOOLCHAINS`, else
/// `$XDG_CACHE_HOME/berth/toolchains`, else `~/.cache/berth/toolchains`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_TOOLCHAINS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("berth").join("toolchains")
}

/// A command running componentize-py (add its arguments), installed first
/// if needed.
pub fn componentize_py() -> Result<Command> {
    let dir = root().join(format!("componentize-py-{COMPONENTIZE_PY}"));
    // The venv's own python, not its `bin/componentize-py` script: that
    // script's `#!` names the temporary folder the venv was built in.
    let command = || {
        let mut command = Command::new(dir.join("bin").join("python3"));
        command.args([
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
        ]);
        command
    };
    if dir.join("bin").join("componentize-py").exists() {
        return Ok(command());
    }
    let python = find("python3", "python3 python3-venv")?;
    install(
        &dir,
        &format!("componentize-py {COMPONENTIZE_PY} from PyPI"),
        |tmp| {
            run(
                Command::new(&python).args(["-m", "venv"]).arg(tmp),
                "python3 -m venv",
                "the Python venv module is missing\nhint: install it with `sudo apt-get install python3-venv`",
            )?;
            run(
                Command::new(tmp.join("bin").join("pip"))
                    .args([
                        "install",
                        "--disable-pip-version-check",
                        "--progress-bar",
                        "off",
                    ])
                    .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
                "pip install componentize-py",
                "pip could not install componentize-py; check the network connection to pypi.org (pip's output is above)",
            )
        },
    )?;
    Ok(command())
}

/// `node` and the componentize-js entry point, installed first if needed.
pub fn componentize_js() -> Result<(PathBuf, PathBuf)> {
    let node = find("node", "nodejs npm")?;
    let dir = root().join(format!("componentize-js-{COMPONENTIZE_JS}"));
    let cli = dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    if cli.exists() {
        return Ok((node, cli));
    }
    let npm = find("npm", "npm")?;
    install(
        &dir,
        &format!("componentize-js {COMPONENTIZE_JS} from npm"),
        |tmp| {
            // An empty package.json makes npm install here, not in a parent folder.
            std::fs::write(tmp.join("package.json"), "{\"private\": true}\n")
                .with_context(|| format!("cannot write to {}", tmp.display()))?;
            run(
                Command::new(&npm)
                    .current_dir(tmp)
                    .args(["install", "--no-audit", "--no-fund", "--loglevel", "http"])
                    .arg(format!(
                        "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
                    )),
                "npm install @bytecodealliance/componentize-js",
                "npm could not install componentize-js; check the network connection to registry.npmjs.org (npm's output is above)",
            )
        },
    )?;
    Ok((node, cli))
}

/// Installs into `dir` through a temporary sibling folder, printing what
/// happens.
fn install(dir: &Path, what: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir.parent().expect("toolchain folders have a parent");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create the toolchain folder {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".installing-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    eprintln!("installing {what} into {} (first use only)…", dir.display());
    let started = std::time::Instant::now();
    fill(tmp.path())?;
    // Someone else may have finished first: theirs is as good as ours.
    let installed = tmp.keep();
    if let Err(e) = std::fs::rename(&installed, dir) {
        let _ = std::fs::remove_dir_all(&installed);
        if !dir.exists() {
            return Err(e)
                .with_context(|| format!("cannot move the toolchain to {}", dir.display()));
        }
    }
    eprintln!(
        "installed {what} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `command`, its output going to stderr; fails with `hint` otherwise.
fn run(command: &mut Command, what: &str, hint: &str) -> Result<()> {
    let status = command
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {hint}");
    }
    Ok(())
}

/// `program` from `PATH`, or an error naming the Debian packages to install.
pub fn find(program: &str, packages: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{program}` is not installed (not found on PATH); it is needed to build this module\nhint: install it, e.g. `sudo apt-get install {packages}` on Debian or Ubuntu"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
