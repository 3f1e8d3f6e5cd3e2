//! Prometheus metrics of every node kind, exposed on `GET /metrics` in the Prometheus text format
//! (0.0.4) through `prometheus-client`: `coordinator.rs` the seed's ten `varpulis_cluster_*`
//! metrics and ours, `worker.rs` the worker's `varpulis_worker_*`.

mod coordinator;
mod worker;

pub use coordinator::{CoordinatorMetrics, DetectionLayer};
pub use worker::{PipelineInstruments, WorkerMetrics};

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// Buckets for durations of cluster operations (deploys, migrations, sweeps with commits):
/// milliseconds on a quiet loopback cluster up to the seed's ~10 s failovers.
pub const OPERATION_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for time without a leader (GATING.md §3: election and failover buckets).
pub const ELECTION_BUCKETS_SECONDS: [f64; 14] = [
    0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// The registry in the Prometheus text format, as a response with its content type.
pub fn render(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_text::encode(&mut body, registry) {
        Ok(()) => ([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], body).into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}"),
        )
            .into_response(),
    }
}
