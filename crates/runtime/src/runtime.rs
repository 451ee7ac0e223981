//! [`Runtime`]: the engine, the linker and the cache, shared by every module.

use std::sync::Arc;

use bytes::Bytes;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, Strategy};
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
use crate::tier::{Code, ExpectedCode, Job, Optimizer, Save, Tier, TieredCode, Tiers};
use crate::trampolines::TrampolineCache;

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
    /// The Winch tier, unless the runtime compiles with Cranelift only.
    baseline: Option<Baseline>,
}

/// The baseline tier: a Winch engine with its own linker (and the shared
/// ticker), and the thread that moves its modules up to Cranelift code.
struct Baseline {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Arc<EpochTicker>,
    optimizer: Optimizer,
}

/// What compiling a module with Cranelift needs (shared with the optimizer
/// thread). It holds no capability state (e.g. the kv database): a base
/// that shuts down while the optimizer still compiles can start again on
/// the same data directory at once.
#[derive(Clone)]
struct Optimizing {
    engine: Engine,
    ticker: Arc<EpochTicker>,
    linker: Linker<HostState>,
    cache: ModuleCache,
}

impl Optimizing {
    /// Compiles `bytes` with Cranelift, links it and caches the code, which
    /// then runs with `env` (capabilities and limits) on the Cranelift
    /// engine. Code already in the cache (e.g. a controller's, stored while
    /// the module served on Winch code) is mapped instead.
    fn compile(
        &self,
        digest: Digest,
        bytes: &[u8],
        env: impl FnOnce() -> Option<ModuleEnv>,
    ) -> Result<Option<Code>, LoadError> {
        let component = match load_precompiled(&self.cache, &self.engine, &digest, Tier::Cranelift)
        {
            Some(component) => component,
            None => {
                let component = compile(&self.engine, bytes)?;
                store_code(&self.cache, &digest, Tier::Cranelift, &component)?;
                component
            }
        };
        let pre = link(&self.linker, &component)?;
        Ok(env().map(|env| Code {
            env: ModuleEnv {
                engine: self.engine.clone(),
                _ticker: self.ticker.clone(),
                ..env
            },
            pre,
            tier: Tier::Cranelift,
        }))
    }
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

        let winch = config
            .tiers
            .uses_winch()
            .then(|| engine_for(&config, Strategy::Winch))
            .transpose()?;
        // One ticker thread for both engines: each tick is one wake-up that
        // preempts whatever runs on its core, so two tickers cost twice that.
        let ticker = Arc::new(EpochTicker::start(
            std::iter::once(engine.clone())
                .chain(winch.clone())
                .collect(),
        ));
        let (baseline, cache) = match winch {
            None => (None, ModuleCache::open(&config.cache_dir, &engine)?),
            Some(winch) => {
                let cache = ModuleCache::open(&config.cache_dir, &engine)?.with_baseline(&winch);
                let optimizing = Optimizing {
                    engine: engine.clone(),
                    ticker: ticker.clone(),
                    linker: linker.clone(),
                    cache: cache.clone(),
                };
                let baseline = Baseline {
                    linker: host_linker(&winch, &capabilities)?,
                    ticker: ticker.clone(),
                    engine: winch,
                    optimizer: Optimizer::start(
                        Arc::new(
                            move |digest, bytes: &[u8], env: &dyn Fn() -> Option<ModuleEnv>| {
                                optimizing.compile(digest, bytes, env)
                            },
                        ),
                        config.tier_up_gate.clone(),
                    ),
                };
                (Some(baseline), cache)
            }
        };
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
                baseline,
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
    /// (`None` without the pooling allocator); see [`crate::pool`]. With
    /// tiers, the Winch engine has a pool of its own: both are counted.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        let stats = |engine| crate::pool::stats(engine, &self.inner.config, &self.inner.instances);
        let optimized = stats(&self.inner.engine)?;
        Some(match &self.inner.baseline {
            // Modules on Winch code run in the Winch engine's own pool.
            Some(baseline) => optimized.plus(stats(&baseline.engine)?),
            None => optimized,
        })
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
    /// Cranelift code from the cache is mapped when present. Otherwise
    /// `bytes` (or, when `None`, the cached artifact) is checked and, with
    /// [`Tiers::WinchThenCranelift`], compiled with Winch (or mapped from the
    /// cache's Winch code): the module serves at once, and a background
    /// thread compiles it with Cranelift and swaps the optimized code in. A
    /// module Winch cannot compile, or a runtime with
    /// [`Tiers::CraneliftOnly`], is compiled with Cranelift before this
    /// returns. Every compiled tier is cached. The caller must have checked
    /// that `bytes` hash to `digest`. Compilation is CPU-heavy and blocking:
    /// call this from `spawn_blocking`, never from a request task.
    ///
    /// `bytes` is shared, not copied: the background Cranelift compile keeps
    /// a reference (a copy of an 18 MB artifact, into freshly faulted
    /// memory, cost a Winch install ~1% of its CPU, between Winch's code
    /// and the first request).
    pub fn load(
        &self,
        digest: Digest,
        bytes: Option<Bytes>,
    ) -> Result<(LoadedModule, CacheOutcome), LoadError> {
        let inner = &*self.inner;
        let cache = &inner.cache;
        // `winch` keeps a module on Winch code even when Cranelift's is cached.
        let optimized = match inner.config.tiers {
            Tiers::WinchOnly => None,
            _ => load_precompiled(cache, &inner.engine, &digest, Tier::Cranelift),
        };
        if let Some(component) = optimized {
            let pre = link(&inner.linker, &component)?;
            if let Some(bytes) = &bytes {
                cache.store_artifact(&digest, bytes)?;
            }
            let code = Code {
                env: self.env(),
                pre,
                tier: Tier::Cranelift,
            };
            return Ok((
                LoadedModule::new(TieredCode::new(digest, code))?,
                CacheOutcome::Hit,
            ));
        }
        // Winch code from the cache serves while Cranelift's is compiled
        // (from the artifact, when it is still there).
        if let Some(baseline) = &inner.baseline
            && let Some(component) = load_precompiled(cache, &baseline.engine, &digest, Tier::Winch)
        {
            let pre = link(&baseline.linker, &component)?;
            if let Some(bytes) = &bytes {
                cache.store_artifact(&digest, bytes)?;
            }
            let artifact = match bytes {
                Some(bytes) => Some(bytes),
                None => cache.read_artifact(&digest).ok().map(Bytes::from),
            };
            return Ok((
                self.on_winch(baseline, digest, pre, artifact, None)?,
                CacheOutcome::Hit,
            ));
        }
        let given = bytes.is_some();
        let shared = match bytes {
            Some(bytes) => bytes,
            None => Bytes::from(cache.read_artifact(&digest)?),
        };
        let bytes = &shared[..];
        check_header(bytes)?;
        if let Some(baseline) = &inner.baseline {
            let started = std::time::Instant::now();
            // The artifact is written (and synced) while Winch compiles.
            let (compiled, stored) = std::thread::scope(|s| {
                let stored = given.then(|| s.spawn(|| cache.store_artifact(&digest, bytes)));
                let compiled = self.compile_baseline(baseline, bytes);
                (compiled, stored.map(|t| t.join().expect("artifact writer")))
            });
            let compile_ms = started.elapsed().as_secs_f64() * 1e3;
            match compiled {
                Ok(component) => {
                    stored.transpose()?;
                    let pre = link(&baseline.linker, &component)?;
                    let save = save_later(cache, digest, Tier::Winch, component);
                    let module =
                        self.on_winch(baseline, digest, pre, Some(shared.clone()), Some(save))?;
                    tracing::debug!(
                        %digest,
                        bytes = bytes.len(),
                        compile_ms,
                        total_ms = started.elapsed().as_secs_f64() * 1e3,
                        "compiled with Winch (its code is cached in the background)"
                    );
                    return Ok((module, CacheOutcome::Miss));
                }
                Err(e) => tracing::warn!(
                    %digest,
                    error = %e,
                    "Winch cannot compile this module; compiling it with Cranelift before it serves"
                ),
            }
        }
        let code = std::thread::scope(|s| {
            let stored = given.then(|| s.spawn(|| cache.store_artifact(&digest, bytes)));
            let code = Optimizing {
                engine: inner.engine.clone(),
                ticker: inner.ticker.clone(),
                linker: inner.linker.clone(),
                cache: cache.clone(),
            }
            .compile(digest, bytes, || Some(self.env()));
            if let Some(stored) = stored {
                stored.join().expect("artifact writer")?;
            }
            code
        })?
        .expect("the environment is given");
        Ok((
            LoadedModule::new(TieredCode::new(digest, code))?,
            CacheOutcome::Miss,
        ))
    }

    /// What a module of the Cranelift tier runs with.
    fn env(&self) -> ModuleEnv {
        ModuleEnv {
            engine: self.inner.engine.clone(),
            capabilities: self.inner.capabilities.clone(),
            limits: self.inner.config.limits,
            instances: self.inner.instances.clone(),
            _ticker: self.inner.ticker.clone(),
        }
    }

    /// Compiles `bytes` (of `digest`) with Cranelift into the cache without
    /// loading a module, unless its optimized code is there already: what a
    /// buffer base does ahead of a scale-out, so that the install that
    /// follows is a cache hit on optimized code. The caller must have checked
    /// that `bytes` hash to `digest`. CPU-heavy and blocking, like
    /// [`Runtime::load`].
    pub fn precompile(&self, digest: Digest, bytes: &[u8]) -> Result<CacheOutcome, LoadError> {
        let cache = &self.inner.cache;
        if cache.has_compiled(&digest) {
            return Ok(CacheOutcome::Hit);
        }
        check_header(bytes)?;
        let component = compile(&self.inner.engine, bytes)?;
        cache.store_artifact(&digest, bytes)?;
        store_code(cache, &digest, Tier::Cranelift, &component)?;
        Ok(CacheOutcome::Miss)
    }

    /// Marks the optimized code of `digest` as coming from elsewhere (a
    /// controller) until the handle is dropped: modules of that digest serve
    /// on their Winch code meanwhile instead of having Cranelift compile
    /// them here; once the handle is dropped, each maps the optimized code
    /// from the cache if it was stored (see [`ModuleCache::store_compiled`]),
    /// else compiles it. `None` on a runtime that does not tier up (its
    /// installs compile with Cranelift, or map cached code, themselves; or,
    /// with [`Tiers::WinchOnly`], stay on Winch code).
    pub fn expect_code(&self, digest: Digest) -> Option<ExpectedCode> {
        self.inner
            .baseline
            .as_ref()
            .filter(|_| self.inner.config.tiers.tiers_up())
            .map(|baseline| baseline.optimizer.expect(digest))
    }

    /// How many modules serve on Winch code while they wait for optimized
    /// code from elsewhere ([`Runtime::expect_code`]).
    pub fn awaiting_code(&self) -> usize {
        self.inner
            .baseline
            .as_ref()
            .map_or(0, |baseline| baseline.optimizer.awaiting())
    }

    /// A module on Winch code `pre`, queued for Cranelift's (compiled from
    /// `artifact`; without it, the module stays on Winch code); `save`
    /// writes the Winch code to the cache, in the background.
    fn on_winch(
        &self,
        baseline: &Baseline,
        digest: Digest,
        pre: ProxyPre<HostState>,
        artifact: Option<Bytes>,
        save: Option<Save>,
    ) -> Result<LoadedModule, LoadError> {
        let code = TieredCode::new(
            digest,
            Code {
                env: ModuleEnv {
                    engine: baseline.engine.clone(),
                    _ticker: baseline.ticker.clone(),
                    ..self.env()
                },
                pre,
                tier: Tier::Winch,
            },
        );
        match artifact {
            // `winch`: the module stays on this code; only it is cached.
            _ if !self.inner.config.tiers.tiers_up() => {
                if let Some(save) = save {
                    save();
                }
            }
            Some(bytes) => baseline.optimizer.queue(Job {
                target: Arc::downgrade(&code),
                bytes,
                unsaved: save,
            }),
            None => {
                if let Some(save) = save {
                    save();
                }
                tracing::warn!(
                    %digest,
                    "the artifact is not in the cache: the module stays on Winch code until it is installed again"
                )
            }
        }
        LoadedModule::new(code)
    }

    /// Compiles `bytes` with Winch (the caller caches the code).
    fn compile_baseline(&self, baseline: &Baseline, bytes: &[u8]) -> Result<Component, LoadError> {
        if self.inner.config.force_winch_failure {
            return Err(LoadError::Invalid {
                reason: "Winch compilation failed on purpose (force_winch_failure is set)".into(),
            });
        }
        compile(&baseline.engine, bytes)
    }
}

/// Writes `component`'s `tier` code into the cache when called (by the
/// optimizer thread, after the install returned); a failure is logged: the
/// module then compiles again after a restart.
fn save_later(cache: &ModuleCache, digest: Digest, tier: Tier, component: Component) -> Save {
    let cache = cache.clone();
    Box::new(move || {
        let started = std::time::Instant::now();
        match store_code(&cache, &digest, tier, &component) {
            Ok(()) => tracing::debug!(
                %digest,
                %tier,
                store_ms = started.elapsed().as_secs_f64() * 1e3,
                "code written to the cache"
            ),
            Err(e) => tracing::warn!(%digest, %tier, error = %e, "cannot cache compiled code"),
        }
    })
}

/// Compiles `bytes` with `engine`: every compile of the runtime goes
/// through here, with transparent huge pages off while it runs
/// ([`crate::hugepages`]).
fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    let _small_pages = crate::hugepages::small_pages();
    Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
        reason: format!("{e:#}"),
    })
}

/// Maps cached `tier` code for `digest`, or `None` if absent or unusable.
fn load_precompiled(
    cache: &ModuleCache,
    engine: &Engine,
    digest: &Digest,
    tier: Tier,
) -> Option<Component> {
    let path = cache.compiled_path_of(digest, tier)?;
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `ModuleCache::store_compiled` from
    // `Component::serialize` of this same engine configuration (the tier and
    // engine tag are part of its name), renamed into place only once
    // complete, and is never modified afterwards; wasmtime additionally
    // checks its header and compatibility before use.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize_file(engine, &path) };
    match loaded {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "discarding unusable precompiled module");
            cache.evict_compiled(digest, tier);
            None
        }
    }
}

/// Serializes `component`'s `tier` code into the cache.
fn store_code(
    cache: &ModuleCache,
    digest: &Digest,
    tier: Tier,
    component: &Component,
) -> Result<(), LoadError> {
    let code = component.serialize().map_err(|e| LoadError::Invalid {
        reason: format!("cannot serialize compiled code: {e:#}"),
    })?;
    cache.store_compiled_tier(digest, tier, &code)
}

/// A Winch engine with wasmtime's defaults (what `validate` compiles with).
fn baseline_engine() -> Result<Engine, LoadError> {
    let mut wasm = Config::new();
    wasm.strategy(Strategy::Winch);
    share_trampolines(&mut wasm)?;
    Engine::new(&wasm).map_err(|e| LoadError::Invalid {
        reason: format!("cannot create the Winch engine: {e:#}"),
    })
}

/// Settings of every Winch engine for the trampolines wasmtime compiles
/// with Cranelift beside Winch's code: at opt-level none, through the
/// process's [`TrampolineCache`] (one compile per shape).
fn share_trampolines(wasm: &mut Config) -> Result<(), LoadError> {
    // They are a few instructions each, so optimizing them buys nothing
    // and cost ~30% of a Winch install (bench/README.md, cold install).
    wasm.cranelift_opt_level(OptLevel::None);
    wasm.enable_incremental_compilation(TrampolineCache::shared())
        .map_err(|e| LoadError::Invalid {
            reason: format!("cannot share the Winch engine's trampolines: {e:#}"),
        })?;
    Ok(())
}

/// The wasmtime engine of a runtime with `config`: epoch interruption and
/// (by default) the pooling allocator. Code compiled by one engine built
/// from the same settings loads in another — which is what lets a
/// controller compile a module once for all its bases
/// ([`Engine::precompile_component`], [`ModuleCache::store_compiled`]).
pub fn engine(config: &RuntimeConfig) -> Result<Engine, LoadError> {
    engine_for(config, Strategy::Cranelift)
}

/// The engine of `config` compiling with `strategy`: both tiers share every
/// setting but the compiler, so limits and memory behave the same on both.
fn engine_for(config: &RuntimeConfig, strategy: Strategy) -> Result<Engine, LoadError> {
    let mut wasm = Config::new();
    wasm.strategy(strategy);
    if strategy == Strategy::Winch {
        // Winch compiles a module's functions; Cranelift still compiles the
        // trampolines between host and wasm (one per function that escapes:
        // thousands in an interpreter like CPython or StarlingMonkey).
        share_trampolines(&mut wasm)?;
    }
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
/// runs before it reports success). The engine is Winch's, which compiles
/// an 18 MB Python module in a fraction of Cranelift's time; a component
/// Winch cannot compile is checked with Cranelift.
pub fn validate(bytes: &[u8]) -> Result<(), LoadError> {
    check_header(bytes)?;
    let compiled = baseline_engine()
        .and_then(|engine| compile(&engine, bytes).map(|component| (engine, component)));
    let (engine, component) = match compiled {
        Ok(compiled) => compiled,
        Err(_) => {
            let engine = Engine::default();
            let component = compile(&engine, bytes)?;
            (engine, component)
        }
    };
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
    let component = compile(engine, bytes)?;
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
