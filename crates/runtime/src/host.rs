//! The per-request store data: what host interfaces see of one instance.
//!
//! Each request gets a fresh [`HostState`] in its own `Store`: its own
//! resource table, a WASI context with no filesystem, no environment and no
//! arguments (stdout/stderr go to the base's), and the memory limits the
//! `Store`'s resource limiter enforces.

use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Store data of one module instance.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) started: Instant,
    pub(crate) timeout: Duration,
}

impl HostState {
    pub(crate) fn new(max_memory_bytes: usize, timeout: Duration) -> Self {
        Self {
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .build(),
            started: Instant::now(),
            timeout,
        }
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
            hooks: Default::default(),
        }
    }
}
