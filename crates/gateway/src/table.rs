//! The gateway's routing snapshot, built from the controller's endpoint
//! table: deployments in the shared route table (host + path prefix, the
//! base router's semantics), each with its compiled rules and replicas.
//!
//! A snapshot is immutable and swapped in whole on every new endpoint
//! table; requests keep the one they started with. What must outlive a
//! snapshot — each replica's outstanding count and ejection, each
//! deployment's counters — lives in [`Live`] and is handed to the next.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use berth_api::endpoints::EndpointTable;
use berth_rules::{CompiledRules, RouteTable};

use crate::BaseProtocol;
use crate::balance::ReplicaState;
use crate::metrics::ModuleSeries;
use crate::upstream::Upstream;

/// One routing snapshot.
#[derive(Default)]
pub struct Table {
    /// Deployments by route.
    pub routes: RouteTable<Arc<Deployment>>,
    /// Every deployment, by name (for load reports).
    pub deployments: Vec<Arc<Deployment>>,
    /// Whether it came from a controller (false: none answered yet).
    pub loaded: bool,
}

/// A deployment as the gateway routes to it.
pub struct Deployment {
    /// The ModuleDeployment's name.
    pub name: String,
    /// Its module.
    pub module: String,
    /// Its compiled rules, if any.
    pub rules: Option<CompiledRules>,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// Its counters (kept across snapshots).
    pub stats: Arc<DeploymentStats>,
    /// Its module's metric series, resolved at its first request.
    pub series: OnceLock<ModuleSeries>,
}

/// Per-deployment counters for the load report, and its hold queue.
#[derive(Debug, Default)]
pub struct DeploymentStats {
    /// Requests forwarded and not answered in full.
    pub in_flight: AtomicU64,
    /// Requests received, ever.
    pub requests: AtomicU64,
    /// Requests held waiting for a ready replica.
    pub held: AtomicU64,
    /// An activation was asked for the requests held now.
    pub activating: std::sync::atomic::AtomicBool,
    /// Why the controller refused to activate it, while requests are held.
    pub refused: std::sync::Mutex<Option<String>>,
}

impl Deployment {
    /// Whether some replica can take a request now (ready, not draining).
    pub fn serving(&self) -> bool {
        self.replicas.iter().any(|r| r.ready && !r.draining)
    }
}

/// One replica.
#[derive(Debug)]
pub struct Replica {
    /// Its base's name.
    pub base: String,
    /// Its base's ingress, `host:port`.
    pub address: String,
    /// The versions its base runs.
    pub versions: Vec<String>,
    /// Ready to serve.
    pub ready: bool,
    /// Being removed: no new requests.
    pub draining: bool,
    /// Its base's labels.
    pub labels: BTreeMap<String, String>,
    /// Its live state (kept across snapshots).
    pub state: Arc<ReplicaState>,
    /// The pooled connections to its base (kept across snapshots, shared
    /// by every deployment on that base).
    pub upstream: Arc<Upstream>,
}

/// State that outlives snapshots.
pub struct Live {
    epoch: Instant,
    replicas: HashMap<(String, String, String), Arc<ReplicaState>>,
    stats: HashMap<String, Arc<DeploymentStats>>,
    upstreams: HashMap<String, Arc<Upstream>>,
    protocol: BaseProtocol,
}

impl Live {
    /// No state yet; connections to bases will speak `protocol`.
    pub fn new(protocol: BaseProtocol) -> Self {
        Self {
            epoch: Instant::now(),
            replicas: HashMap::new(),
            stats: HashMap::new(),
            upstreams: HashMap::new(),
            protocol,
        }
    }

    /// The snapshot of `endpoints`, reusing the live state of what it keeps
    /// and forgetting the rest. A deployment with an invalid route is left
    /// out and one with invalid rules routes without them, each with a warning.
    pub fn build(&mut self, endpoints: &EndpointTable) -> Table {
        let mut replicas = HashMap::new();
        let mut stats = HashMap::new();
        let mut upstreams = HashMap::new();
        let mut routes = Vec::new();
        let mut deployments = Vec::new();
        for d in &endpoints.deployments {
            let route = match berth_rules::normalize(d.route.clone()) {
                Ok(route) => route,
                Err(e) => {
                    tracing::warn!(deployment = %d.name, error = %e, "deployment not routed: its route is invalid");
                    continue;
                }
            };
            let rules = d
                .rules
                .as_ref()
                .and_then(|rules| match CompiledRules::compile_any(rules) {
                    Ok(compiled) => Some(compiled),
                    Err(e) => {
                        tracing::warn!(deployment = %d.name, error = %e, "rules ignored: they are invalid");
                        None
                    }
                });
            let deployment_stats = self.stats.get(&d.name).cloned().unwrap_or_default();
            stats.insert(d.name.clone(), deployment_stats.clone());
            let protocol = self.protocol;
            let list = d
                .replicas
                .iter()
                .map(|e| {
                    let key = (d.name.clone(), e.base.clone(), e.address.clone());
                    let state = self
                        .replicas
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(ReplicaState::new(self.epoch)));
                    replicas.insert(key, state.clone());
                    let upstream = self
                        .upstreams
                        .get(&e.address)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Upstream::new(&e.address, protocol)));
                    upstreams.insert(e.address.clone(), upstream.clone());
                    Replica {
                        base: e.base.clone(),
                        address: e.address.clone(),
                        versions: e.versions.clone(),
                        ready: e.ready,
                        draining: e.draining,
                        labels: e.labels.clone(),
                        state,
                        upstream,
                    }
                })
                .collect();
            let deployment = Arc::new(Deployment {
                name: d.name.clone(),
                module: d.module.clone(),
                rules,
                replicas: list,
                stats: deployment_stats,
                series: OnceLock::new(),
            });
            routes.push((route, deployment.clone()));
            deployments.push(deployment);
        }
        self.replicas = replicas;
        self.stats = stats;
        self.upstreams = upstreams;
        Table {
            routes: RouteTable::new(routes),
            deployments,
            loaded: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::Route;
    use berth_api::endpoints::{DeploymentEndpoints, Endpoint};

    fn endpoints(prefix: &str, bases: &[&str]) -> EndpointTable {
        EndpointTable {
            deployments: vec![DeploymentEndpoints {
                name: "orders".into(),
                module: "orders".into(),
                route: Route {
                    host: None,
                    path_prefix: Some(prefix.into()),
                },
                rules: None,
                replicas: bases
                    .iter()
                    .map(|b| Endpoint {
                        base: b.to_string(),
                        address: format!("{b}:80"),
                        version: "1".into(),
                        versions: vec!["1".into()],
                        ready: true,
                        draining: false,
                        labels: Default::default(),
                    })
                    .collect(),
            }],
            revision: "r".into(),
        }
    }

    #[test]
    fn live_state_outlives_snapshots_of_the_replicas_they_keep() {
        let mut live = Live::new(Default::default());
        let first = live.build(&endpoints("/orders/", &["a", "b"]));
        let d = first.routes.lookup(None, "/orders/1").unwrap();
        let _held = d.replicas[0].state.begin();
        assert!(first.routes.lookup(None, "/ordersx").is_none());
        let second = live.build(&endpoints("/orders", &["a"]));
        let kept = &second.routes.lookup(None, "/orders").unwrap().replicas[0];
        assert_eq!(kept.state.outstanding(), 1);
        // An invalid route leaves the deployment out.
        assert!(
            live.build(&endpoints("orders", &["a"]))
                .deployments
                .is_empty()
        );
    }
}
