//! The coordinator's timestamped event log: what this node observed (role, leader, applied
//! commands) and when, by wall clock, in a bounded in-memory ring.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::model::{ClusterEvent, ClusterEventKind, EventsPage};

/// Events kept per node. At one event per election or command, 10k covers any test run; older
/// events are dropped and a reader that asks for them is told (`truncated`).
pub const MAX_EVENTS: usize = 10_000;

pub struct EventLog {
    node_id: u64,
    inner: Mutex<Ring>,
    /// Told of every event as it is recorded (the node's metrics).
    observer: OnceLock<Observer>,
}

/// A callback told of every recorded event.
pub type Observer = Box<dyn Fn(&ClusterEventKind) + Send + Sync>;

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<ClusterEvent>,
    last_seq: u64,
}

impl EventLog {
    pub fn new(node_id: u64) -> Self {
        EventLog {
            node_id,
            inner: Mutex::new(Ring::default()),
            observer: OnceLock::new(),
        }
    }

    /// Tell `observer` of every event recorded from now on (set once; later calls are ignored).
    pub fn set_observer(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// Record an event now.
    pub fn push(&self, kind: ClusterEventKind) {
        self.observe(&kind);
        self.record(kind);
    }

    /// Tell the observer of `kind` only. The state machine does this while it still holds the
    /// state's write lock, so whoever reads the state and the metrics under its read lock sees
    /// both or neither; it records the event afterwards.
    pub fn observe(&self, kind: &ClusterEventKind) {
        if let Some(observe) = self.observer.get() {
            observe(kind);
        }
    }

    /// Record an event now without telling the observer (it was told already).
    pub fn record(&self, kind: ClusterEventKind) {
        let ts_ms = now_ms();
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.last_seq += 1;
        let event = ClusterEvent {
            seq: ring.last_seq,
            ts_ms,
            node_id: self.node_id,
            kind,
        };
        tracing::info!(seq = event.seq, ?event.kind, "cluster event");
        if ring.events.len() == MAX_EVENTS {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
    }

    /// Events with `seq > since`, oldest first.
    pub fn since(&self, since: u64) -> EventsPage {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first_kept = ring.events.front().map_or(ring.last_seq + 1, |e| e.seq);
        EventsPage {
            node_id: self.node_id,
            events: ring
                .events
                .iter()
                .filter(|e| e.seq > since)
                .cloned()
                .collect(),
            last_seq: ring.last_seq,
            truncated: since + 1 < first_kept,
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_returns_newer_events_and_reports_truncation() {
        let log = EventLog::new(7);
        for term in 1..=(MAX_EVENTS as u64 + 5) {
            log.push(ClusterEventKind::LeaderChanged {
                term,
                leader: Some(1),
            });
        }
        let page = log.since(MAX_EVENTS as u64);
        assert_eq!(page.events.len(), 5);
        assert_eq!(page.events[0].seq, MAX_EVENTS as u64 + 1);
        assert!(!page.truncated);
        let all = log.since(0);
        assert_eq!(all.events.len(), MAX_EVENTS);
        assert!(all.truncated, "the first 5 events were dropped");
    }
}
