//! The worker's lease: it may run pipelines only until `lease_ms` after sending the last
//! heartbeat that a coordinator in touch with its quorum acknowledged with a lease. The
//! coordinators' flags guarantee (checked at their start-up) that no leader can declare this
//! worker dead, and so move its pipelines, before that instant. A fenced worker begins a clean
//! stop one stop budget before its lease ends and drops whatever is left when it ends.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The lease a coordinator granted, as this worker keeps it.
#[derive(Debug, Default)]
pub struct Lease {
    state: Mutex<State>,
    /// Renewed or changed: the fence re-reads it; a renewal after a lapse restarts pipelines.
    pub changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    until: Option<Instant>,
    /// Length of the last lease granted (it sets the stop budget).
    length: Duration,
}

/// The part of a lease spent stopping: an eighth, at most 500 ms (the coordinators use the
/// same in their start-up check).
pub fn stop_budget(length: Duration) -> Duration {
    (length / 8).min(Duration::from_millis(500))
}

impl Lease {
    fn get(&self) -> State {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heartbeat sent at `sent_at` was acknowledged with a lease of `length`. Returns true
    /// when this revived a lease that had lapsed (or never existed).
    pub fn renew(&self, sent_at: Instant, length: Duration) -> bool {
        let revived = !self.valid();
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let until = sent_at + length;
            if s.until.is_none_or(|u| u < until) {
                s.until = Some(until);
            }
            s.length = length;
        }
        self.changed.notify_waiters();
        revived
    }

    /// When pipelines must begin stopping, and when they must be gone.
    pub fn fence_times(&self) -> Option<(Instant, Instant)> {
        let s = self.get();
        s.until.map(|u| (u - stop_budget(s.length), u))
    }

    /// Pipelines may run (and start) now.
    pub fn valid(&self) -> bool {
        self.fence_times()
            .is_some_and(|(begin, _)| Instant::now() < begin)
    }

    /// Time left before the stop must begin (zero when lapsed).
    pub fn remaining(&self) -> Duration {
        self.fence_times().map_or(Duration::ZERO, |(begin, _)| {
            begin.saturating_duration_since(Instant::now())
        })
    }
}
