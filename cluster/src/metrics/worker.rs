//! A worker's metrics: per-pipeline events in, out and rejected, starts and stops, MQTT
//! reconnects (counters that outlive a pipeline's restarts), lease state and running pipelines
//! (gauges set at each scrape).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Name prefix of every worker metric.
pub const PREFIX: &str = "varpulis_worker";

/// Why a worker stopped a pipeline: no longer (or differently) assigned, its lease ran out, the
/// worker shuts down.
pub const STOP_REASONS: [&str; 3] = ["reconcile", "fence", "shutdown"];

/// A pipeline id (`group/pipeline`): bounded by what is deployed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StopLabel {
    pipeline: String,
    reason: &'static str,
}

/// The counters one running pipeline feeds (clones of the worker's, so they survive restarts).
/// The default is detached: counted, never exposed (tests that run a pipeline alone).
#[derive(Debug, Clone, Default)]
pub struct PipelineInstruments {
    /// Inputs the program accepted (acked).
    pub events_in: Counter,
    /// Outputs the broker acknowledged.
    pub events_out: Counter,
    /// Inputs refused (bad JSON, missing fields, an output too large), acked and dropped.
    pub events_rejected: Counter,
    /// Connection generations that failed and were retried.
    pub mqtt_reconnects: Counter,
}

#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    events_in: Family<PipelineLabel, Counter>,
    events_out: Family<PipelineLabel, Counter>,
    events_rejected: Family<PipelineLabel, Counter>,
    mqtt_reconnects: Family<PipelineLabel, Counter>,
    starts: Family<PipelineLabel, Counter>,
    stops: Family<StopLabel, Counter>,
    pipelines_running: Gauge,
    lease_valid: Gauge,
    lease_remaining_seconds: Gauge<f64, AtomicU64>,
    linked: Gauge,
    start_time: Gauge<f64, AtomicU64>,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = WorkerMetrics {
            registry: Registry::default(),
            events_in: Family::default(),
            events_out: Family::default(),
            events_rejected: Family::default(),
            mqtt_reconnects: Family::default(),
            starts: Family::default(),
            stops: Family::default(),
            pipelines_running: Gauge::default(),
            lease_valid: Gauge::default(),
            lease_remaining_seconds: Gauge::default(),
            linked: Gauge::default(),
            start_time: Gauge::default(),
        };
        m.start_time.set(crate::events::now_ms() as f64 / 1000.0);
        let r = &mut registry;
        r.register(
            "pipeline_events_in",
            "Inputs a pipeline accepted, per pipeline",
            m.events_in.clone(),
        );
        r.register(
            "pipeline_events_out",
            "Outputs a pipeline published and the broker acknowledged, per pipeline",
            m.events_out.clone(),
        );
        r.register(
            "pipeline_events_rejected",
            "Inputs a pipeline refused (malformed or without its fields), per pipeline",
            m.events_rejected.clone(),
        );
        r.register(
            "pipeline_starts",
            "Pipeline starts on this worker, per pipeline",
            m.starts.clone(),
        );
        r.register(
            "pipeline_stops",
            "Pipeline stops on this worker, per pipeline and reason (reconcile, fence, shutdown)",
            m.stops.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "MQTT connection failures a pipeline recovered from by reconnecting, per pipeline",
            m.mqtt_reconnects.clone(),
        );
        r.register(
            "pipelines_running",
            "Pipelines running on this worker",
            m.pipelines_running.clone(),
        );
        r.register(
            "lease_valid",
            "1 while this worker holds a valid lease (it may run pipelines), else 0",
            m.lease_valid.clone(),
        );
        r.register(
            "lease_remaining_seconds",
            "Time left on the lease",
            m.lease_remaining_seconds.clone(),
        );
        r.register(
            "coordinator_linked",
            "1 while this worker holds a WebSocket link to a coordinator",
            m.linked.clone(),
        );
        r.register(
            "start_time_seconds",
            "When this worker process started (Unix time): a change means a restart",
            m.start_time.clone(),
        );
        WorkerMetrics { registry, ..m }
    }

    /// The counters a pipeline `id` feeds; created (at zero) when first asked.
    pub fn instruments(&self, id: &str) -> PipelineInstruments {
        let label = PipelineLabel {
            pipeline: id.to_string(),
        };
        PipelineInstruments {
            events_in: self.events_in.get_or_create_owned(&label),
            events_out: self.events_out.get_or_create_owned(&label),
            events_rejected: self.events_rejected.get_or_create_owned(&label),
            mqtt_reconnects: self.mqtt_reconnects.get_or_create_owned(&label),
        }
    }

    pub fn started(&self, id: &str) {
        self.starts
            .get_or_create(&PipelineLabel {
                pipeline: id.to_string(),
            })
            .inc();
        // Its stops exist from its first start, at zero, so a panel shows 0, not "no data".
        for reason in STOP_REASONS {
            let _ = self.stops.get_or_create(&StopLabel {
                pipeline: id.to_string(),
                reason,
            });
        }
    }

    pub fn stopped(&self, id: &str, reason: &'static str) {
        self.stops
            .get_or_create(&StopLabel {
                pipeline: id.to_string(),
                reason,
            })
            .inc();
    }

    pub fn render(
        &self,
        running: usize,
        lease_remaining: std::time::Duration,
        linked: bool,
    ) -> axum::response::Response {
        self.pipelines_running.set(running as i64);
        self.lease_valid.set(i64::from(!lease_remaining.is_zero()));
        self.lease_remaining_seconds
            .set(lease_remaining.as_secs_f64());
        self.linked.set(i64::from(linked));
        super::render(&self.registry)
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
