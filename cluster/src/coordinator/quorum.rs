//! Is this coordinator in touch with a quorum right now?
//!
//! openraft 0.9 never steps a leader down by itself when it loses its quorum, so the
//! coordinator asks this before every decision (liveness verdicts, moves) and before granting a
//! worker its lease. A leader is in touch while a quorum acknowledged it within the window
//! (`RaftMetrics::millis_since_quorum_ack`, turned into an instant when observed, so a frozen
//! process does not read an old, small value as fresh after it resumes); a follower while it
//! accepted an AppendEntries from the leader within the window (the leader and this follower
//! are a quorum of three).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::raft::Raft;

#[derive(Debug)]
pub struct QuorumContact {
    window: Duration,
    last: Mutex<Option<Instant>>,
}

impl QuorumContact {
    /// `window`: how old the last contact may be (see ARCHITECTURE.md, the lease inequality).
    pub fn new(window: Duration) -> Self {
        QuorumContact {
            window,
            last: Mutex::new(None),
        }
    }

    fn touch(&self, at: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|l| l < at) {
            *last = Some(at);
        }
    }

    /// A follower accepted an AppendEntries (heartbeat or entries) from the current leader.
    pub fn heard_from_leader(&self) {
        self.touch(Instant::now());
    }

    /// Contact within the window.
    pub fn in_touch(&self) -> bool {
        self.since_contact().is_some_and(|d| d <= self.window)
    }

    /// Time since the last contact, if there ever was one.
    pub fn since_contact(&self) -> Option<Duration> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.map(|l| l.elapsed())
    }

    /// Leader side: follow openraft's metrics and record when a quorum last acknowledged us.
    pub async fn watch_leader(self: std::sync::Arc<Self>, raft: Raft) {
        let mut rx = raft.metrics();
        loop {
            let acked = {
                let m = rx.borrow_and_update();
                match (m.state, m.millis_since_quorum_ack) {
                    (ServerState::Leader, Some(ms)) => {
                        Instant::now().checked_sub(Duration::from_millis(ms))
                    }
                    _ => None,
                }
            };
            if let Some(at) = acked {
                self.touch(at);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
