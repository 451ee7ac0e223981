//! [`LoadedModule`]: one installed artifact, ready to serve requests.
//!
//! Instance policy: **fresh**. Every request instantiates the module's
//! `InstancePre` into a new `Store`, runs the guest's
//! `wasi:http/incoming-handler`, and drops the store when the response body
//! is done. Nothing a request leaves in linear memory is seen by the next one,
//! a trap can only ever poison the instance it happened in, and the pooling
//! allocator's copy-on-write memory images keep instantiation in the
//! microseconds. A `pooled` policy (warm instances reused) can be added
//! behind [`LoadedModule::handle`] without the base noticing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::BodyExt;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::artifact::Digest;
use crate::error::HandleError;
use crate::host::HostState;
use crate::runtime::Runtime;

/// The body of a response produced by a module (or by the base for one).
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A compiled, linked module. Cheap to clone; dropping the last clone (and
/// the last in-flight request) frees its code and pre-instance.
#[derive(Clone)]
pub struct LoadedModule {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    digest: Digest,
    pre: ProxyPre<HostState>,
}

impl LoadedModule {
    pub(crate) fn new(runtime: Runtime, digest: Digest, pre: ProxyPre<HostState>) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                digest,
                pre,
            }),
        }
    }

    /// The digest of the artifact this module was loaded from.
    pub fn digest(&self) -> Digest {
        self.inner.digest
    }

    /// Serves one request in a fresh instance.
    ///
    /// `label` names the module in log lines (e.g. `hello@1.0.0`). Returns
    /// the guest's response, whose body streams while the guest keeps
    /// writing; or why the guest produced none.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        label: Arc<str>,
    ) -> Result<http::Response<ResponseBody>, HandleError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let config = self.inner.runtime.config();
        let timeout = config.request_timeout;
        let mut store = Store::new(
            self.inner.runtime.engine(),
            HostState::new(config.max_memory_bytes, timeout),
        );
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        // Each epoch tick, a running guest yields its worker thread to other
        // requests; past the deadline it is interrupted (a trap).
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

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let responded = Arc::new(AtomicBool::new(false));
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

        let pre = self.inner.pre.clone();
        // The guest runs in its own task so it can keep streaming the body
        // after the response head has gone out.
        let task = tokio::spawn(async move {
            let proxy = match pre.instantiate_async(&mut store).await {
                Ok(proxy) => proxy,
                Err(e) => return Err(HandleError::Instantiate(format!("{e:#}"))),
            };
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            match result {
                Ok(()) => Ok(()),
                Err(e) => {
                    if responded.load(Ordering::Acquire) {
                        // Too late for a 500 (the caller logs those): the
                        // body stream ends in an error, so log it here.
                        tracing::warn!(module = %label, error = ?e, "module trapped after sending its response head");
                    }
                    Err(classify_trap(&e, timeout))
                }
            }
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response),
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

/// Turns a guest failure into a [`HandleError`] with a short, safe message.
fn classify_trap(error: &wasmtime::Error, timeout: std::time::Duration) -> HandleError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => HandleError::Deadline(timeout),
        Some(trap) => HandleError::Trap {
            message: trap.to_string(),
            detail: format!("{error:?}"),
        },
        None => HandleError::Trap {
            message: error.root_cause().to_string(),
            detail: format!("{error:?}"),
        },
    }
}

/// A complete body made of `bytes`, typed like a module's response body.
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
