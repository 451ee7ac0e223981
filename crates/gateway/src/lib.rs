//! The berth fleet gateway: one HTTP front door for every base.
//!
//! A gateway watches the controller's endpoint table (a revision-based long
//! poll, like a base's assignments) and, for each request:
//!
//! 1. routes it by host and path prefix to a deployment, with the base
//!    router's exact semantics ([`berth_rules::routes`]);
//! 2. decides the version and traffic cell by the deployment's rules
//!    ([`berth_rules::rules`]), and pins the version on the forwarded
//!    request (honoured by bases that trust this gateway's secret);
//! 3. picks a replica among the ready, non-draining, non-ejected ones of
//!    that version and cell, by least outstanding requests over two random
//!    choices ([`balance`]);
//! 4. forwards it to the base over HTTP/2, on one connection per listener
//!    thread and base (or pooled HTTP/1 connections; [`upstream`]), propagating the request id and trace context; on a
//!    connect error or a reset before any response byte it ejects the
//!    replica (with back-off) and retries once on another; a base's "no
//!    module here" 404 (a replica removed before the gateway's table
//!    caught up) sends it on to each replica not tried yet ([`proxy`]).
//!
//! A deployment with no ready replica has its requests held for a while
//! and activated from zero ([`hold`]).
//!
//! It serves its own Prometheus metrics at `/metrics` ([`metrics`]) and
//! reports each deployment's load to the controller every
//! `--load-report-interval` (250 ms by default, [`report`]).
//!
//! [`Gateway::start`] binds and runs it; [`GatewayConfig`] holds its settings.

pub mod balance;
mod config;
pub mod hold;
pub mod metrics;
pub mod proxy;
pub mod report;
mod server;
pub mod table;
pub mod upstream;
mod watch;

pub use config::{
    BaseProtocol, DEFAULT_REPORT_INTERVAL, GatewayConfig, GatewayError, MAX_REPORT_INTERVAL,
    MIN_REPORT_INTERVAL, check_report_interval,
};
pub use server::{Gateway, RunningGateway};
