//! The berth controller (Koupleless' ModuleController): it keeps the desired
//! state of a fleet — ModuleDeployments and the bases that registered — in a
//! [`store::Store`], and reconciles bases toward it.
//!
//! This crate so far holds the store: the [`store::Store`] trait and its
//! embedded [`store::RedbStore`] backend. The API server, reconcilers,
//! scheduler and rollout build on it.

pub mod store;
