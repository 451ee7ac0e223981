//! Wire types between the controller and the fleet gateway: the endpoint
//! table gateways watch (`GET /v1/endpoints?known=REV`), the load report
//! they send back every report interval (250 ms by default), and the
//! headers a gateway pins a version with on the request it forwards to a
//! base.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Route, TrafficRules};

/// The version a gateway chose for a request, for the base to serve it.
/// A base honours it only together with [`GATEWAY_SECRET_HEADER`] carrying
/// the secret it was started with; from anyone else it is ignored.
pub const PIN_VERSION_HEADER: &str = "x-berth-version";

/// The shared secret a trusted gateway sends with [`PIN_VERSION_HEADER`].
/// A base removes it before a module sees the request.
pub const GATEWAY_SECRET_HEADER: &str = "x-berth-gateway-secret";

/// Set by a base on its own 404 when no module is installed at the path.
/// A gateway that routed there had a stale view (the replica was removed
/// between its last table update and the request): it sends the request to
/// another replica instead of passing the 404 on.
pub const NOT_HERE_HEADER: &str = "x-berth-not-here";

/// Every deployment gateways route to, with its replicas
/// (`GET /v1/endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTable {
    /// The deployments, by name.
    pub deployments: Vec<DeploymentEndpoints>,
    /// Names this table: a watch that passes it back as `known` is
    /// answered only once the table differs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
}

/// One deployment as a gateway routes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEndpoints {
    /// The ModuleDeployment's name.
    pub name: String,
    /// Its module's name.
    pub module: String,
    /// Where its traffic comes from (the module's route on every base).
    #[serde(default)]
    pub route: Route,
    /// Its traffic rules (versions and traffic cells), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<TrafficRules>,
    /// Its replicas, by base name.
    pub replicas: Vec<Endpoint>,
}

/// One replica: a base running (or assigned) the deployment's module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The base's name.
    pub base: String,
    /// The base's ingress, `host:port`.
    pub address: String,
    /// The version assigned to it.
    pub version: String,
    /// The versions of the module the base reports installed (during a
    /// version change, the old and the new one).
    #[serde(default)]
    pub versions: Vec<String>,
    /// The base is Ready and runs some version of the module.
    pub ready: bool,
    /// The replica is being removed: send it no new requests.
    #[serde(default)]
    pub draining: bool,
    /// The base's labels (its base group; traffic cells select on them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What a gateway reports every report interval (`berth gateway
/// --load-report-interval`, 250 ms by default)
/// (`PUT /v1/gateways/{gateway}/load`): per deployment, its traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayLoad {
    /// Deployment name → its load at this gateway.
    pub deployments: BTreeMap<String, DeploymentLoad>,
}

/// One deployment's load at one gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentLoad {
    /// Requests forwarded and not yet answered.
    pub in_flight: u64,
    /// Requests per second over the last report interval.
    pub rps: f64,
    /// Requests held waiting for a replica (scale from zero).
    pub held: u64,
}
