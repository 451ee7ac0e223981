//! Starting and stopping a base's two listeners.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use berth_api::threads::Listeners;

use crate::base::Base;
use crate::config::BaseConfig;
use crate::error::BaseError;
use crate::{ingress, ops};

/// A base with its ingress and ops API listening.
pub struct RunningBase {
    /// The base (install, list, ... directly, without HTTP).
    pub base: Base,
    /// Where module traffic is served.
    pub ingress_addr: SocketAddr,
    /// Where the ops API listens.
    pub ops_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Base {
    /// Opens the base (reinstalling recorded modules) and binds both
    /// listeners. Serving starts before this returns.
    pub async fn start(config: BaseConfig) -> Result<RunningBase, BaseError> {
        let ingress_addr = config.ingress_addr;
        let ops_addr = config.ops_addr;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            bind_listener(addr).map_err(|reason| BaseError::Bind { what, addr, reason })
        };
        crate::listener::fit_fd_limit(config.max_connections.max(1));
        // Bind first: a port clash should fail before any state is touched.
        let ingress_threads = config.ingress_threads;
        let (ingress, ingress_bound) =
            berth_api::threads::bind(ingress_addr, ingress_threads, LISTEN_BACKLOG).map_err(
                |reason| BaseError::Bind {
                    what: "ingress",
                    addr: ingress_addr,
                    reason,
                },
            )?;
        let ops_listener = bind("ops API", ops_addr).await?;
        let controller = config.controller.clone();
        let base = Base::open(config).await?;
        let ingress_addr = ingress_bound;
        let ops_addr = ops_listener.local_addr().expect("bound");
        base.set_ingress_addr(ingress_addr);

        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = Vec::new();
        let limits = base.listener_limits();
        match ingress {
            Listeners::Shared(listener) => {
                tasks.push(tokio::spawn(ingress::serve(
                    listener.into(),
                    base.clone(),
                    limits,
                    watcher.clone(),
                )));
            }
            Listeners::PerThread(listeners) => {
                for listener in listeners {
                    let (base, limits, watcher) = (base.clone(), limits.clone(), watcher.clone());
                    tasks.push(tokio::task::spawn_blocking(move || {
                        ingress_thread(listener, base, limits, watcher)
                    }));
                }
            }
        }
        let mut app = ops::router(base.clone());
        if let Some(gate) = base.config().auth.clone() {
            app = crate::auth::wrap(app, gate);
        }
        tasks.push(tokio::spawn(crate::listener::serve(
            ops_listener.into(),
            base.listener_limits(),
            "ops API",
            move |_| {
                let app = app.clone();
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    tower::ServiceExt::oneshot(app.clone(), request)
                })
            },
            watcher,
        )));
        if let Some(link) = controller {
            tracing::info!(controller = %link.url, name = %link.name, "heartbeating to the controller");
            tasks.push(tokio::spawn(crate::agent::run(
                base.clone(),
                link,
                ops_addr,
                ingress_addr,
                shutdown.subscribe(),
            )));
        }
        tracing::info!(%ingress_addr, %ops_addr, "base serving");
        Ok(RunningBase {
            base,
            ingress_addr,
            ops_addr,
            shutdown,
            tasks,
        })
    }
}

/// Connections the kernel queues for a listener before the base accepts
/// them (Linux caps it at `net.core.somaxconn`, 4096 by default). A burst
/// larger than the queue would have its last handshakes dropped and
/// retried a second or more later; 4096 absorbs a burst of thousands.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (address reuse on, as `TcpListener::bind`) with a listen
/// queue of [`LISTEN_BACKLOG`].
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    berth_api::threads::listen(addr, LISTEN_BACKLOG)
}

/// An ingress thread: a single-threaded runtime serving `listener` until
/// `shutdown` changes. Guests of the requests it accepts run on it too.
fn ingress_thread(
    listener: berth_api::threads::ThreadSocket,
    base: Base,
    limits: crate::listener::Limits,
    shutdown: watch::Receiver<bool>,
) {
    berth_api::threads::serve_on_own_runtime("ingress", listener, |listener| {
        ingress::serve(listener, base, limits, shutdown)
    });
}

impl RunningBase {
    /// Stops accepting, lets in-flight requests finish, exports the spans
    /// still queued (waiting at most a second for that), and releases the
    /// data directory (so another base may open it).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(exporter) = self.base.otlp() {
            exporter.shutdown().await;
        }
    }

    /// Waits until the base stops (it stops on [`RunningBase::shutdown`] only).
    pub async fn wait(&mut self) {
        for task in &mut self.tasks {
            let _ = task.await;
        }
    }
}
