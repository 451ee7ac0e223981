//! Starting and stopping a gateway: the listener, the endpoint-table watch
//! and the load report.
//!
//! **Thread layout.** With `GatewayConfig::threads` 0 client connections
//! are served on the caller's tokio runtime, whose workers steal work from
//! each other. With listener threads (`berth gateway --threads N`, one per
//! core by default), each of N threads runs a
//! single-threaded runtime with its own client connections (a new one goes
//! to the thread with the fewest open: `berth_api::threads`)
//! and its own idle connections to the bases (`crate::upstream`), the way
//! HAProxy's and nginx's workers own their connections. A request then
//! never moves between threads, which saves the cross-thread wake-ups of
//! work stealing, and a task can no longer wait in the local slot of a
//! worker the OS has descheduled, which is what stretched the gateway's
//! p99 on a busy 2-core machine (bench/README.md, "Request path"). The
//! price: a thread does not help another that is busier, so a few heavy
//! connections can load one thread while another idles.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use berth_api::threads::{Acceptor, Listeners};

use crate::config::{GatewayConfig, GatewayError};
use crate::metrics::Metrics;
use crate::proxy;
use crate::table::{Live, Table};

/// What the gateway's tasks share.
pub struct Shared {
    /// Its settings.
    pub config: GatewayConfig,
    /// The routing snapshot in force.
    pub table: ArcSwap<Table>,
    /// State that outlives snapshots.
    pub live: Mutex<Live>,
    /// Its metrics.
    pub metrics: Metrics,
    /// Index (in the config) of the controller that answered last.
    pub controller: AtomicUsize,
    /// HTTP client to the controller.
    pub http: reqwest::Client,
    /// Told of every new table (and of a refused activation), for the held requests.
    pub changed: Arc<tokio::sync::watch::Sender<()>>,
}

impl Shared {
    /// The controller that answered last (or the first).
    pub fn controller_url(&self) -> String {
        let controllers = &self.config.controllers;
        controllers[self.controller.load(std::sync::atomic::Ordering::Relaxed) % controllers.len()]
            .clone()
    }
}

/// The fleet gateway; see the crate docs.
pub struct Gateway;

/// A gateway serving; [`RunningGateway::shutdown`] stops it.
pub struct RunningGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds `config.listen` and starts serving, watching the controller
    /// and reporting load. A controller that is not reachable yet is
    /// retried; meanwhile requests are answered 503.
    pub async fn start(mut config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
        crate::config::check_report_interval(config.report_interval)?;
        let bind_error = |source| GatewayError::Bind {
            addr: config.listen,
            source,
        };
        let (listeners, addr) =
            berth_api::threads::bind(config.listen, config.threads, LISTEN_BACKLOG)
                .map_err(bind_error)?;
        if config.name.is_empty() {
            config.name = format!("gateway-{}", addr.port());
        }
        let headers = berth_api::auth::bearer_headers(config.token.as_deref());
        let base_protocol = config.base_protocol;
        let shared = Arc::new(Shared {
            config,
            table: ArcSwap::from_pointee(Table::default()),
            live: Mutex::new(Live::new(base_protocol)),
            metrics: Metrics::default(),
            controller: AtomicUsize::new(0),
            http: berth_api::tls::with_trusted_ca(reqwest::Client::builder())
                .connect_timeout(Duration::from_secs(2))
                .default_headers(headers)
                .build()
                .expect("an HTTP client"),
            changed: Arc::new(tokio::sync::watch::channel(()).0),
        });
        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(crate::watch::run(shared.clone(), watcher.clone())),
            tokio::spawn(crate::report::run(shared.clone(), watcher.clone())),
        ];
        match listeners {
            Listeners::Shared(listener) => {
                tasks.push(tokio::spawn(serve(
                    listener.into(),
                    shared.clone(),
                    watcher,
                )));
            }
            Listeners::PerThread(listeners) => {
                for (n, listener) in listeners.into_iter().enumerate() {
                    let (shared, watcher) = (shared.clone(), watcher.clone());
                    tasks.push(tokio::task::spawn_blocking(move || {
                        listener_thread(n + 1, listener, shared, watcher)
                    }));
                }
            }
        }
        tracing::info!(%addr, controllers = %shared.config.controllers.join(","), "gateway serving");
        Ok(RunningGateway {
            addr,
            shared,
            shutdown,
            tasks,
        })
    }
}

impl RunningGateway {
    /// Its metrics as OpenMetrics text.
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Stops accepting, lets requests in flight finish (up to 10 s), and
    /// stops watching the controller.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Waits until the gateway stops.
    pub async fn wait(&mut self) {
        for task in &mut self.tasks {
            let _ = task.await;
        }
    }
}

/// Connections the kernel queues for each listening socket before the
/// gateway accepts them (Linux caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Listener thread `n`: a single-threaded runtime serving `listener` until
/// `shutdown` changes (see the module docs).
fn listener_thread(
    n: usize,
    listener: berth_api::threads::ThreadSocket,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    crate::upstream::set_thread_slot(n);
    berth_api::threads::serve_on_own_runtime("gateway", listener, |listener| {
        serve(listener, shared, shutdown)
    });
}

/// Accepts connections until `shutdown` changes.
async fn serve(mut listener: Acceptor, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote, open) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tls = shared.config.tls.clone();
                let shared = shared.clone();
                let service = hyper::service::service_fn(move |request| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, Infallible>(proxy::handle(&shared, request, Some(remote.ip())).await)
                    }
                });
                if let Some(tls) = tls {
                    // HTTPS: the handshake runs in the connection's task, within 10 s.
                    let (watcher, http) = (graceful.watcher(), http.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
                            Ok(Ok(conn)) => {
                                let _ = watcher.watch(http.serve_connection(TokioIo::new(conn), service)).await;
                            }
                            _ => tracing::debug!(%remote, "gateway TLS handshake failed or timed out"),
                        }
                        drop(open);
                    });
                    continue;
                }
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "gateway connection ended with an error");
                    }
                    drop(open);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("gateway connections still open after 10 s; closing them");
    }
}
