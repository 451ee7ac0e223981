//! The berth runtime: compiles, caches, instantiates and limits modules.
//!
//! A base owns one [`Runtime`]: one wasmtime [`Engine`]
//! with the pooling allocator, one [`Linker`](wasmtime::component::Linker)
//! with the WASI 0.2 and `wasi:http` host interfaces, and one on-disk
//! [`ModuleCache`] holding every artifact by sha256 digest beside its
//! precompiled code. [`Runtime::load`] turns artifact bytes into a
//! [`LoadedModule`] (an `InstancePre` of the `wasi:http/proxy` world);
//! [`LoadedModule::handle`] serves one HTTP request in a fresh instance with
//! its own `Store` and the limits and grants of its [`ModuleSettings`] (or,
//! for a module that opts into [`InstancePolicy::Pooled`], a warm one);
//! [`pool`] is how freed instance memory is reset and what stays resident,
//! and each version's CPU time is measured and held to its share
//! ([`Limits::cpu_millis`]). The
//! instance sees WASI 0.2, `wasi:http` (outgoing calls go through the
//! allow-list or, for `http://NAME.berth/`, a [`ModuleCaller`]) and the
//! `berth:base` interfaces (config, kv, log; `wit/base.wit`) — each a
//! [`Capability`] plug-in, like those a base team adds through
//! [`RuntimeConfig::capabilities`]; its stdout and stderr go to a
//! [`LogSink`].
//!
//! Code comes in two tiers ([`Tiers`]): a module whose code is not cached
//! serves first on Winch's (a second engine, compiled in a fraction of
//! Cranelift's time) while Cranelift compiles it in the background; the
//! optimized code then takes over atomically ([`LoadedModule::tier`]). The
//! Cranelift trampolines beside Winch's code compile once per shape
//! ([`trampolines`]).
//!
//! The runtime knows nothing about routes, names or versions: that is the
//! base's business. It answers "is this a valid module, and run it".

mod artifact;
mod body;
mod cache;
pub mod capability;
mod config;
mod cpu;
mod error;
mod extensions;
pub mod failpoint;
mod host;
mod hugepages;
mod instances;
mod interfaces;
mod kv;
mod logs;
mod module;
mod outgoing;
pub mod pool;
mod runtime;
mod settings;
pub mod signature;
mod ticker;
mod tier;
mod trace;
pub mod trampolines;

pub use artifact::{Digest, ParseDigestError};
pub use async_trait::async_trait;
pub use body::{ResponseBody, full_body};
pub use cache::{CacheOutcome, ModuleCache, engine_tag};
pub use capability::{AnyCapability, Capabilities, Capability, InstanceContext};
pub use config::RuntimeConfig;
pub use error::{HandleError, LoadError};
pub use host::HostState;
pub use interfaces::{
    BASE_WIT_VERSION, ConfigCapability, ConfigData, KvCapability, KvData, LogCapability, LogData,
};
pub use kv::{KvBackend, KvError, KvStore};
pub use logs::{LogLine, LogSink, LogSource};
pub use module::LoadedModule;
pub use outgoing::{BoxResponse, CallContext, ModuleCaller};
pub use pool::PoolStats;
pub use runtime::{Runtime, compile_for_fleet, engine, validate};
pub use settings::{InstancePolicy, Limits, MAX_HOPS, ModuleSettings};
pub use signature::{SignatureError, TrustKeys};
pub use tier::{ExpectedCode, ParseTiersError, Tier, TierUpGate, Tiers};
pub use trace::{TRACEPARENT, TraceParent};
pub use trampolines::TrampolineCache;
pub use wasmtime::{self, Engine};
pub use wasmtime_wasi_http::WasiBody;

/// The `wasi:http` export every berth module must have.
pub const HTTP_HANDLER_EXPORT: &str = "wasi:http/incoming-handler";
