//! The berth base: one long-running process hosting many modules.
//!
//! A base is a [`Runtime`](berth_runtime::Runtime) plus what is around it:
//!
//! - the **ingress** ([`ingress`]): a hyper HTTP server that routes each
//!   request by host and path prefix ([`router`]) to a module, picks the
//!   version by the module's traffic [`rules`], and streams the module's
//!   response back; it also serves module-to-module calls in-process;
//! - the **ops agent** ([`ops`]): a JSON HTTP API (default
//!   `127.0.0.1:1238`, Arklet's port) to install, uninstall, switch and list
//!   modules, set rules, read logs and metrics, and check health;
//! - the **installed set** ([`state`]): what is installed, with rules and
//!   switch history, kept in a redb database in the data directory so a
//!   restarted base serves the same modules again, loading their code from
//!   the compile cache;
//! - **observability**: Prometheus [`metrics`], per-module [`logs`],
//!   per-version recent stats ([`VersionStats`]), and optionally a span per
//!   request hop exported with OTLP ([`otlp`]).
//!
//! [`Base`] is the library entry point: a base team can build its own base
//! binary around it, adding capabilities with [`Base::builder`]. [`Base::start`] binds both listeners and returns a
//! [`RunningBase`] handle.

mod admission;
mod agent;
pub mod arklet;
pub mod auth;
mod base;
mod builder;
mod config;
mod dispatcher;
mod error;
pub mod ingress;
mod instrument;
mod lifecycle;
mod listener;
pub mod logs;
pub mod metrics;
pub mod ops;
pub mod otlp;
mod registry;
pub use stats::VersionStats;
pub mod router;
/// The traffic rules engine, shared with the gateway ([`berth_rules`]).
pub use berth_rules::rules;
mod server;
mod source;
pub mod state;
mod stats;

pub use base::Base;
pub use builder::BaseBuilder;
pub use config::{BaseConfig, ControllerLink};
pub use error::{BaseError, OpsError};
pub use server::RunningBase;
