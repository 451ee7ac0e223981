//! `berth dev [PATH]`: rebuild on save and hot-redeploy into a running base.
//!
//! Each successful build is installed as a new version `<version>-dev.<n>`
//! (versions are immutable), which the base switches to atomically; the
//! previous dev version is then removed. A failed build or a refused artifact
//! prints the error and leaves the previous version serving. After each
//! redeploy the command prints the save-to-serving latency *excluding* the
//! compiler's time: from the file event to the first response served by the
//! new version, minus the time cargo took.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use berth_api::MODULE_HEADER;
use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::client::OpsClient;
use crate::commands::deploy::{self, Artifact};
use crate::project::Project;

/// What to watch and where to deploy.
#[derive(clap::Args)]
pub struct DevArgs {
    /// The module folder [default: .]
    pub path: Option<PathBuf>,
    /// Ops API of the base.
    #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
    pub base: String,
}

/// `berth dev`: runs until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<()> {
    let dir = args.path.unwrap_or_else(|| PathBuf::from("."));
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let project = Project::open(&dir)?;
    let client = OpsClient::new(&args.base)?;
    client.health().await?;

    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let watched = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            )
            && event.paths.iter().any(|p| is_source(&watched, p))
        {
            let _ = tx.send(Instant::now());
        }
    })
    .context("cannot watch the module's files")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;

    let mut session = Session {
        client,
        project,
        next: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        current: None,
    };
    println!("watching {} (Ctrl-C to stop)", dir.display());
    session.redeploy(None).await;
    // A save that arrived while a build ran, so after the files were read.
    let mut pending: Option<Instant> = None;
    loop {
        let first = match pending.take() {
            Some(saved) => saved,
            None => tokio::select! {
                Some(saved) = changes.recv() => saved,
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        // Editors write a file in several steps: let them settle.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        while changes.try_recv().is_ok() {}
        println!("saved: building {}", session.project.manifest.name);
        session.redeploy(Some(first)).await;
        // Saves during the build may not be in it: build again for them.
        while let Ok(saved) = changes.try_recv() {
            if saved >= started {
                pending.get_or_insert(saved);
            }
        }
    }
    if let Some(version) = session.current {
        println!(
            "stopped; {}@{version} keeps serving",
            session.project.manifest.name
        );
    }
    Ok(())
}

/// Whether `path` is a source file of the project (not build output).
fn is_source(dir: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(dir) else {
        return false;
    };
    // Build output and installed packages, not sources.
    if ["target", "build", "node_modules", "__pycache__"]
        .iter()
        .any(|skip| relative.starts_with(skip))
        || relative
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    {
        return false;
    }
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("rs" | "toml" | "wit" | "py" | "js" | "mjs")
    ) && path.file_name().is_some_and(|n| n != "Cargo.lock")
}

struct Session {
    client: OpsClient,
    project: Project,
    next: u64,
    /// The dev version now serving.
    current: Option<String>,
}

impl Session {
    /// Builds and deploys (after the save at `saved`, or the first time
    /// when `None`); on any failure, says so and keeps what serves.
    async fn redeploy(&mut self, saved: Option<Instant>) {
        let name = self.project.manifest.name.clone();
        let keeps = match &self.current {
            Some(v) => format!("{name}@{v} keeps serving"),
            None => "nothing was deployed".into(),
        };
        // Re-read berth.toml: the route or version may have changed.
        if let Ok(project) = Project::open(&self.project.dir) {
            self.project = project;
        }
        let dir = self.project.dir.clone();
        let built = tokio::task::spawn_blocking(move || Project::open(&dir)?.build(false)).await;
        let built = match built {
            Ok(Ok(built)) => built,
            Ok(Err(e)) => return eprintln!("error: {e:#}\n{keeps}"),
            Err(e) => return eprintln!("error: build task failed: {e}\n{keeps}"),
        };
        let version = format!("{}-dev.{}", self.project.manifest.version, self.next);
        self.next += 1;
        let mut request = self.project.manifest.install_request();
        request.version = version.clone();
        let artifact = Artifact {
            request,
            bytes: built.bytes,
        };
        let deployed = match deploy::install(&self.client, artifact).await {
            Ok(deployed) => deployed,
            Err(e) => return eprintln!("error: {e:#}\n{keeps}"),
        };
        let label = format!("{name}@{version}");
        let serving = wait_until_serving(
            &deployed.url,
            deployed.install.module.route.host.as_deref(),
            &label,
        )
        .await;
        let latency = saved.map(|s| s.elapsed().saturating_sub(built.compile_time));
        if let Some(old) = self.current.replace(version.clone())
            && let Err(e) = self.client.uninstall(&name, Some(&old)).await
        {
            eprintln!("warning: could not remove the previous dev version {name}@{old}: {e:#}");
        }
        match (serving, latency) {
            (true, Some(latency)) => println!(
                "redeployed {label}: serving {:.0} ms after the save (excluding {:.1} s compiling), install {:.1} ms, at {}",
                latency.as_secs_f64() * 1e3,
                built.compile_time.as_secs_f64(),
                deployed.install.module.install_duration_ms,
                deployed.url
            ),
            // The first build answers no save: no save-to-serving time to show.
            (true, None) => println!(
                "deployed {label}: serving at {} ({:.1} s compiling, install {:.1} ms); save a file to redeploy",
                deployed.url,
                built.compile_time.as_secs_f64(),
                deployed.install.module.install_duration_ms,
            ),
            (false, _) => eprintln!(
                "warning: installed {label}, but {} did not answer from it within 5 s",
                deployed.url
            ),
        }
    }
}

/// Polls `url` until a response comes from `label`; false after 5 s.
async fn wait_until_serving(url: &str, host: Option<&str>, label: &str) -> bool {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut request = http.get(url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Ok(response) = request.send().await
            && response
                .headers()
                .get(MODULE_HEADER)
                .is_some_and(|v| v == label)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}
