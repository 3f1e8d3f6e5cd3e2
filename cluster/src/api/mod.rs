//! The cluster's HTTP API as seen from outside: wire types only, shared with the harness.

pub mod model;
