//! The arguments of `fill_log`: load on the coordinators' Raft log, for the scaling runs
//! (`harness scale`: election time against the log's length).

use serde::Deserialize;

/// Writes in flight at once by default: enough for openraft to batch many entries per append
/// (one fsync each), few enough that a loaded 2-core machine keeps answering heartbeats.
pub const FILL_CONCURRENCY: u32 = 32;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillLogArgs {
    /// The leader's last log index to reach: writes commit the difference, none when the log
    /// is that long already (`--fill-entries` overrides it for the whole run).
    pub entries: u64,
    /// Writes in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_concurrency() -> u32 {
    FILL_CONCURRENCY
}
