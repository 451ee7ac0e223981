//! Compiled code for the fleet: the controller compiles each deployed
//! module once and bases fetch the result instead of compiling it again.
//!
//! Why: a base turns an artifact into native code with Cranelift (~55 ms
//! for a small module, seconds for a large one). Twenty bases getting the
//! same version would do that twenty times; on shared cores that is what
//! dominated the time from `berth apply` to every replica serving. Compiled
//! code depends only on the wasmtime version and the engine's settings, which
//! [`berth_runtime::engine_tag`] names, so one compile serves every base
//! whose tag matches the controller's. A base with other settings asks with
//! its own tag, is told there is no code for it (404), and compiles itself.
//!
//! The controller compiles only artifacts its deployments name, fetched from
//! the deployment's own `artifact` and checked against its `digest`; each
//! digest is compiled at most once at a time (concurrent asks wait for the
//! same compile) and the result is kept on disk under `<data-dir>/compiled`
//! — only there: each answer reads the file (the page cache serves a
//! fleet's worth of asks), so the controller's memory does not grow with
//! the number of modules deployed.
//! A compile starts as soon as a deployment is applied, so by the time its
//! bases ask, the code is usually ready.
//!
//! Imports: the same compile reads which interfaces the module imports
//! beyond WASI (kept beside the code as `<digest>-<tag>.imports`);
//! the scheduler places a deployment only on bases offering all of them
//! ([`CodeShop::imports`]).
//!
//! Trust: compiled code is native code, so a base that uses it trusts the
//! controller as much as its own binary. Bases do by default (the controller
//! already decides what they run); `berth base --compile-locally` opts out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_runtime::{Digest, RuntimeConfig};
use tokio::sync::OnceCell;

/// Largest artifact the controller fetches to compile.
const MAX_ARTIFACT: usize = 256 << 20;

/// Why there is no code to ship.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The asking engine differs from the controller's.
    #[error(
        "no code for engine {asked}: this controller compiles for engine {ours}; the base compiles the module itself"
    )]
    OtherEngine {
        /// The tag asked for.
        asked: String,
        /// The controller's tag.
        ours: String,
    },
    /// No deployment names the digest.
    #[error("no deployment names artifact {0}; the controller compiles only what it deploys")]
    Unknown(String),
    /// Fetching, checking or compiling failed.
    #[error("cannot compile {digest} from {artifact}: {reason}")]
    Failed {
        /// The digest.
        digest: String,
        /// Where the artifact was fetched from.
        artifact: String,
        /// Why.
        reason: String,
    },
}

/// Where a digest's code is, or why there is none.
type Compiled = Result<PathBuf, String>;

/// The controller's compiler and its cache of compiled code.
pub struct CodeShop {
    engine: berth_runtime::Engine,
    tag: String,
    dir: PathBuf,
    http: reqwest::Client,
    cells: Mutex<HashMap<String, Arc<OnceCell<Compiled>>>>,
    /// Digest → its imports (`None`: its compile failed, so unknown).
    imports: Mutex<HashMap<String, Option<Vec<String>>>>,
}

/// What the controller knows of the interfaces a module imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imports {
    /// Its imports beyond WASI (empty: any base runs it).
    Known(Vec<String>),
    /// Not read yet (the compile is under way).
    Pending,
    /// Not known (the compile failed): bases decide for themselves.
    Unknown,
}

impl CodeShop {
    /// A shop keeping code under `dir`, compiling with the engine a base
    /// with default settings has.
    pub fn open(dir: PathBuf) -> Result<Self, CodeError> {
        let failed = |reason: String| CodeError::Failed {
            digest: "-".into(),
            artifact: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
        let engine =
            berth_runtime::engine(&RuntimeConfig::new(&dir)).map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            tag: berth_runtime::engine_tag(&engine),
            engine,
            dir,
            http: reqwest::Client::new(),
            cells: Mutex::new(HashMap::new()),
            imports: Mutex::new(HashMap::new()),
        })
    }

    /// The engine tag of the code this shop makes.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Compiled code of `digest` (`sha256:…`) fetched from `artifact`, for
    /// an engine tagged `engine`.
    pub async fn code(
        &self,
        digest: &str,
        artifact: &str,
        engine: &str,
    ) -> Result<Vec<u8>, CodeError> {
        if engine != self.tag {
            return Err(CodeError::OtherEngine {
                asked: engine.into(),
                ours: self.tag.clone(),
            });
        }
        let cell = self
            .cells
            .lock()
            .expect("code cells")
            .entry(digest.to_string())
            .or_default()
            .clone();
        let compiled = cell
            .get_or_init(|| self.compile(digest.to_string(), artifact.to_string()))
            .await
            .clone();
        let read = match compiled {
            Ok(path) => tokio::fs::read(&path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            Err(reason) => Err(reason),
        };
        read.map_err(|reason| {
            // Unknown imports: bases decide (and report why they cannot run it).
            self.imports
                .lock()
                .expect("imports")
                .entry(digest.to_owned())
                .or_insert(None);
            // Let a later ask try again (the artifact may be fixed).
            self.cells.lock().expect("code cells").remove(digest);
            CodeError::Failed {
                digest: digest.into(),
                artifact: artifact.into(),
                reason,
            }
        })
    }

    /// The interfaces the module `digest` (`sha256:…`, fetched from
    /// `artifact`) imports beyond WASI; starts its compile if none ran yet.
    pub fn imports(self: &Arc<Self>, digest: &str, artifact: &str) -> Imports {
        match self.imports.lock().expect("imports").get(digest) {
            Some(Some(known)) => return Imports::Known(known.clone()),
            Some(None) => return Imports::Unknown,
            None => {}
        }
        let cell = self.cells.lock().expect("code cells").get(digest).cloned();
        match cell {
            None => {
                if tokio::runtime::Handle::try_current().is_ok() {
                    self.prepare(digest, artifact);
                    Imports::Pending
                } else {
                    Imports::Unknown
                }
            }
            Some(cell) => match cell.get() {
                None => Imports::Pending,
                // Compiled, but its imports were lost: unknown.
                Some(_) => Imports::Unknown,
            },
        }
    }

    /// Starts compiling `digest` in the background, so that it is ready when
    /// bases ask.
    pub fn prepare(self: &Arc<Self>, digest: &str, artifact: &str) {
        let (shop, digest, artifact) = (self.clone(), digest.to_string(), artifact.to_string());
        let tag = self.tag.clone();
        tokio::spawn(async move {
            if let Err(e) = shop.code(&digest, &artifact, &tag).await {
                tracing::warn!(error = %e, "cannot precompile for the bases; they will compile it themselves");
            }
        });
    }

    async fn compile(&self, digest: String, artifact: String) -> Compiled {
        let wanted: Digest = digest.parse().map_err(|e| format!("{e}"))?;
        let path = self
            .dir
            .join(format!("{}-{}.cwasm", wanted.hex(), self.tag));
        let imports_path = path.with_extension("imports");
        if tokio::fs::try_exists(&path).await.unwrap_or(false)
            && let Ok(text) = tokio::fs::read_to_string(&imports_path).await
        {
            self.record_imports(&digest, text.lines().map(str::to_owned).collect());
            return Ok(path);
        }
        let bytes = self.fetch(&artifact).await?;
        let got = Digest::of(&bytes);
        if got != wanted {
            return Err(format!("the artifact's digest is {got}, not {wanted}"));
        }
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let (code, imports) =
            tokio::task::spawn_blocking(move || berth_runtime::compile_for_fleet(&engine, &bytes))
                .await
                .map_err(|e| format!("the compile panicked: {e}"))?
                .map_err(|e| format!("{e:#}"))?;
        tracing::info!(%digest, ms = started.elapsed().as_millis() as u64, bytes = code.len(), "compiled for the bases");
        // Written whole, then renamed into place: a reader never sees half.
        let tmp = path.with_extension("tmp");
        let stored = async {
            tokio::fs::write(&tmp, &code).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        stored
            .await
            .map_err(|e| format!("cannot store the code at {}: {e}", path.display()))?;
        if let Err(e) = tokio::fs::write(&imports_path, imports.join("\n")).await {
            tracing::warn!(error = %e, path = %imports_path.display(), "cannot keep the module's imports");
        }
        self.record_imports(&digest, imports);
        Ok(path)
    }

    fn record_imports(&self, digest: &str, imports: Vec<String>) {
        let imports = imports.into_iter().filter(|i| !i.is_empty()).collect();
        self.imports
            .lock()
            .expect("imports")
            .insert(digest.to_owned(), Some(imports));
    }

    async fn fetch(&self, artifact: &str) -> Result<Vec<u8>, String> {
        if let Some(path) = artifact.strip_prefix("file:") {
            let path = format!("/{}", path.trim_start_matches('/'));
            return tokio::fs::read(&path)
                .await
                .map_err(|e| format!("cannot read {path}: {e}"));
        }
        let response = self
            .http
            .get(artifact)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot download it: {e}"))?;
        if response.content_length().unwrap_or(0) > MAX_ARTIFACT as u64 {
            return Err(format!("it is larger than {MAX_ARTIFACT} bytes"));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("cannot download it: {e}"))?;
        if bytes.len() > MAX_ARTIFACT {
            return Err(format!("it is larger than {MAX_ARTIFACT} bytes"));
        }
        Ok(bytes.to_vec())
    }
}
