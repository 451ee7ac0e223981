//! Starting a controller: which store it runs on ([`StoreSpec`], the
//! `--store` flag), and [`Controller::start`], the one entry point that opens
//! the store, binds the API and hands back a controller ready to serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::Shared;
use crate::code::{CodeError, CodeShop};
use crate::etcd::EtcdStore;
use crate::leader::{LeaderRecord, Leadership};
use crate::reconciler::Reconciler;
use crate::resources::Resources;
use crate::store::{RedbStore, SharedStore, StoreError};

/// Where the controller keeps its state (`--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `redb:PATH`: the embedded store, one file.
    Redb(PathBuf),
    /// `etcd://h1:2379,h2:2379`: an etcd cluster, by its client endpoints.
    Etcd(Vec<String>),
}

/// A `--store` value that is neither `redb:PATH` nor `etcd://HOST:PORT,…`.
#[derive(Debug, thiserror::Error)]
#[error("--store `{given}`: {why}; use `redb:PATH` or `etcd://HOST:PORT[,HOST:PORT…]`")]
pub struct StoreSpecError {
    given: String,
    why: String,
}

impl FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let fail = |why: &str| StoreSpecError {
            given: given.into(),
            why: why.into(),
        };
        if let Some(path) = given.strip_prefix("redb:") {
            if path.is_empty() {
                return Err(fail("the redb path is empty"));
            }
            return Ok(StoreSpec::Redb(PathBuf::from(path)));
        }
        if let Some(list) = given.strip_prefix("etcd://") {
            let mut endpoints = Vec::new();
            for endpoint in list.split(',') {
                let Some((host, port)) = endpoint.rsplit_once(':') else {
                    return Err(fail(&format!(
                        "endpoint `{endpoint}` has no port (e.g. `{endpoint}:2379`)"
                    )));
                };
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(fail(&format!(
                        "endpoint `{endpoint}` is not HOST:PORT (e.g. `127.0.0.1:2379`)"
                    )));
                }
                endpoints.push(endpoint.to_string());
            }
            return Ok(StoreSpec::Etcd(endpoints));
        }
        Err(fail("unknown kind of store"))
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Redb(path) => write!(f, "redb:{}", path.display()),
            StoreSpec::Etcd(endpoints) => write!(f, "etcd://{}", endpoints.join(",")),
        }
    }
}

/// What a controller is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the API (port 0: any free port, see
    /// [`Controller::local_addr`]).
    pub listen: SocketAddr,
    /// Its store; `None`: `redb:` the file `controller.redb` in `data_dir`.
    pub store: Option<StoreSpec>,
    /// Its local directory (the default store, compiled code).
    pub data_dir: PathBuf,
    /// Bases silent for longer than this are NotReady.
    pub heartbeat_timeout: Duration,
    /// Compile deployed modules once for the bases.
    pub compile_for_bases: bool,
    /// The URL other controllers forward writes to (`--advertise`);
    /// `None`: `http://` and the address the API listens on.
    pub advertise: Option<String>,
    /// The TTL of the leader lease on a shared store (etcd counts whole
    /// seconds, at least 2 on its default settings).
    pub leader_ttl: Duration,
    /// Keys applied artifacts must be signed with (`--trust-key`); none:
    /// signatures are not required.
    pub trust_keys: berth_runtime::TrustKeys,
    /// How long a replica taken off a Ready base drains (marked draining
    /// for the gateways, still assigned) before it is unassigned.
    pub drain_grace: Duration,
    /// The token gate in front of the API ([`crate::auth`]); `None`: open
    /// and unaudited.
    pub auth: Option<Arc<berth_api::auth::Gate>>,
    /// TLS the API is served over (`--tls-cert`/`--tls-key`); `None`:
    /// plain HTTP.
    pub tls: Option<berth_api::tls::ServerTls>,
}

/// The leader TTL `berth controller` uses unless told otherwise.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(5);

/// Why a controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created.
    #[error("cannot create the controller's data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store cannot be opened.
    #[error("cannot open the controller's store {spec}: {source}")]
    Store {
        /// The store, as `--store` names it.
        spec: StoreSpec,
        /// The cause.
        source: StoreError,
    },
    /// The API address cannot be bound.
    #[error("cannot listen on {addr}: {source}; is another controller running?")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The code shop cannot be opened.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// A leader TTL too short to renew within.
    #[error(
        "--leader-ttl {given}: a leader lease lasts at least 1s (etcd counts whole seconds and its default minimum is 2s); e.g. --leader-ttl 5s"
    )]
    LeaderTtl {
        /// The TTL given, human readable.
        given: String,
    },
}

/// A started controller: its store is open and its API bound; [`Controller::serve`]
/// runs it.
pub struct Controller {
    listener: tokio::net::TcpListener,
    shared: Shared,
    store: StoreSpec,
    leadership: Leadership,
    gate: Option<Arc<berth_api::auth::Gate>>,
    tls: Option<berth_api::tls::ServerTls>,
}

impl Controller {
    /// Opens the store `config` names, binds the API and prepares the
    /// reconciler.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        if config.leader_ttl < Duration::from_secs(1) {
            return Err(StartError::LeaderTtl {
                given: humantime::format_duration(config.leader_ttl).to_string(),
            });
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let spec = config
            .store
            .clone()
            .unwrap_or_else(|| StoreSpec::Redb(config.data_dir.join("controller.redb")));
        let store = open_store(&spec).map_err(|source| StartError::Store {
            spec: spec.clone(),
            source,
        })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let url = match &config.advertise {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!(
                "{}://{}",
                berth_api::tls::scheme(config.tls.as_ref()),
                listener.local_addr().map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?
            ),
        };
        let leadership = match &spec {
            // One file, one controller: it leads.
            StoreSpec::Redb(_) => Leadership::always(url),
            StoreSpec::Etcd(_) => Leadership::campaign(
                store.clone(),
                LeaderRecord {
                    id: format!("{url}#{}", std::process::id()),
                    url,
                },
                config.leader_ttl,
            ),
        };
        let reconciler = Reconciler::new(Arc::new(Resources::new(store)), config.heartbeat_timeout);
        reconciler.set_leadership(leadership.clone());
        reconciler.set_drain_grace(config.drain_grace);
        let code = if config.compile_for_bases {
            Some(Arc::new(CodeShop::open(config.data_dir.join("compiled"))?))
        } else {
            None
        };
        Ok(Self {
            listener,
            shared: Shared {
                reconciler,
                code,
                trust_keys: config.trust_keys.clone(),
            },
            store: spec,
            leadership,
            gate: config.auth.clone(),
            tls: config.tls.clone(),
        })
    }

    /// `https` when the API is served over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        berth_api::tls::scheme(self.tls.as_ref())
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store it runs on.
    pub fn store(&self) -> &StoreSpec {
        &self.store
    }

    /// The engine tag of the code it compiles for bases, if it does.
    pub fn engine(&self) -> Option<&str> {
        self.shared.code.as_ref().map(|shop| shop.tag())
    }

    /// Its place in the leader election.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Serves the API and reconciles until `shutdown` resolves; a new
    /// leader runs a pass the moment it is elected. On the way out it gives
    /// the leadership up, so another controller takes over at once.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut elected = self.leadership.subscribe();
        let reconciler = self.shared.reconciler.clone();
        let on_election = tokio::spawn(async move {
            while elected.changed().await.is_ok() {
                if !*elected.borrow_and_update() {
                    continue;
                }
                let pass = reconciler.clone();
                match tokio::task::spawn_blocking(move || pass.reconcile()).await {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "first pass as leader failed; retrying on the tick")
                    }
                    Err(e) => tracing::error!(error = %e, "first pass as leader panicked"),
                    Ok(Ok(())) => {}
                }
            }
        });
        let on_change = tokio::spawn(refresh_on_change(
            self.shared.reconciler.clone(),
            self.leadership.clone(),
        ));
        let served = match self.tls {
            Some(tls) => {
                let listener = crate::tls::TlsListener::new(self.listener, tls)?;
                crate::api::serve_with_gate(listener, self.shared, self.gate, shutdown).await
            }
            None => {
                crate::api::serve_with_gate(self.listener, self.shared, self.gate, shutdown).await
            }
        };
        on_election.abort();
        on_change.abort();
        let leadership = self.leadership.clone();
        let _ = tokio::task::spawn_blocking(move || leadership.resign()).await;
        served
    }
}

/// While this controller follows, runs a (read-only) pass whenever a
/// deployment changes — an apply, a rollout step the leader wrote — so the
/// bases watching their assignments here learn of it at once, not on the
/// next tick.
async fn refresh_on_change(reconciler: Arc<Reconciler>, leadership: Leadership) {
    use crate::store::Store as _;
    loop {
        let store = reconciler.resources().store().clone();
        let watch = tokio::task::spawn_blocking(move || {
            let (_, at) = store.list(crate::leader::LEADER_KEY)?;
            store.watch(crate::resources::DEPLOYMENTS, at)
        })
        .await;
        if let Ok(Ok(mut watch)) = watch {
            while let Some(Ok(_)) = watch.next().await {
                if leadership.is_leader() {
                    continue; // the leader passes in the request that changed it
                }
                let pass = reconciler.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || pass.reconcile()).await {
                    tracing::debug!(error = %e, "follower pass failed; the tick retries");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Opens the backend `spec` names.
pub fn open_store(spec: &StoreSpec) -> Result<SharedStore, StoreError> {
    match spec {
        StoreSpec::Redb(path) => Ok(Arc::new(RedbStore::open(path)?)),
        StoreSpec::Etcd(endpoints) => Ok(Arc::new(EtcdStore::connect(
            endpoints,
            crate::etcd::DEFAULT_PREFIX,
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_parse_and_bad_ones_say_how_to_fix() {
        assert_eq!(
            "redb:/var/lib/c.redb".parse::<StoreSpec>().unwrap(),
            StoreSpec::Redb("/var/lib/c.redb".into())
        );
        let etcd: StoreSpec = "etcd://h1:2379,10.0.0.2:2380".parse().unwrap();
        assert_eq!(
            etcd,
            StoreSpec::Etcd(vec!["h1:2379".into(), "10.0.0.2:2380".into()])
        );
        assert_eq!(etcd.to_string(), "etcd://h1:2379,10.0.0.2:2380");
        for (bad, says) in [
            ("postgres://x", "unknown kind of store"),
            ("redb:", "the redb path is empty"),
            ("etcd://h1", "endpoint `h1` has no port"),
            ("etcd://h1:2379,:1", "endpoint `:1` is not HOST:PORT"),
            ("etcd://h1:http", "endpoint `h1:http` is not HOST:PORT"),
        ] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains("use `redb:PATH` or `etcd://"), "{bad}: {err}");
        }
    }
}
