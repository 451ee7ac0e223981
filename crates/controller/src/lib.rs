//! The berth controller (Koupleless' ModuleController): it keeps the desired
//! state of a fleet — ModuleDeployments and the bases that registered — in a
//! [`store::Store`], and reconciles bases toward it.
//!
//! - [`store`]: the [`store::Store`] trait (etcd-shaped: revisions,
//!   compare-and-swap, watch) and its embedded [`store::RedbStore`] backend
//!   (shared as [`store::SharedStore`], so the rest names no backend);
//!   [`etcd`]: the same store on an etcd cluster;
//! - [`resources`]: typed ModuleDeployments over it; [`bases`]: heartbeats
//!   and readiness; [`events`]: what happened to each deployment;
//! - [`scheduler`] (placement), [`rollout`] (batches) and [`status`]
//!   (replica counts, conditions) — pure functions of the state;
//! - [`reconciler`]: the loop that runs them, publishes each base's
//!   assignments and records events; [`metrics`]: its Prometheus view;
//! - [`code`]: each deployed module compiled once, for every base;
//! - [`endpoints`]: the table gateways route by, and the drain of removed
//!   replicas;
//! - [`artifact`]: the check of a module's artifact at apply;
//! - [`load`]: the gateways' load reports; [`scaler`]: scale to zero,
//!   activation and [`autoscale`] decisions made from them;
//! - [`api`]: the HTTP API bases and the CLI talk to;
//! - [`leader`]: the election among controllers sharing one store;
//!   [`forward`]: followers forwarding writes to the leader;
//! - [`copy`]: the whole state of one store into another (`berth store copy`);
//! - [`start`]: `--store` and [`start::Controller::start`], the one entry
//!   point that opens the store and binds the API.

pub mod api;
pub mod artifact;
pub mod auth;
pub mod autoscale;
pub mod bases;
pub mod code;
pub mod copy;
pub mod endpoints;
pub mod etcd;
pub mod events;
pub mod forward;
pub mod leader;
pub mod load;
pub mod metrics;
pub mod reconciler;
pub mod resources;
pub mod rollout;
pub mod scaler;
pub mod scheduler;
pub mod start;
pub mod status;
pub mod store;
pub mod tls;
