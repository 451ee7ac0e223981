//! The on-disk module cache: artifacts by digest, and their precompiled code.
//!
//! Layout under the cache directory:
//!
//! ```text
//! artifacts/<sha256 hex>.wasm                        the bytes as installed
//! compiled/<sha256 hex>-<tier>-<engine tag>.cwasm    wasmtime's serialized code
//! ```
//!
//! `<tier>` is `cranelift` (optimized) or `winch` (baseline, see
//! [`crate::Tiers`]); each tier has its own engine, and the engine tag hashes
//! [`Engine::precompile_compatibility_hash`], so code compiled by another
//! wasmtime version or with other settings is never loaded: it simply misses
//! and is compiled again. Precompiled files are
//! loaded with `mmap` ([`Component::deserialize_file`]), which is why a warm
//! install or a base restart costs milliseconds, not a Cranelift run.
//! Every write goes to a temporary file first and is renamed into place, so a
//! crash mid-write never leaves a truncated entry behind.
//!
//! [`Component::deserialize_file`]: wasmtime::component::Component::deserialize_file

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;

use crate::artifact::Digest;
use crate::error::LoadError;
use crate::tier::Tier;

/// Whether a load found precompiled code in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Precompiled code was mapped from the cache.
    Hit,
    /// The component was compiled (and the result stored).
    Miss,
}

/// Artifacts and precompiled code on disk, content-addressed.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    root: PathBuf,
    engine_tag: String,
    /// The tag of the Winch engine, when the runtime has that tier.
    baseline_tag: Option<String>,
}

impl ModuleCache {
    /// Opens (creating if needed) the cache at `root` for code of `engine`.
    pub fn open(root: impl Into<PathBuf>, engine: &Engine) -> Result<Self, LoadError> {
        let root = root.into();
        for dir in ["artifacts", "compiled"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|source| io_err(&path, source))?;
        }
        Ok(Self {
            root,
            engine_tag: engine_tag(engine),
            baseline_tag: None,
        })
    }

    /// The same cache, also keeping Winch code compiled by `winch`.
    pub(crate) fn with_baseline(mut self, winch: &Engine) -> Self {
        self.baseline_tag = Some(engine_tag(winch));
        self
    }

    /// Where the bytes of `digest` live.
    pub fn artifact_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("artifacts")
            .join(format!("{}.wasm", digest.hex()))
    }

    /// Where the optimized (Cranelift) code of `digest` for this engine lives.
    pub fn compiled_path(&self, digest: &Digest) -> PathBuf {
        self.tier_path(digest, Tier::Cranelift, &self.engine_tag)
    }

    /// Where the `tier` code of `digest` lives, if this cache keeps that tier.
    pub fn compiled_path_of(&self, digest: &Digest, tier: Tier) -> Option<PathBuf> {
        match tier {
            Tier::Cranelift => Some(self.compiled_path(digest)),
            Tier::Winch => self
                .baseline_tag
                .as_ref()
                .map(|tag| self.tier_path(digest, Tier::Winch, tag)),
        }
    }

    fn tier_path(&self, digest: &Digest, tier: Tier, tag: &str) -> PathBuf {
        self.root
            .join("compiled")
            .join(format!("{}-{tier}-{tag}.cwasm", digest.hex()))
    }

    /// Reads the stored bytes of `digest`.
    pub fn read_artifact(&self, digest: &Digest) -> Result<Vec<u8>, LoadError> {
        let path = self.artifact_path(digest);
        std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LoadError::ArtifactMissing {
                    digest: digest.to_string(),
                    path: path.display().to_string(),
                }
            } else {
                io_err(&path, source)
            }
        })
    }

    /// Stores the bytes of `digest` unless they are already there.
    pub fn store_artifact(&self, digest: &Digest, bytes: &[u8]) -> Result<(), LoadError> {
        write_atomically(&self.artifact_path(digest), bytes)
    }

    /// Names the engine settings this cache's optimized code is for: code is
    /// shared only between engines with the same tag.
    pub fn engine_tag(&self) -> &str {
        &self.engine_tag
    }

    /// Whether optimized code for `digest` is stored.
    pub fn has_compiled(&self, digest: &Digest) -> bool {
        self.compiled_path(digest).exists()
    }

    /// Stores optimized code for `digest` — compiled here, or by another
    /// engine with the same [`ModuleCache::engine_tag`] (a controller).
    /// Code that this engine then refuses to load is evicted and the module
    /// compiled from its artifact instead.
    pub fn store_compiled(&self, digest: &Digest, code: &[u8]) -> Result<(), LoadError> {
        write_atomically(&self.compiled_path(digest), code)
    }

    /// Stores `tier` code for `digest` (nothing if this cache keeps no
    /// code of that tier).
    pub(crate) fn store_compiled_tier(
        &self,
        digest: &Digest,
        tier: Tier,
        code: &[u8],
    ) -> Result<(), LoadError> {
        match self.compiled_path_of(digest, tier) {
            Some(path) => write_atomically(&path, code),
            None => Ok(()),
        }
    }

    /// Drops a precompiled entry that failed to load (e.g. a truncated file).
    pub(crate) fn evict_compiled(&self, digest: &Digest, tier: Tier) {
        if let Some(path) = self.compiled_path_of(digest, tier) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The tag of `engine`'s code-generation settings (a hash of
/// [`Engine::precompile_compatibility_hash`]).
pub fn engine_tag(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn io_err(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Cache {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().expect("cache paths have a parent");
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err(dir, e))?;
    file.write_all(bytes).map_err(|e| io_err(file.path(), e))?;
    file.as_file().sync_data().map_err(|e| io_err(path, e))?;
    file.persist(path).map_err(|e| io_err(path, e.error))?;
    Ok(())
}
