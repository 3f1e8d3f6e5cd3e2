//! The publisher of numbered workload events: bursts and steady paced runs over one MQTT
//! connection (QoS 1), each event recorded in the shared [`Ledger`] as acked or unknown.
//!
//! ## Mapping PubAcks back to seqs
//!
//! rumqttc assigns the packet id (pkid) of a QoS-1 publish itself, inside its event loop, and a
//! PubAck names only that pkid. Its event loop takes requests from the client channel strictly in
//! order, and for each publish it takes emits exactly one event: `Outgoing::Publish(pkid)` when it
//! writes the packet, or `Outgoing::AwaitAck(pkid)` when that pkid is still in flight (the broker
//! acked out of order with the window full, a *collision*); the held-back publish goes out,
//! announced by another `Outgoing::Publish(pkid)`, right after the `PubAck` that frees its pkid.
//! So one sender task hands events to rumqttc one at a time, noting each seq in a FIFO just before;
//! the event-loop task pairs each such event with the FIFO's head (`AckTracker`), and a PubAck
//! resolves the pkid to its seq. Acks may arrive in any order; the pkid → seq map does not care.
//!
//! Across a lost connection (the publisher uses clean sessions, so nothing is retransmitted):
//! events rumqttc buffered before the failure are paired first, publishes in flight become
//! unknown, rumqttc's held-back collision is dropped (it would wait forever for an ack the new
//! session never sends), and publishes rumqttc had taken but not yet sent (drained into its
//! `pending` list, which a clean session clears) are put back in front of the queue after the next
//! ConnAck, so every taken request still produces its event, in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet,
    QoS, Request,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant, MissedTickBehavior};

use super::ledger::{input_topic, pipeline_index, Ledger, SensorReading};
use crate::backend::now_us;
use crate::history::PacedRun;

/// Bound on connecting and on the first ConnAck: a loopback broker answers in milliseconds; one
/// that has not after 5 s is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alive of the MQTT connection: a dead broker is noticed within ~2 of these (rumqttc's
/// minimum is 1 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Pause between reconnection attempts, so a down broker is not hammered.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Wait for PubAcks after the last event was handed out: a loopback broker acks in well under
/// a millisecond; one that has not acked after 5 s leaves those events unknown.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra ack wait per outstanding event, so large bursts are not cut short: 1 ms each is a
/// floor of 1000 acks/s, far below what any broker does.
pub const ACK_TIME_PER_EVENT: Duration = Duration::from_millis(1);
/// Bound on a graceful MQTT DISCONNECT at stop; after it the connection is just dropped.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// rumqttc's in-flight window (its default): QoS-1 publishes sent and not yet acked.
pub const MAX_INFLIGHT: u16 = 100;
/// Seqs queued for the sender task: backpressure for paced runs when the broker is slow, while
/// a burst of this size is handed out without waiting.
pub const OUTBOUND_CAPACITY: usize = 1024;
/// Shortest pacing period: tokio's timer resolution. Faster rates send several events per tick.
const MIN_TICK: Duration = Duration::from_millis(1);
/// Capacity of rumqttc's request channel: 0 makes it a rendezvous, the capacity rumqttc's
/// docs recommend, so a publish is not buffered where a reconnect could lose sight of it.
const REQUEST_CHANNEL_CAPACITY: usize = 0;

/// One event handed to rumqttc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub seq: u64,
    pub sent_at_us: u64,
}

/// Pairs rumqttc's outgoing-publish events with the seqs handed to it, and PubAcks with seqs.
/// Pure state; fed in the order rumqttc yields its events.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    /// Handed to rumqttc, in request order, whose `Outgoing` event is not seen yet.
    requested: VecDeque<Sent>,
    /// Written to the network, awaiting PubAck, by pkid.
    inflight: HashMap<u16, Sent>,
    /// A publish rumqttc held back because its pkid was still in flight.
    collided: Option<(u16, Sent)>,
    /// The pkid whose next `Outgoing::Publish` is the collided publish going out, not a new one.
    resend: Option<u16>,
}

impl AckTracker {
    /// `sent` is about to be handed to rumqttc.
    pub fn requested(&mut self, sent: Sent) {
        self.requested.push_back(sent);
    }

    /// The last [`AckTracker::requested`] never reached rumqttc (its channel was closed).
    pub fn request_failed(&mut self) {
        self.requested.pop_back();
    }

    pub fn on_event(&mut self, event: &Event) -> Option<Sent> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if self.resend == Some(*pkid) {
                    self.resend = None;
                } else if let Some(sent) = self.requested.pop_front() {
                    self.inflight.insert(*pkid, sent);
                } else {
                    tracing::warn!(pkid, "outgoing publish with no seq handed out");
                }
                None
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                self.collided = self.requested.pop_front().map(|sent| (*pkid, sent));
                None
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let acked = self.inflight.remove(&ack.pkid);
                if let Some((pkid, sent)) = self.collided {
                    if pkid == ack.pkid {
                        // rumqttc writes the held-back publish right now, under this pkid.
                        self.collided = None;
                        self.inflight.insert(pkid, sent);
                        self.resend = Some(pkid);
                    }
                }
                acked
            }
            _ => None,
        }
    }

    /// The connection failed. What was in flight (and the held-back publish) will never be
    /// acked by this clean session: their outcome is unknown. Requests not yet seen stay queued.
    pub fn connection_lost(&mut self) -> usize {
        let mut unknown = self.inflight.len();
        self.inflight.clear();
        unknown += usize::from(self.collided.take().is_some());
        self.resend = None;
        unknown
    }
}

/// An event this publisher allocated whose outcome is not written to the ledger yet.
#[derive(Debug, Default)]
struct Unsettled {
    sent_at_us: Option<u64>,
    acked_at_us: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    tracker: AckTracker,
    /// By seq; an entry leaves when its window is settled into the ledger.
    unsettled: BTreeMap<u64, Unsettled>,
}

struct Inner {
    ledger: Arc<Mutex<Ledger>>,
    /// Every event goes to `<prefix><pipeline index>` instead of its pipeline's input topic
    /// (`harness bench`'s raw broker path: topics no pipeline reads).
    topic_prefix: Option<String>,
    next_seq: Arc<AtomicU64>,
    state: Mutex<State>,
    /// Counts PubAcks, to wake waiters.
    acks: watch::Sender<u64>,
}

/// Aborts the task when dropped, so no task outlives its owner.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T = ()>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Locks, ignoring poisoning: the data are tallies that stay consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Publishes workload events over one MQTT connection. Several publishers may share one ledger
/// and one seq counter.
pub struct Publisher {
    inner: Arc<Inner>,
    client: AsyncClient,
    outbound: mpsc::Sender<u64>,
    sender: AbortOnDrop,
    event_loop: AbortOnDrop,
}

/// A paced run in progress; [`TrafficHandle::stop`] ends it.
pub struct TrafficHandle {
    inner: Arc<Inner>,
    rate_per_s: u32,
    stop: oneshot::Sender<()>,
    task: AbortOnDrop<Paced>,
}

/// What the paced task did: the seqs it handed out and for how long it ran.
struct Paced {
    window: Option<Range<u64>>,
    elapsed: Duration,
}

/// What settling a window found.
struct Settled {
    unacked: usize,
    /// Events of the window handed to the MQTT client.
    sent: u64,
}

impl Publisher {
    /// Connects (clean session; with `login`'s user name and password, if any) and waits, at most [`CONNECT_TIMEOUT`], for the ConnAck.
    /// `next_seq` is the run-wide counter (start it at 1); seqs are taken from it, never reused.
    pub async fn connect(
        host: &str,
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
        ledger: Arc<Mutex<Ledger>>,
        next_seq: Arc<AtomicU64>,
    ) -> anyhow::Result<Publisher> {
        Self::connect_to(host, port, client_id, login, ledger, next_seq, None).await
    }

    /// [`Publisher::connect`], publishing every event on `<topic_prefix><its pipeline's index>`
    /// (when given) instead of its pipeline's input topic; the payloads are the same.
    pub async fn connect_to(
        host: &str,
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
        ledger: Arc<Mutex<Ledger>>,
        next_seq: Arc<AtomicU64>,
        topic_prefix: Option<String>,
    ) -> anyhow::Result<Publisher> {
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_inflight(MAX_INFLIGHT);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        event_loop.set_network_options(network_options());
        await_connack(&mut event_loop, host, port).await?;

        let inner = Arc::new(Inner {
            ledger,
            topic_prefix,
            next_seq,
            state: Mutex::new(State::default()),
            acks: watch::channel(0).0,
        });
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let event_loop = tokio::spawn(drive(event_loop, Arc::clone(&inner)));
        let sender = tokio::spawn(send_loop(client.clone(), Arc::clone(&inner), outbound_rx));
        Ok(Publisher {
            inner,
            client,
            outbound,
            sender: AbortOnDrop(sender),
            event_loop: AbortOnDrop(event_loop),
        })
    }

    /// Publishes `count` events (QoS 1) and waits, bounded ([`ACK_TIMEOUT`] plus
    /// [`ACK_TIME_PER_EVENT`] each), until the broker acked them all. Every event of the burst is
    /// then in the ledger, acked or (wait timed out) unacked. Returns the burst's seq window.
    pub async fn publish_burst(&self, count: u64) -> anyhow::Result<Range<u64>> {
        let deadline = Instant::now() + ack_wait(count);
        let start = self.inner.next_seq.fetch_add(count, Ordering::SeqCst);
        let window = start..start + count;
        {
            let mut state = lock(&self.inner.state);
            for seq in window.clone() {
                state.unsettled.insert(seq, Unsettled::default());
            }
        }
        let mut handed_out = 0;
        for seq in window.clone() {
            match timeout_at(deadline, self.outbound.send(seq)).await {
                Ok(Ok(())) => handed_out += 1,
                Ok(Err(_)) => break,
                Err(_) => break,
            }
        }
        let unacked = self.inner.settle(window.clone(), deadline).await.unacked;
        if handed_out < count {
            tracing::warn!(
                handed_out,
                count,
                "burst: not every event could be handed out"
            );
        }
        if unacked > 0 {
            tracing::warn!(
                unacked,
                ?window,
                "burst: events not acked in time are unknown"
            );
        }
        Ok(window)
    }

    /// Publishes `rate_per_s` events per second (a rate of 0 is taken as 1), evenly spaced,
    /// until [`TrafficHandle::stop`]: one event every `1 / rate_per_s` s, or, above 1000/s
    /// (tokio's timer ticks in milliseconds), `k` events every `k / rate_per_s` s ≥ 1 ms.
    ///
    /// Missed ticks use [`MissedTickBehavior::Delay`]: after a stall (tokio counts a tick as
    /// missed once it is more than 5 ms late) the schedule restarts from now, one period at a
    /// time. `Burst` would fire the whole backlog at once, a spike the broker never sees in
    /// steady traffic; `Skip` keeps the old phase, so the first tick after a stall can come
    /// sooner than one period. With `Delay` lost ticks are not made up: the rate achieved is the
    /// window's length over the run's duration, and that is what gets reported.
    ///
    /// Seqs are taken one at a time from the shared counter, so the window of a burst run
    /// concurrently lies inside the paced window; the ledger accounts for both.
    pub fn start_paced(&self, rate_per_s: u32) -> TrafficHandle {
        self.start_paced_with(rate_per_s, MissedTickBehavior::Delay)
    }

    /// [`Publisher::start_paced`] with another handling of missed ticks: `harness bench` uses
    /// [`MissedTickBehavior::Burst`], an open-loop load that makes up the ticks a stall of the
    /// harness cost, so the offered rate is the target unless the broker holds the publisher back.
    pub fn start_paced_with(&self, rate_per_s: u32, missed: MissedTickBehavior) -> TrafficHandle {
        let (period, per_tick) = pacing(rate_per_s);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(pace(
            Arc::clone(&self.inner),
            self.outbound.clone(),
            (period, per_tick, missed),
            stop_rx,
        ));
        TrafficHandle {
            inner: Arc::clone(&self.inner),
            rate_per_s,
            stop,
            task: AbortOnDrop(task),
        }
    }

    /// Disconnects (gracefully, bounded by [`DISCONNECT_TIMEOUT`]) and ends its tasks. Events
    /// still unsettled stay out of the ledger.
    pub async fn stop(self) {
        let Publisher {
            client,
            mut event_loop,
            sender,
            ..
        } = self;
        drop(sender);
        let deadline = Instant::now() + DISCONNECT_TIMEOUT;
        if timeout_at(deadline, client.disconnect()).await.is_ok() {
            let _ = timeout_at(deadline, &mut event_loop.0).await;
        }
    }
}

impl TrafficHandle {
    /// Stops the paced run and waits, bounded, for the acks of what it published; every event of
    /// the run is then in the ledger, and the run itself (requested and achieved rate) in its
    /// history. Returns the run (its seqs are empty if it sent nothing).
    pub async fn stop(self) -> anyhow::Result<PacedRun> {
        let TrafficHandle {
            inner,
            rate_per_s,
            stop,
            mut task,
        } = self;
        let _ = stop.send(());
        let paced = (&mut task.0).await.context("paced publisher task failed")?;
        let window = paced.window.unwrap_or_else(|| {
            let next = inner.next_seq.load(Ordering::SeqCst);
            next..next
        });
        let outstanding = {
            let state = lock(&inner.state);
            state
                .unsettled
                .range(window.clone())
                .filter(|(_, u)| u.acked_at_us.is_none())
                .count()
        };
        let deadline = Instant::now() + ack_wait(outstanding as u64);
        let settled = inner.settle(window.clone(), deadline).await;
        if settled.unacked > 0 {
            tracing::warn!(
                unacked = settled.unacked,
                ?window,
                "paced: events not acked in time are unknown"
            );
        }
        let run = PacedRun {
            from_seq: window.start,
            to_seq: window.end,
            requested_per_s: rate_per_s,
            sent: settled.sent,
            elapsed_us: paced.elapsed.as_micros() as u64,
        };
        lock(&inner.ledger).paced_run(run.clone());
        Ok(run)
    }
}

impl Inner {
    /// Waits until every event of `window` this publisher allocated is acked, or `deadline`;
    /// then writes them all to the ledger.
    async fn settle(&self, window: Range<u64>, deadline: Instant) -> Settled {
        let mut acks = self.acks.subscribe();
        // Acks are never withdrawn, so the scan resumes at the first seq not yet acked.
        let mut cursor = window.start;
        loop {
            acks.borrow_and_update();
            let first_unacked = {
                let state = lock(&self.state);
                state
                    .unsettled
                    .range(cursor..window.end)
                    .find(|(_, u)| u.acked_at_us.is_none())
                    .map(|(&seq, _)| seq)
            };
            match first_unacked {
                None => break,
                Some(seq) => cursor = seq,
            }
            match timeout_at(deadline, acks.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the event loop is gone.
                Ok(Err(_)) | Err(_) => break,
            }
        }

        let settled: Vec<(u64, Unsettled)> = {
            let mut state = lock(&self.state);
            let seqs: Vec<u64> = state.unsettled.range(window).map(|(&s, _)| s).collect();
            seqs.into_iter()
                .filter_map(|seq| state.unsettled.remove(&seq).map(|u| (seq, u)))
                .collect()
        };
        let now = now_us();
        let mut ledger = lock(&self.ledger);
        let mut out = Settled {
            unacked: 0,
            sent: 0,
        };
        for (seq, unsettled) in settled {
            out.unacked += usize::from(unsettled.acked_at_us.is_none());
            out.sent += u64::from(unsettled.sent_at_us.is_some());
            // Never sent (abandoned): its send time is the moment it was given up.
            ledger.published(
                seq,
                unsettled.sent_at_us.unwrap_or(now),
                unsettled.acked_at_us,
            );
        }
        out
    }

    fn on_event(&self, event: &Event) {
        let mut state = lock(&self.state);
        let Some(sent) = state.tracker.on_event(event) else {
            return;
        };
        let acked_at_us = now_us();
        match state.unsettled.get_mut(&sent.seq) {
            Some(unsettled) => unsettled.acked_at_us = Some(acked_at_us),
            // Its window was settled already (as unacked): a late ack upgrades it.
            None => lock(&self.ledger).published(sent.seq, sent.sent_at_us, Some(acked_at_us)),
        }
        drop(state);
        self.acks.send_modify(|n| *n += 1);
    }
}

fn network_options() -> NetworkOptions {
    let mut network = NetworkOptions::new();
    // Small packets, latency measured: no Nagle delay.
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    network
}

/// The pacing period and the events sent per tick for `rate_per_s`.
fn pacing(rate_per_s: u32) -> (Duration, u32) {
    let rate_per_s = rate_per_s.max(1);
    let ticks_per_s = u32::try_from(Duration::from_secs(1).as_nanos() / MIN_TICK.as_nanos())
        .expect("MIN_TICK divides a second into few ticks");
    let per_tick = rate_per_s.div_ceil(ticks_per_s);
    (
        Duration::from_secs(u64::from(per_tick)) / rate_per_s,
        per_tick,
    )
}

fn ack_wait(outstanding: u64) -> Duration {
    let per_event = u32::try_from(outstanding).unwrap_or(u32::MAX);
    ACK_TIMEOUT.saturating_add(ACK_TIME_PER_EVENT.saturating_mul(per_event))
}

/// Polls `event_loop` until the broker's ConnAck, retrying refused connections, for at most
/// [`CONNECT_TIMEOUT`]. Used by the publisher and the collector.
pub(crate) async fn await_connack(
    event_loop: &mut EventLoop,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut last_error: Option<ConnectionError> = None;
    loop {
        match timeout_at(deadline, event_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                last_error = Some(error);
                if timeout_at(deadline, tokio::time::sleep(RECONNECT_BACKOFF))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    match last_error {
        Some(error) => bail!(
            "no MQTT ConnAck from {host}:{port} within {} ms: {error}",
            CONNECT_TIMEOUT.as_millis()
        ),
        None => bail!(
            "no MQTT ConnAck from {host}:{port} within {} ms",
            CONNECT_TIMEOUT.as_millis()
        ),
    }
}

/// The event-loop task: polls rumqttc, feeds the tracker, reconnects after failures.
async fn drive(mut event_loop: EventLoop, inner: Arc<Inner>) {
    // Publishes rumqttc took but never wrote before a failure, to send first after the ConnAck.
    let mut unsent: Vec<Request> = Vec::new();
    let mut connected = true;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // A clean session: rumqttc has cleared its pending list; nothing is retransmitted.
                for request in unsent.drain(..).rev() {
                    event_loop.pending.push_front(request);
                }
                tracing::info!("publisher reconnected");
                connected = true;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(event) => inner.on_event(&event),
            Err(error) => {
                // Events rumqttc buffered before the failure come first.
                let buffered: Vec<Event> = event_loop.state.events.drain(..).collect();
                for event in &buffered {
                    inner.on_event(event);
                }
                event_loop.state.collision = None;
                // Never-written publishes (pkid 0) are kept; unacked ones (pkid set) would be
                // retransmissions, which a clean session does not make.
                unsent.extend(event_loop.pending.drain(..).filter(
                    |request| matches!(request, Request::Publish(publish) if publish.pkid == 0),
                ));
                let unknown = lock(&inner.state).tracker.connection_lost();
                if connected {
                    tracing::warn!(%error, unknown, "publisher lost its MQTT connection");
                } else {
                    tracing::debug!(%error, "publisher reconnect failed");
                }
                connected = false;
                tokio::time::sleep(RECONNECT_BACKOFF).await;
            }
        }
    }
}

/// The sender task: hands seqs to rumqttc one at a time, in order, noting each in the tracker.
async fn send_loop(client: AsyncClient, inner: Arc<Inner>, mut outbound: mpsc::Receiver<u64>) {
    while let Some(seq) = outbound.recv().await {
        let sent_at_us = now_us();
        {
            let mut state = lock(&inner.state);
            match state.unsettled.get_mut(&seq) {
                Some(unsettled) => unsettled.sent_at_us = Some(sent_at_us),
                // Its window was settled before it could be sent: abandoned, stays unknown.
                None => continue,
            }
            state.tracker.requested(Sent { seq, sent_at_us });
        }
        let payload = SensorReading::new(seq, sent_at_us).to_json();
        let topic = match &inner.topic_prefix {
            Some(prefix) => format!("{prefix}{}", pipeline_index(seq)),
            None => input_topic(seq),
        };
        if let Err(error) = client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
        {
            lock(&inner.state).tracker.request_failed();
            tracing::warn!(%error, "publisher: MQTT client closed");
            return;
        }
    }
}

/// The paced task. Returns the window of the seqs it handed out and how long it ran (monotonic).
async fn pace(
    inner: Arc<Inner>,
    outbound: mpsc::Sender<u64>,
    (period, per_tick, missed): (Duration, u32, MissedTickBehavior),
    mut stop: oneshot::Receiver<()>,
) -> Paced {
    let started = Instant::now();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(missed);
    let mut window: Option<Range<u64>> = None;
    'run: loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = interval.tick() => {}
        }
        for _ in 0..per_tick {
            let permit = tokio::select! {
                biased;
                _ = &mut stop => break 'run,
                permit = outbound.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'run,
                },
            };
            let seq = inner.next_seq.fetch_add(1, Ordering::SeqCst);
            lock(&inner.state)
                .unsettled
                .insert(seq, Unsettled::default());
            permit.send(seq);
            window = Some(match window {
                Some(w) => w.start..seq + 1,
                None => seq..seq + 1,
            });
        }
    }
    Paced {
        window,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::PubAck;

    fn sent(seq: u64) -> Sent {
        Sent {
            seq,
            sent_at_us: seq * 100,
        }
    }

    fn publish(pkid: u16) -> Event {
        Event::Outgoing(Outgoing::Publish(pkid))
    }

    fn puback(pkid: u16) -> Event {
        Event::Incoming(Packet::PubAck(PubAck::new(pkid)))
    }

    #[test]
    fn acks_in_any_order_resolve_to_their_seqs() {
        let mut tracker = AckTracker::default();
        for seq in [10, 11, 12] {
            tracker.requested(sent(seq));
        }
        assert_eq!(tracker.on_event(&publish(1)), None);
        assert_eq!(tracker.on_event(&publish(2)), None);
        assert_eq!(tracker.on_event(&puback(2)), Some(sent(11)));
        assert_eq!(tracker.on_event(&publish(3)), None);
        assert_eq!(tracker.on_event(&puback(3)), Some(sent(12)));
        assert_eq!(tracker.on_event(&puback(1)), Some(sent(10)));
        // A repeated or unknown ack resolves to nothing.
        assert_eq!(tracker.on_event(&puback(1)), None);
    }

    #[test]
    fn collision_resend_is_not_a_new_request() {
        let mut tracker = AckTracker::default();
        for seq in [1, 2, 3] {
            tracker.requested(sent(seq));
        }
        tracker.on_event(&publish(1));
        // pkid 1 is still in flight: rumqttc holds seq 2 back.
        tracker.on_event(&Event::Outgoing(Outgoing::AwaitAck(1)));
        // The ack of pkid 1 is seq 1's; seq 2 goes out under pkid 1 right after.
        assert_eq!(tracker.on_event(&puback(1)), Some(sent(1)));
        tracker.on_event(&publish(1));
        tracker.on_event(&publish(2));
        assert_eq!(tracker.on_event(&puback(2)), Some(sent(3)));
        assert_eq!(tracker.on_event(&puback(1)), Some(sent(2)));
    }

    #[test]
    fn connection_loss_makes_inflight_unknown_and_keeps_the_queue() {
        let mut tracker = AckTracker::default();
        for seq in [1, 2, 3, 4] {
            tracker.requested(sent(seq));
        }
        tracker.on_event(&publish(1));
        tracker.on_event(&publish(2));
        assert_eq!(tracker.connection_lost(), 2);
        // The new session may reuse pkid 1 for seq 3.
        tracker.on_event(&publish(1));
        assert_eq!(tracker.on_event(&puback(1)), Some(sent(3)));
        assert_eq!(tracker.on_event(&puback(2)), None);
        tracker.request_failed();
        assert!(tracker.requested.is_empty());
    }

    #[test]
    fn pacing_period() {
        assert_eq!(pacing(200), (Duration::from_millis(5), 1));
        assert_eq!(pacing(1000), (Duration::from_millis(1), 1));
        assert_eq!(pacing(2500), (Duration::from_micros(1200), 3));
        assert_eq!(pacing(0), (Duration::from_secs(1), 1));
        assert!(pacing(u32::MAX).0 >= MIN_TICK);
        assert_eq!(
            ack_wait(300),
            Duration::from_secs(5) + Duration::from_millis(300)
        );
    }
}
