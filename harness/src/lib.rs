//! The harness: stands up the reference cluster on a backend, runs phases of typed steps
//! against it (faults and observations), and reports what happened, to the millisecond.
//!
//! Flow of a step: phase file → [`phase`] (parsed, validated [`step::Step`]) → [`runner`] →
//! [`backend`] (fault) or [`probe`] (observation) → [`record`] → [`report`]. Traffic and faults
//! are also written to the run's [`history`], which the [`check`]ers judge.
//!
//! Architecture invariant: the harness reaches the cluster only over its network API and the
//! backend's process/container controls; from `cluster` it imports wire types only.

pub mod backend;
pub mod bench;
pub mod check;
pub mod cli;
pub mod dialect;
pub mod figure;
pub mod gate;
pub mod history;
pub mod metrics;
pub mod phase;
pub mod poll;
pub mod probe;
pub mod profile;
pub mod progress;
pub mod record;
pub mod report;
pub mod runner;
pub mod scale;
pub mod step;
pub mod topology;
pub mod traffic;

/// Exit codes: each failure cause has its own.
pub mod exit {
    /// Every phase passed.
    pub const PASS: u8 = 0;
    /// At least one phase failed.
    pub const PHASE_FAILED: u8 = 1;
    /// Bad input (flags, phase files), refused before any node started.
    pub const INVALID_INPUT: u8 = 2;
    /// The CI gate failed (a timing over its threshold).
    pub const GATE_FAILED: u8 = 3;
    /// The harness itself failed (could not build, spawn, write reports).
    pub const HARNESS_ERROR: u8 = 4;
    /// Interrupted by Ctrl-C.
    pub const INTERRUPTED: u8 = 130;
}
