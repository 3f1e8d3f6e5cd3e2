//! The reference cluster: Raft coordinators (openraft), and later workers and the MQTT broker.
//!
//! The binary `cluster` is a thin shell over this library: it parses flags and calls
//! [`coordinator::run`] with an already-bound listener and a shutdown future, so tests can run
//! nodes in-process on port 0 as easily as the harness runs them as OS processes.

pub mod api;
pub mod auth;
pub mod broker;
pub mod coordinator;
pub mod events;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod raft;
pub mod ui;
pub mod worker;
