//! Pipelines: the VPL subset, its evaluator, and what the cluster runs per event.

pub mod runtime;
pub mod vpl;
