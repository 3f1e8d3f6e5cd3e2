//! The CI gate (GATING.md §1.3).

pub mod stats;
