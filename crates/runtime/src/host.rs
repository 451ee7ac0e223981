//! The per-request store data: what host interfaces see of one instance.
//!
//! Each request gets a fresh [`HostState`] in its own `Store`: its own
//! resource table, a WASI context with no filesystem, no environment and no
//! arguments (stdout/stderr go to the base's), the memory limiter, the
//! outgoing-HTTP policy ([`crate::outgoing`]), the module's settings, and
//! each capability's per-instance data ([`crate::capability`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::extensions::Extensions;
use crate::logs::{GuestOutput, LogSink, LogSource};
use crate::outgoing::{CallContext, OutgoingPolicy};
use crate::settings::ModuleSettings;

/// Store data of one module instance.
pub struct HostState {
    wasi: WasiCtx,
    outputs: [GuestOutput; 2],
    http: WasiHttpCtx,
    table: ResourceTable,
    outgoing: OutgoingPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) started: Instant,
    pub(crate) timeout: Duration,
    extensions: Extensions,
}

impl HostState {
    /// The store data of one instance; `extensions` are its capabilities'
    /// prepared data, `request_id` tags its output lines.
    pub(crate) fn new(
        settings: Arc<ModuleSettings>,
        extensions: Extensions,
        context: CallContext,
        memory_in_use: Arc<AtomicU64>,
        log_sink: Option<Arc<dyn LogSink>>,
        request_id: Option<String>,
    ) -> Self {
        let stdout = GuestOutput::new(LogSource::Stdout, log_sink.clone(), request_id.clone());
        let stderr = GuestOutput::new(LogSource::Stderr, log_sink, request_id);
        Self {
            wasi: WasiCtx::builder()
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .build(),
            outputs: [stdout, stderr],
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outgoing: OutgoingPolicy::new(settings.clone(), context),
            limiter: MemoryLimiter {
                max: settings.limits.max_memory_bytes,
                hit: false,
                held: 0,
                in_use: memory_in_use,
            },
            started: Instant::now(),
            timeout: settings.limits.timeout,
            extensions,
        }
    }

    /// Makes a warm (`pooled`) instance's data that of the next request:
    /// its context, its capabilities' data, its id on log lines, a new
    /// deadline clock. The previous request's partial output lines are
    /// handed over first.
    pub(crate) fn begin_request(
        &mut self,
        settings: Arc<ModuleSettings>,
        extensions: Extensions,
        context: CallContext,
        request_id: Option<String>,
    ) {
        for output in &self.outputs {
            output.finish();
            output.set_request_id(request_id.clone());
        }
        self.outgoing = OutgoingPolicy::new(settings, context);
        self.extensions = extensions;
        self.started = Instant::now();
    }

    /// This instance's data of the capability whose
    /// [`Capability::Instance`](crate::Capability::Instance) is `T`, for its
    /// host functions (the getter passed to its `add_to_linker`).
    ///
    /// # Panics
    ///
    /// If no capability of this runtime prepares a `T`: a host function
    /// linked by a capability that is not in the runtime's list.
    pub fn capability<T: 'static>(&mut self) -> &mut T {
        self.extensions.get_mut::<T>().unwrap_or_else(|| {
            panic!(
                "no capability prepared a {}; add its capability to RuntimeConfig::capabilities",
                std::any::type_name::<T>()
            )
        })
    }
}

/// Caps linear memory and remembers whether the cap was hit, so a trap
/// that follows (a Rust guest aborts when `memory.grow` fails) is reported
/// as what it is: the module ran out of its memory limit. It also keeps the
/// module's count of linear memory in use (all its live instances) current.
pub(crate) struct MemoryLimiter {
    max: usize,
    pub hit: bool,
    /// Bytes this instance's memories hold.
    held: u64,
    /// Bytes all live instances of the module hold.
    in_use: Arc<AtomicU64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        let grown = desired.saturating_sub(current) as u64;
        self.held += grown;
        self.in_use.fetch_add(grown, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        for output in &self.outputs {
            output.finish();
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}
