//! A generation's state: the inputs received and not yet acked, in receive order, with the
//! outputs each still waits for, and the ack and publish jobs they produce (see the parent
//! module's doc for the delivery rules).

use super::*;
/// One input, from receipt until its ack is handed to rumqttc.
pub(super) struct Input {
    pub(super) publish: Publish,
    /// Outputs not yet acknowledged by the broker.
    pub(super) pending_outputs: usize,
    pub(super) verdict: Verdict,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Accepted,
    Rejected,
    /// Arrived while stopping: neither processed nor acked, left for the next owner.
    Held,
}

/// A request for the input connection, queued while its channel is full (order matters: acks
/// go out in receive order).
pub(super) enum InputJob {
    Subscribe,
    Ack(Publish),
    Disconnect,
}

/// An output waiting for room in the output connection's channel, in production order.
pub(super) struct OutputJob {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
    /// Sequence number of the input that produced it.
    pub(super) input: u64,
}

/// Everything of one pair of connections, dropped with them.
pub(super) struct Generation {
    pub(super) input: AsyncClient,
    pub(super) output: AsyncClient,
    /// Received inputs not yet acked, in receive order; the front has sequence `first_seq`.
    pub(super) inputs: VecDeque<Input>,
    pub(super) first_seq: u64,
    pub(super) input_jobs: VecDeque<InputJob>,
    pub(super) output_jobs: VecDeque<OutputJob>,
    /// Inputs of the outputs handed to rumqttc, waiting to learn their packet id.
    pub(super) unsent: VecDeque<u64>,
    /// Packet id → inputs of the outputs in flight with it (more than one only after a packet
    /// id collision, which needs a broker acking out of order).
    pub(super) inflight: HashMap<u16, VecDeque<u64>>,
    /// Packet id of an output rumqttc holds back after a collision.
    pub(super) collided: Option<u16>,
    pub(super) acks_queued: u64,
    pub(super) acks_written: u64,
    pub(super) subscribed: bool,
    pub(super) output_connected: bool,
    pub(super) stopping: bool,
    /// While stopping: when to give up waiting for in-flight inputs.
    pub(super) drain_deadline: Option<Instant>,
    pub(super) disconnect_queued: bool,
    /// After DISCONNECT went out: when to stop waiting for the broker to close.
    pub(super) linger_deadline: Option<Instant>,
}

impl Generation {
    pub(super) fn new(input: AsyncClient, output: AsyncClient) -> Self {
        Generation {
            input,
            output,
            inputs: VecDeque::new(),
            first_seq: 0,
            input_jobs: VecDeque::new(),
            output_jobs: VecDeque::new(),
            unsent: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
            acks_queued: 0,
            acks_written: 0,
            subscribed: false,
            output_connected: false,
            stopping: false,
            drain_deadline: None,
            disconnect_queued: false,
            linger_deadline: None,
        }
    }

    /// Hands queued requests to rumqttc, in order, until a channel is full (rumqttc drains it
    /// as its event loop runs; the rest goes on the next turn).
    pub(super) fn flush(&mut self, topics: &[String]) {
        while let Some(job) = self.input_jobs.front() {
            let sent = match job {
                InputJob::Subscribe => {
                    let filters = topics
                        .iter()
                        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                    self.input.try_subscribe_many(filters)
                }
                InputJob::Ack(publish) => self.input.try_ack(publish),
                InputJob::Disconnect => self.input.try_disconnect(),
            };
            if sent.is_err() {
                break;
            }
            self.input_jobs.pop_front();
        }
        while let Some(job) = self.output_jobs.front_mut() {
            let payload = std::mem::take(&mut job.payload);
            let topic = job.topic.clone();
            match self
                .output
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => {
                    self.unsent.push_back(job.input);
                    self.output_jobs.pop_front();
                }
                Err(ClientError::TryRequest(Request::Publish(back))) => {
                    job.payload = back.payload.to_vec();
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// rumqttc reports each output's packet id as it sends it, in the order of the requests.
    pub(super) fn on_output_sent(&mut self, outgoing: Outgoing) {
        match outgoing {
            Outgoing::Publish(pkid) if self.collided == Some(pkid) => self.collided = None,
            Outgoing::Publish(pkid) | Outgoing::AwaitAck(pkid) => {
                let Some(input) = self.unsent.pop_front() else {
                    tracing::warn!(pkid, "publish event for no output of this connection");
                    return;
                };
                self.inflight.entry(pkid).or_default().push_back(input);
                if matches!(outgoing, Outgoing::AwaitAck(_)) {
                    self.collided = Some(pkid);
                }
            }
            _ => {}
        }
    }

    /// The broker has output `pkid`; its input may now be done.
    pub(super) fn on_output_acked(&mut self, pkid: u16, shared: &Shared) {
        let Some(queue) = self.inflight.get_mut(&pkid) else {
            tracing::warn!(pkid, "PUBACK for no output in flight");
            return;
        };
        let input = queue.pop_front();
        if queue.is_empty() {
            self.inflight.remove(&pkid);
        }
        let Some(input) = input else { return };
        shared.emitted.fetch_add(1, Ordering::SeqCst);
        shared.instruments.events_out.inc();
        let index = input.checked_sub(self.first_seq).map(|i| i as usize);
        match index.and_then(|i| self.inputs.get_mut(i)) {
            Some(entry) => entry.pending_outputs = entry.pending_outputs.saturating_sub(1),
            None => tracing::warn!(pkid, input, "PUBACK for an output of an unknown input"),
        }
        self.complete_front(shared);
    }

    /// Acks, in receive order, every leading input whose outputs are all in the broker.
    pub(super) fn complete_front(&mut self, shared: &Shared) {
        while let Some(front) = self.inputs.front() {
            if front.pending_outputs > 0 || front.verdict == Verdict::Held {
                break;
            }
            let Some(input) = self.inputs.pop_front() else {
                break;
            };
            self.first_seq += 1;
            let (counter, instrument) = match input.verdict {
                Verdict::Rejected => (&shared.rejected, &shared.instruments.events_rejected),
                _ => (&shared.processed, &shared.instruments.events_in),
            };
            counter.fetch_add(1, Ordering::SeqCst);
            instrument.inc();
            if input.publish.qos != QoS::AtMostOnce {
                self.acks_queued += 1;
                self.input_jobs.push_back(InputJob::Ack(input.publish));
            }
        }
    }

    pub(super) fn begin_stop(&mut self) {
        tracing::debug!("stop requested: finishing in-flight inputs");
        self.stopping = true;
        self.drain_deadline = Some(Instant::now() + STOP_DRAIN_TIMEOUT);
    }

    /// While stopping: DISCONNECT once every processed input is acked on the wire.
    pub(super) fn check_drained(&mut self) {
        if !self.stopping || self.disconnect_queued {
            return;
        }
        let drained = self.inputs.iter().all(|i| i.verdict == Verdict::Held)
            && self.output_jobs.is_empty()
            && self.unsent.is_empty()
            && self.inflight.is_empty()
            && self.acks_written == self.acks_queued;
        if drained {
            self.queue_disconnect();
        }
    }

    pub(super) fn queue_disconnect(&mut self) {
        self.disconnect_queued = true;
        self.drain_deadline = None;
        self.input_jobs.push_back(InputJob::Disconnect);
    }
}
