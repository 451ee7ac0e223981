//! berth's request-routing engine, one crate shared by the base and the
//! gateway so that both decide exactly alike:
//!
//! - [`routes`]: which module a request goes to, by host and path prefix
//!   (route normalisation and the most-specific-first table);
//! - [`rules`]: which version (and traffic cell) of that module serves it.

pub mod routes;
pub mod rules;

pub use routes::{RouteTable, normalize, path_matches};
pub use rules::{CompiledRules, Decision, RequestView};
