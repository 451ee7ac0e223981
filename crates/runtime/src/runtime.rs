//! [`Runtime`]: the engine, the linker and the cache, shared by every module.

use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::HTTP_HANDLER_EXPORT;
use crate::artifact::{Digest, check_header};
use crate::cache::{CacheOutcome, ModuleCache};
use crate::capability::Capabilities;
use crate::config::RuntimeConfig;
use crate::error::LoadError;
use crate::host::HostState;
use crate::interfaces::{ConfigCapability, KvCapability, LogCapability};
use crate::kv::{KvBackend, KvStore};
use crate::module::{LoadedModule, ModuleEnv};
use crate::pool::{InstanceCount, PoolStats};
use crate::ticker::EpochTicker;

/// One wasmtime engine with its linker and module cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ModuleCache,
    config: RuntimeConfig,
    ticker: Arc<EpochTicker>,
    instances: Arc<InstanceCount>,
    kv: KvStore,
    capabilities: Capabilities,
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption), links the
    /// WASI 0.2 and `wasi:http` interfaces, and opens the module cache.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine = engine(&config)?;
        let kv = KvStore::open(&config.kv_path)?;
        // The built-ins first; the base's own replace them by name.
        let capabilities =
            builtin_capabilities(Some(Arc::new(kv.clone()))).extended_by(&config.capabilities);
        let linker = host_linker(&engine, &capabilities)?;

        let cache = ModuleCache::open(&config.cache_dir, &engine)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                config,
                ticker,
                instances: Arc::default(),
                kv,
                capabilities,
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The module cache.
    pub fn cache(&self) -> &ModuleCache {
        &self.inner.cache
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// What the instance pool keeps now, and the most it may keep resident
    /// (`None` without the pooling allocator); see [`crate::pool`].
    pub fn pool_stats(&self) -> Option<PoolStats> {
        crate::pool::stats(
            &self.inner.engine,
            &self.inner.config,
            &self.inner.instances,
        )
    }

    /// Every capability modules of this runtime may import.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// Every WIT interface (with its version) the capabilities of this
    /// runtime offer modules, beyond WASI 0.2 and `wasi:http`, sorted.
    pub fn interfaces(&self) -> Vec<String> {
        self.inner.capabilities.interfaces()
    }

    /// The redb store behind the built-in `berth:base/kv` (unless a
    /// capability replaced it).
    pub fn kv(&self) -> &KvStore {
        &self.inner.kv
    }

    /// Turns the artifact `digest` into a module ready to serve.
    ///
    /// Precompiled code is mapped from the cache when present; otherwise
    /// `bytes` (or, when `None`, the cached artifact) is checked, compiled and
    /// the result cached. The caller must have checked that `bytes` hash to
    /// `digest`. Compilation is CPU-heavy and blocking: call this from
    /// `spawn_blocking`, never from a request task.
    pub fn load(
        &self,
        digest: Digest,
        bytes: Option<&[u8]>,
    ) -> Result<(LoadedModule, CacheOutcome), LoadError> {
        let cache = &self.inner.cache;
        let (component, outcome) = match self.load_precompiled(&digest) {
            Some(component) => (component, CacheOutcome::Hit),
            None => {
                let owned;
                let bytes = match bytes {
                    Some(bytes) => bytes,
                    None => {
                        owned = cache.read_artifact(&digest)?;
                        &owned
                    }
                };
                check_header(bytes)?;
                let component =
                    Component::new(&self.inner.engine, bytes).map_err(|e| LoadError::Invalid {
                        reason: format!("{e:#}"),
                    })?;
                (component, CacheOutcome::Miss)
            }
        };

        let pre = link(&self.inner.linker, &component)?;

        if let Some(bytes) = bytes {
            cache.store_artifact(&digest, bytes)?;
        }
        if outcome == CacheOutcome::Miss {
            let code = component.serialize().map_err(|e| LoadError::Invalid {
                reason: format!("cannot serialize compiled code: {e:#}"),
            })?;
            cache.store_compiled(&digest, &code)?;
        }
        let env = ModuleEnv {
            engine: self.inner.engine.clone(),
            capabilities: self.inner.capabilities.clone(),
            limits: self.inner.config.limits,
            instances: self.inner.instances.clone(),
            _ticker: self.inner.ticker.clone(),
        };
        Ok((LoadedModule::new(env, digest, pre)?, outcome))
    }

    /// Compiles `bytes` (of `digest`) into the cache without loading a
    /// module, unless code for it is there already: what a buffer base does
    /// ahead of a scale-out, so that the install that follows is a cache
    /// hit. The caller must have checked that `bytes` hash to `digest`.
    /// CPU-heavy and blocking, like [`Runtime::load`].
    pub fn precompile(&self, digest: Digest, bytes: &[u8]) -> Result<CacheOutcome, LoadError> {
        let cache = &self.inner.cache;
        if cache.has_compiled(&digest) {
            return Ok(CacheOutcome::Hit);
        }
        check_header(bytes)?;
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| LoadError::Invalid {
                reason: format!("{e:#}"),
            })?;
        let code = component.serialize().map_err(|e| LoadError::Invalid {
            reason: format!("cannot serialize compiled code: {e:#}"),
        })?;
        cache.store_artifact(&digest, bytes)?;
        cache.store_compiled(&digest, &code)?;
        Ok(CacheOutcome::Miss)
    }

    /// Maps cached code for `digest`, or `None` if absent or unusable.
    fn load_precompiled(&self, digest: &Digest) -> Option<Component> {
        let path = self.inner.cache.compiled_path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `ModuleCache::store_compiled` from
        // `Component::serialize` of this same engine configuration (the engine
        // tag is part of its name), renamed into place only once complete, and
        // is never modified afterwards; wasmtime additionally checks its
        // header and compatibility before use.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(&self.inner.engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable precompiled module");
                self.inner.cache.evict_compiled(digest);
                None
            }
        }
    }
}

/// The wasmtime engine of a runtime with `config`: epoch interruption and
/// (by default) the pooling allocator. Code compiled by one engine built
/// from the same settings loads in another — which is what lets a
/// controller compile a module once for all its bases
/// ([`Engine::precompile_component`], [`ModuleCache::store_compiled`]).
pub fn engine(config: &RuntimeConfig) -> Result<Engine, LoadError> {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    if config.pooling {
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(
            crate::pool::pooling_config(config),
        ));
    }
    Engine::new(&wasm).map_err(|e| LoadError::Invalid {
        reason: format!("cannot create the wasmtime engine: {e:#}"),
    })
}

/// The linker with every host interface a module may import: WASI 0.2,
/// `wasi:http`, and each capability's (its *init*).
fn host_linker(
    engine: &Engine,
    capabilities: &Capabilities,
) -> Result<Linker<HostState>, LoadError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .map_err(|e| LoadError::Invalid {
            reason: format!("cannot link the WASI interfaces: {e:#}"),
        })?;
    for c in capabilities.iter() {
        c.init(&mut linker).map_err(|e| LoadError::Invalid {
            reason: format!("capability {} cannot add its interfaces: {e:#}", c.name()),
        })?;
    }
    Ok(linker)
}

/// Checks the exports and resolves the imports of `component`.
fn link(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<ProxyPre<HostState>, LoadError> {
    let engine = linker.engine();
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let http_export = format!("{HTTP_HANDLER_EXPORT}@0.2");
    if !exports.iter().any(|name| name.starts_with(&http_export)) {
        return Err(LoadError::MissingHttpExport {
            exports: if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            },
        });
    }
    let instance_pre = linker.instantiate_pre(component).map_err(|e| {
        let reason = format!("{e:#}");
        LoadError::UnsupportedImport {
            import: first_quoted(&reason).unwrap_or("an interface").to_string(),
            reason,
        }
    })?;
    ProxyPre::new(instance_pre).map_err(|e| LoadError::MissingHttpExport {
        exports: format!("{} ({e:#})", exports.join(", ")),
    })
}

/// Checks that `bytes` are a module a base would install — a component
/// exporting `wasi:http/incoming-handler` whose imports a base provides —
/// without a base: compiles it in a throwaway engine (what `berth build`
/// runs before it reports success).
pub fn validate(bytes: &[u8]) -> Result<(), LoadError> {
    check_header(bytes)?;
    let engine = Engine::default();
    let component = Component::new(&engine, bytes).map_err(|e| LoadError::Invalid {
        reason: format!("{e:#}"),
    })?;
    link(
        &host_linker(&engine, &builtin_capabilities(None))?,
        &component,
    )
    .map(drop)
}

/// Compiles `bytes` with `engine` for bases of the same engine settings:
/// the compiled code (what [`Engine::precompile_component`] makes) and the
/// interfaces the component imports beyond WASI 0.2 and `wasi:http`
/// (`berth:base/kv@0.1.0`, …), which a base must offer to run it. One
/// compile gives both; the controller places the module by the second.
pub fn compile_for_fleet(
    engine: &Engine,
    bytes: &[u8],
) -> Result<(Vec<u8>, Vec<String>), LoadError> {
    check_header(bytes)?;
    let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
        reason: format!("{e:#}"),
    })?;
    let mut imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .filter(|name| !name.starts_with("wasi:"))
        .collect();
    imports.sort();
    let code = component.serialize().map_err(|e| LoadError::Invalid {
        reason: format!("cannot serialize compiled code: {e:#}"),
    })?;
    Ok((code, imports))
}

/// `berth:base` config, kv (over `kv`) and log.
fn builtin_capabilities(kv: Option<Arc<dyn KvBackend>>) -> Capabilities {
    Capabilities::new()
        .with(ConfigCapability)
        .with(KvCapability::from_backend(kv))
        .with(LogCapability)
}

/// The first `backquoted` name in a wasmtime message (the missing import).
fn first_quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}
