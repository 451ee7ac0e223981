//! [`LoadedModule`]: one installed artifact, ready to serve requests.
//!
//! Instance policy: **fresh**. Every request instantiates the module's
//! `InstancePre` into a new `Store`, runs the guest's
//! `wasi:http/incoming-handler`, and drops the store when the response body
//! is done. Nothing a request leaves in linear memory is seen by the next one,
//! a trap can only ever poison the instance it happened in, and the pooling
//! allocator's copy-on-write memory images keep instantiation in the
//! microseconds.
//!
//! Instance policy **pooled** (opt-in per version, [`InstancePolicy`]):
//! warm instances are reused one request at a time ([`crate::instances`]).
//!
//! Every poll of a request's guest is timed and charged to the version's
//! CPU account, which also enforces its CPU share ([`crate::cpu`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use tokio::sync::Semaphore;

use crate::artifact::Digest;
use crate::body::{Coalesced, ResponseBody, coalesce, full_body, unless_failed};
use crate::capability::{Capabilities, Configured, InstanceContext};
use crate::cpu::{CpuAccount, Demotable};
use crate::error::{HandleError, LoadError};
use crate::host::HostState;
use crate::instances::{Settled, Warm, WarmPool};
use crate::logs::LogSink;
use crate::outgoing::CallContext;
use crate::pool::InstanceCount;
use crate::settings::{InstancePolicy, Limits, ModuleSettings};
use crate::ticker::EpochTicker;
use crate::tier::{Tier, TieredCode};

/// What a module needs of the runtime that loaded it: the engine, the
/// capabilities, the default limits, and the epoch ticker kept alive.
#[derive(Clone)]
pub(crate) struct ModuleEnv {
    pub(crate) engine: Engine,
    pub(crate) capabilities: Capabilities,
    pub(crate) limits: Limits,
    pub(crate) instances: Arc<InstanceCount>,
    pub(crate) _ticker: Arc<EpochTicker>,
}

/// A compiled, linked module with the settings it runs under. Cheap to
/// clone; dropping the last clone (and the last in-flight request) frees its
/// code and pre-instance.
#[derive(Clone)]
pub struct LoadedModule {
    code: Arc<TieredCode>,
    settings: Arc<ModuleSettings>,
    capabilities: Configured,
    permits: Arc<Semaphore>,
    memory_in_use: Arc<AtomicU64>,
    cpu: Arc<CpuAccount>,
    warm: Option<Arc<WarmPool>>,
    observer: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
    log_sink: Option<Arc<dyn LogSink>>,
}

impl LoadedModule {
    pub(crate) fn new(code: Arc<TieredCode>) -> Result<Self, LoadError> {
        let settings = ModuleSettings {
            name: String::new(),
            version: String::new(),
            limits: code.current().env.limits,
            allowed_hosts: Vec::new(),
            config: Default::default(),
            policy: InstancePolicy::Fresh,
        };
        Self::assemble(code, settings)
    }

    /// The module under `settings`, configured by every capability of its
    /// runtime (the first refusal is the error).
    fn assemble(code: Arc<TieredCode>, settings: ModuleSettings) -> Result<Self, LoadError> {
        let capabilities = code.current().env.capabilities.configure(&settings)?;
        let warm = match settings.policy {
            InstancePolicy::Fresh => None,
            InstancePolicy::Pooled {
                max_requests,
                max_idle,
            } => Some(Arc::new(WarmPool::new(max_requests, max_idle))),
        };
        Ok(Self {
            permits: Arc::new(Semaphore::new(settings.limits.max_concurrency as usize)),
            cpu: Arc::new(CpuAccount::new(settings.limits.cpu_millis)),
            warm,
            settings: Arc::new(settings),
            capabilities,
            code,
            memory_in_use: Arc::default(),
            observer: None,
            log_sink: None,
        })
    }

    /// The same module, handing guest stdout/stderr and `berth:base/log`
    /// lines to `sink` (instead of the base's own stdout/stderr).
    pub fn with_log_sink(mut self, sink: Arc<dyn LogSink>) -> Self {
        self.log_sink = Some(sink);
        self
    }

    /// The same module, calling `observe` with each instantiation's duration
    /// (for metrics).
    pub fn with_instantiation_observer(
        mut self,
        observe: Arc<dyn Fn(Duration) + Send + Sync>,
    ) -> Self {
        self.observer = Some(observe);
        self
    }

    /// Linear memory held by this version's live instances, in bytes.
    pub fn memory_in_use(&self) -> u64 {
        self.memory_in_use.load(Ordering::Relaxed)
    }

    /// Time this version's requests have spent inside guest code (every
    /// poll of instantiation and handler, host calls included).
    pub fn cpu_time(&self) -> Duration {
        self.cpu.used()
    }

    /// Requests of this version that ran on the long-request workers:
    /// moved there after one quantum of guest time, or started there
    /// because most of its recent requests ran that long (see `cpu`).
    pub fn long_requests(&self) -> u64 {
        self.cpu.long_requests()
    }

    /// Idle warm instances of a `pooled` version (0 for `fresh`).
    pub fn warm_instances(&self) -> usize {
        self.warm.as_ref().map_or(0, |pool| pool.idle())
    }

    /// Drops this version's warm instances (`pooled`) and keeps it from
    /// reusing those serving now: a switch or an uninstall calls it, so no
    /// instance outlives the version's turn as the one serving.
    pub fn discard_instances(&self) {
        if let Some(pool) = &self.warm {
            pool.discard();
        }
    }

    /// The same code under other settings (limits, grants, config),
    /// configured anew by every capability; a capability's refusal is
    /// [`LoadError::Refused`]. The memory limit is capped by the pool's
    /// per-instance maximum.
    pub fn with_settings(&self, mut settings: ModuleSettings) -> Result<Self, LoadError> {
        let ceiling = self.code.current().env.limits.max_memory_bytes;
        settings.limits.max_memory_bytes = settings.limits.max_memory_bytes.min(ceiling);
        Self::assemble(self.code.clone(), settings)
    }

    /// The compiler tier new requests run on: `Winch` until Cranelift's
    /// code has taken over (see [`crate::Tiers`]).
    pub fn tier(&self) -> Tier {
        self.code.tier()
    }

    /// The settings requests run under.
    pub fn settings(&self) -> &ModuleSettings {
        &self.settings
    }

    /// The digest of the artifact this module was loaded from.
    pub fn digest(&self) -> Digest {
        self.code.digest
    }

    /// Requests running in this module version right now.
    pub fn in_flight(&self) -> u32 {
        self.settings.limits.max_concurrency - self.permits.available_permits() as u32
    }

    /// Serves one request in an instance of the version's policy: a fresh
    /// one, or (`pooled`) a warm one when there is one.
    ///
    /// `context` says who serves it (for logs) and how module calls made
    /// while serving it are handled. Returns the guest's response, whose body
    /// streams while the guest keeps writing; or why the guest produced none.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        context: CallContext,
    ) -> Result<http::Response<ResponseBody>, HandleError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let limits = self.settings.limits;
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err(HandleError::Overloaded(limits.max_concurrency));
        };
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limits.max_request_bytes) {
            return Err(HandleError::RequestTooLarge(limits.max_request_bytes));
        }
        // A version over its CPU share queues here (or is turned away).
        self.cpu.admit(limits.cpu_queue_wait).await?;
        let request = request.map(|body| limit_body(body, limits.max_request_bytes, true));

        let label = context.label.clone();
        let request_id = context
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let extensions = self.capabilities.prepare(&InstanceContext {
            settings: &self.settings,
            request_id: request_id.as_deref(),
            log_sink: self.log_sink.as_ref(),
        });
        // The code is loaded once: a request started on Winch code finishes
        // on it even if Cranelift's takes over meanwhile. A warm instance
        // made on the other tier's engine is dropped, so a pooled version
        // moves up to the optimized code too.
        let code = self.code.current();
        let warm = self
            .warm
            .as_ref()
            .and_then(|pool| pool.take())
            .filter(|warm| Engine::same(warm.store.engine(), &code.env.engine));
        let generation = self.warm.as_ref().map_or(0, |pool| pool.generation());
        let (mut store, warm_proxy, served, generation) = match warm {
            Some(mut warm) => {
                warm.store.data_mut().begin_request(
                    self.settings.clone(),
                    extensions,
                    context,
                    request_id,
                );
                (
                    warm.store,
                    Some((warm.proxy, warm.live)),
                    warm.served,
                    warm.generation,
                )
            }
            None => (
                self.new_store(&code.env.engine, extensions, context, request_id),
                None,
                0,
                generation,
            ),
        };
        store.set_epoch_deadline(1);

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let responded = Arc::new(AtomicBool::new(false));
        // Set when the guest fails, before its instance (and with it the
        // response body's sender) is dropped: see `body::unless_failed`.
        let failed = Arc::new(AtomicBool::new(false));
        let guest_failed = failed.clone();
        let (req, out) = {
            let mut http = store.data_mut().http();
            let req = http
                .new_incoming_request(Scheme::Http, request)
                .map_err(|e| HandleError::BadRequest(format!("{e:#}")))?;
            let flag = responded.clone();
            let out = http
                .new_response_outparam_from_callback(move |response| {
                    flag.store(true, Ordering::Release);
                    let _ = sender.send(response);
                })
                .map_err(|e| HandleError::BadRequest(format!("{e:#}")))?;
            (req, out)
        };

        let pre = code.pre.clone();
        let observer = self.observer.clone();
        let pool = self.warm.clone();
        // A pooled response ends only once its instance is back (see
        // `instances::Settled`): the task drops `settled` when it is done.
        let (settled, settled_rx) = match pool {
            Some(_) => {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let instances = code.env.instances.clone();
        // The guest runs in its own task so it can keep streaming the body
        // after the response head has gone out; it holds the concurrency
        // permit until it is done. Each poll is charged to the version's
        // CPU account, which holds it back while over its share.
        let guest = async move {
            // Dropped last, after the instance went back to the pool.
            let _settled = settled;
            let _permit = permit;
            // Keeps this tier's engine and epoch ticker alive to the end.
            let _code = code;
            let (proxy, live) = match warm_proxy {
                Some(warm) => warm,
                None => {
                    let live = instances.enter();
                    let instantiating = std::time::Instant::now();
                    let instantiated = pre.instantiate_async(&mut store).await;
                    if let Some(observe) = &observer {
                        observe(instantiating.elapsed());
                    }
                    match instantiated {
                        Ok(proxy) => (proxy, live),
                        Err(e) if store.data().limiter.hit => {
                            tracing::debug!(error = %e, "instantiation over the memory limit");
                            return Err(HandleError::MemoryLimit(limits.max_memory_bytes));
                        }
                        Err(e) => return Err(HandleError::Instantiate(format!("{e:#}"))),
                    }
                }
            };
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            match result {
                Ok(()) if !responded.load(Ordering::Acquire) => {
                    // No response: the instance is dropped (which ends the
                    // wait for one). From a reused instance, that is a
                    // module that cannot be reused: stop reusing them.
                    if let Some(pool) = pool
                        && served > 0
                        && pool.give_up()
                    {
                        tracing::warn!(
                            module = %label,
                            "the module returned without a response from a reused instance: it cannot serve two requests on one instance (componentize-js components cannot), so this version now gets a fresh instance per request; set its policy to fresh"
                        );
                    }
                    Ok(())
                }
                Ok(()) => {
                    // A pooled instance that served normally goes back; one
                    // that hit its memory limit (and recovered) does not.
                    if let Some(pool) = pool
                        && !store.data().limiter.hit
                    {
                        pool.put(Warm::new(store, proxy, served + 1, generation, live));
                    }
                    Ok(())
                }
                Err(e) => {
                    guest_failed.store(true, Ordering::Release);
                    let error = if store.data().limiter.hit {
                        HandleError::MemoryLimit(limits.max_memory_bytes)
                    } else {
                        classify_trap(&e, limits.timeout)
                    };
                    if responded.load(Ordering::Acquire) {
                        // Too late for an error status (the caller logs those):
                        // the body stream ends in an error, so log it here.
                        tracing::warn!(module = %label, error = %chain_without_host_backtrace(&e), "module failed after sending its response head: {error}");
                    }
                    Err(error)
                }
            }
        };
        let task = tokio::spawn(Demotable::new(guest, self.cpu.clone()));

        match receiver.await {
            Ok(Ok(response)) => {
                let length = response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .or_else(|| http_body::Body::size_hint(response.body()).exact());
                let mut response = response.map(|body| {
                    unless_failed(
                        limit_body(body, limits.max_response_bytes, false),
                        failed.clone(),
                    )
                });
                if length.is_none() {
                    // A short body that is already complete goes out with
                    // its length, in one write (see `body::coalesce`).
                    let (parts, body) = response.into_parts();
                    match coalesce(body).await {
                        Coalesced::Whole(whole) => {
                            if let Some(settled) = settled_rx {
                                // As `Settled` would: complete only once the
                                // instance is back for the next request.
                                let _ = settled.await;
                            }
                            return Ok(http::Response::from_parts(parts, full_body(whole)));
                        }
                        Coalesced::Streaming(body) => {
                            response = http::Response::from_parts(parts, body);
                        }
                        Coalesced::Failed(wasmtime_wasi_http::Error::HttpResponseBodySize(_)) => {
                            return Err(HandleError::ResponseTooLarge(limits.max_response_bytes));
                        }
                        Coalesced::Failed(e) => {
                            // The guest failed while writing: its own error
                            // (a trap, a deadline) once its task has ended,
                            // which it does at once when it failed.
                            if (failed.load(Ordering::Acquire) || task.is_finished())
                                && let Ok(Err(error)) = task.await
                            {
                                return Err(error);
                            }
                            return Err(HandleError::Trap {
                                message: "the module failed while writing its response body".into(),
                                detail: format!("{e:?}"),
                            });
                        }
                    }
                }
                Ok(match settled_rx {
                    Some(settled) => {
                        response.map(|body| Settled::new(body, length, settled).boxed_unsync())
                    }
                    None => response,
                })
            }
            Ok(Err(code)) => Err(HandleError::GuestError(format!("{code:?}"))),
            // The sender was dropped with the store: the task ended without responding.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(HandleError::NoResponse),
                Ok(Err(error)) => Err(error),
                Err(join) => Err(HandleError::Trap {
                    message: "the host task serving the module failed".into(),
                    detail: join.to_string(),
                }),
            },
        }
    }
}

impl LoadedModule {
    /// A store for a new instance: its host state, memory limiter, and the
    /// epoch callback that yields every tick and interrupts past the
    /// deadline.
    fn new_store(
        &self,
        engine: &Engine,
        extensions: crate::extensions::Extensions,
        context: CallContext,
        request_id: Option<String>,
    ) -> Store<HostState> {
        let mut store = Store::new(
            engine,
            HostState::new(
                self.settings.clone(),
                extensions,
                context,
                self.memory_in_use.clone(),
                self.log_sink.clone(),
                request_id,
            ),
        );
        store.limiter(|state| &mut state.limiter);
        // Each epoch tick, a running guest yields its worker thread to other
        // requests (an async yield, not a trap); past the deadline it is
        // interrupted (a trap).
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.started.elapsed() >= state.timeout {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }
}

/// `body` as a boxed `wasi:http` body that fails once more than `max`
/// bytes have passed (a request body the guest reads, or a response body
/// the guest writes).
fn limit_body<B>(body: B, max: u64, request: bool) -> ResponseBody
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    use wasmtime_wasi_http::Error;
    let body = body.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e.into()) });
    http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
        .map_err(move |e| match e.downcast::<Error>() {
            Ok(inner) => *inner,
            Err(_) if request => Error::HttpRequestBodySize(Some(max)),
            Err(_) => Error::HttpResponseBodySize(Some(max)),
        })
        .boxed_unsync()
}

/// Turns a guest failure into a [`HandleError`] with a short, safe message.
fn classify_trap(error: &wasmtime::Error, timeout: std::time::Duration) -> HandleError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => HandleError::Deadline(timeout),
        Some(trap) => HandleError::Trap {
            message: trap.to_string(),
            detail: chain_without_host_backtrace(error),
        },
        None => HandleError::Trap {
            message: error.root_cause().to_string(),
            detail: chain_without_host_backtrace(error),
        },
    }
}

/// The error and its causes (the wasm backtrace is one of them), like
/// `{:?}` but without the host backtrace that `RUST_BACKTRACE=1` makes
/// wasmtime capture: symbolizing it costs hundreds of ms and MB per trap,
/// on the thread serving the request (a client closing connections with
/// requests in flight once stalled new connections for up to 0.9 s).
fn chain_without_host_backtrace(error: &wasmtime::Error) -> String {
    let causes: Vec<String> = error.chain().map(ToString::to_string).collect();
    causes.join("\n\nCaused by:\n    ")
}
